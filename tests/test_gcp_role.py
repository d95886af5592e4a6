"""The custom role emitter: exactly the used permissions (plus listed unobservable ones), Google's
limits, and a bindings plan that applies to the exported policy."""

from __future__ import annotations

import json
import shlex
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from conftest import audit
from gcp_builders import account, binding, entry, policy, role, sa, write_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.connectors.gcp.files import GcpFiles
from auditor.emit.base import IdentityPolicies, all_policies
from auditor.emit.gcp_role import (
    MAX_DESCRIPTION_BYTES,
    MAX_PERMISSIONS,
    MAX_ROLE_BYTES,
    MAX_TITLE_BYTES,
    PLAN_SCHEMA,
    ROLE_ID,
    apply_bindings_plan,
    predefined_alternative,
    role_id,
    split_roles,
)

BOT = sa("bot")
END = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
POOL = [
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.stop",
    "compute.instances.delete",
    "compute.disks.createSnapshot",
    "storage.objects.get",
    "storage.objects.list",
    "storage.objects.create",
    "storage.objects.delete",
    "storage.buckets.get",
    "bigquery.jobs.create",
    "bigquery.tables.getData",
    "run.services.update",
    "iam.serviceAccounts.actAs",
    "pubsub.topics.publish",
    "secretmanager.versions.access",
]


def run_audit(root: Path, drop: bool = False) -> tuple[Any, dict[str, IdentityPolicies]]:
    """Audit a --gcp-dir folder; the least-privilege outputs by identity (in memory, as written)."""
    result = audit(GcpFiles.from_dir(root), until=END, now=END, drop_unobservable=drop)
    return result, {p.identity: p for p in all_policies(result)}


def documents(entry: IdentityPolicies, stem: str = "role") -> list[dict[str, Any]]:
    """The custom role documents of one identity (``role*.yaml``; ``exception*.yaml`` for a dormant one)."""
    return [yaml.safe_load(f.content) for f in entry.files if f.path.rsplit("/", 1)[1].startswith(stem + ".")]


FIXTURE_GCP = Path(__file__).parents[1] / "fixtures" / "gcp"


def run_audit_fixture(root: Path) -> tuple[Any, dict[str, IdentityPolicies]]:
    result = audit(GcpFiles.from_dir(root), now=datetime(2026, 11, 21, tzinfo=UTC))
    return result, {p.identity: p for p in all_policies(result)}


def plan_of(entry: IdentityPolicies) -> dict[str, Any]:
    (plan,) = [json.loads(f.content) for f in entry.files if f.path.endswith("/bindings.json")]
    return plan


def test_role_ids_are_valid_unique_and_stable():
    ids = {role_id(sa(f"agent-{i}"), "p1") for i in range(50)}
    assert len(ids) == 50 and all(ROLE_ID.match(i) for i in ids)
    long = role_id("a" * 200 + "@p1.iam.gserviceaccount.com", "p1")
    assert ROLE_ID.match(long) and role_id("a" * 200 + "@p1.iam.gserviceaccount.com", "p1") == long
    assert ROLE_ID.match(role_id("principal://iam.googleapis.com/projects/1/locations/global/x/subject/s-1", "p1"))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC", min_size=1, max_size=40),
        min_size=0,
        max_size=8000,
        unique=True,
    )
)
def test_split_roles_keeps_every_permission_within_the_limits(names):
    permissions = [f"svc.{n}.get" for n in names]
    roles = split_roles("auditor_x_abcdef", "t" * 300, "d" * 1000, permissions)
    assert sorted(p for r in roles for p in r.permissions) == sorted(permissions)
    assert len({r.role_id for r in roles}) == len(roles)
    for r in roles:
        assert ROLE_ID.match(r.role_id)
        assert len(r.permissions) <= MAX_PERMISSIONS and r.size() <= MAX_ROLE_BYTES
        assert len(r.title.encode()) <= MAX_TITLE_BYTES and len(r.description.encode()) <= MAX_DESCRIPTION_BYTES
        if len(roles) > 1:
            assert r.title.endswith(f"of {len(roles)})")


def test_predefined_alternative_prefers_one_role_then_two():
    roles = {
        "roles/editor": ["a.b.get", "a.b.list", "c.d.create", "x.y.z"],
        "roles/a.viewer": ["a.b.get", "a.b.list"],
        "roles/a.admin": ["a.b.get", "a.b.list", "a.b.delete", "a.b.update"],
        "roles/c.creator": ["c.d.create"],
        "roles/c.serviceAgent": ["a.b.get", "c.d.create"],
        "projects/p1/roles/custom": ["a.b.get", "c.d.create"],
    }
    assert predefined_alternative({"a.b.get"}, roles, 10) == (("roles/a.viewer",), 1)
    assert predefined_alternative({"a.b.get", "c.d.create"}, roles, 10) == (("roles/a.viewer", "roles/c.creator"), 1)
    assert predefined_alternative({"a.b.get", "c.d.create"}, roles, 3) is None  # not smaller than the grant
    assert predefined_alternative({"q.r.s"}, roles, 10) is None
    assert predefined_alternative(set(), roles, 10) is None


def test_bindings_plan_applies_to_the_exported_policy(tmp_path):
    other = sa("other")
    project = policy(
        binding("roles/editor", f"serviceAccount:{other}", f"serviceAccount:{BOT}"),
        binding("roles/run.admin", f"serviceAccount:{BOT}"),
        binding("roles/viewer", "group:g@x.com"),
    )
    roles = [
        role("roles/editor", *POOL),
        role("roles/run.admin", "run.services.update", "run.services.get"),
        role("roles/viewer", "compute.instances.get"),
    ]
    entries = [entry(BOT, "2026-11-20T10:00:00Z", [("compute.instances.stop", True)])]
    entries += [entry(other, f"2026-11-{d:02d}T10:00:00Z", [("compute.instances.get", True)]) for d in range(1, 31)]
    root = write_snapshot(tmp_path / "in", project, roles, entries, [account(BOT)])
    _, index = run_audit(root, drop=True)
    plan = plan_of(index[BOT])
    assert (plan["schema"], plan["resource"], plan["member"]) == (PLAN_SCHEMA, "projects/p1", f"serviceAccount:{BOT}")
    assert plan["remove"] == [
        {"role": "roles/editor", "condition": None},
        {"role": "roles/run.admin", "condition": None},
    ]
    after = apply_bindings_plan(project, plan)
    members = {b["role"]: b["members"] for b in after["bindings"]}
    assert members["roles/editor"] == [f"serviceAccount:{other}"]
    assert members["roles/viewer"] == ["group:g@x.com"]
    assert "roles/run.admin" not in members  # the agent was its only member: the binding goes
    ((custom_role, custom_members),) = [(r, m) for r, m in members.items() if r.startswith("projects/p1/roles/")]
    assert custom_members == [f"serviceAccount:{BOT}"]
    assert apply_bindings_plan(after, plan) == after  # applying twice changes nothing
    (created,) = documents(index[BOT])
    assert created["includedPermissions"] == ["compute.instances.stop"] and created["stage"] == "GA"
    apply = index[BOT].apply
    assert any(c.startswith("gcloud iam roles create " + custom_role.rsplit("/", 1)[1]) for c in apply)
    assert (
        f"gcloud projects remove-iam-policy-binding p1 --member=serviceAccount:{BOT} --role=roles/editor "
        "--condition=None" in apply
    )
    assert (
        f"gcloud projects add-iam-policy-binding p1 --member=serviceAccount:{BOT} --role={custom_role} "
        "--condition=None" in apply
    )


def test_plans_of_one_audit_apply_in_any_order(tmp_path):
    """Keyed by role + member, not array positions: each plan applies to the same exported policy on its own."""
    a, b = sa("a"), sa("b")
    project = policy(binding("roles/editor", f"serviceAccount:{a}", f"serviceAccount:{b}", "user:h@x.com"))
    roles = [role("roles/editor", *POOL)]
    entries = [entry(a, f"2026-11-{d:02d}T10:00:00Z", [("compute.instances.stop", True)]) for d in range(1, 31)]
    entries += [entry(b, f"2026-11-{d:02d}T11:00:00Z", [("storage.objects.get", True)]) for d in range(1, 31)]
    root = write_snapshot(tmp_path / "in", project, roles, entries, [account(a), account(b)])
    _, index = run_audit(root, drop=True)
    first, second = plan_of(index[a]), plan_of(index[b])
    one_way = apply_bindings_plan(apply_bindings_plan(project, first), second)
    other_way = apply_bindings_plan(apply_bindings_plan(project, second), first)
    as_sets = lambda doc: {(x["role"], frozenset(x["members"])) for x in doc["bindings"]}  # noqa: E731
    assert as_sets(one_way) == as_sets(other_way)
    members = {r: set(m) for r, m in as_sets(one_way)}
    assert members["roles/editor"] == {"user:h@x.com"}
    assert sorted(len(m) for r, m in members.items() if r != "roles/editor") == [1, 1]


ANY = object()


def run_gcloud(document: dict[str, Any], entry: IdentityPolicies) -> dict[str, Any]:
    """What the project binding commands of ``entry.apply`` do to ``document``, one command at a time (as
    ``gcloud projects add-/remove-iam-policy-binding`` do)."""
    files = {f.path: f.content for f in entry.files}
    bindings = [dict(b, members=list(b["members"])) for b in document.get("bindings", [])]
    key = lambda b: json.dumps(b.get("condition"), sort_keys=True)  # noqa: E731
    for command in entry.apply:
        words = shlex.split(command)
        if words[:2] != ["gcloud", "projects"] or words[2] not in (
            "add-iam-policy-binding",
            "remove-iam-policy-binding",
        ):
            continue
        flags = dict(w[2:].split("=", 1) for w in words[4:] if w.startswith("--") and "=" in w)
        if "--all" in words:
            condition: Any = ANY
        elif flags.get("condition") == "None":
            condition = None
        else:
            condition = yaml.safe_load(files[flags["condition-from-file"]])
        wanted = "" if condition is ANY else json.dumps(condition, sort_keys=True)
        if words[2] == "add-iam-policy-binding":
            target = next((b for b in bindings if b["role"] == flags["role"] and key(b) == wanted), None)
            if target is None:
                target = {"role": flags["role"], "members": [], **({"condition": condition} if condition else {})}
                bindings.append(target)
            if flags["member"] not in target["members"]:
                target["members"].append(flags["member"])
        else:
            for b in bindings:
                if b["role"] == flags["role"] and (condition is ANY or key(b) == wanted):
                    b["members"] = [m for m in b["members"] if m != flags["member"]]
            bindings = [b for b in bindings if b["members"]]
    return {**document, "bindings": bindings}


def binding_set(document: dict[str, Any]) -> set[tuple[str, str, frozenset[str]]]:
    return {
        (b["role"], json.dumps(b.get("condition"), sort_keys=True), frozenset(b["members"]))
        for b in document["bindings"]
    }


def test_the_gcloud_commands_do_what_the_bindings_plan_does():
    root = FIXTURE_GCP
    _, index = run_audit_fixture(root)
    exported = json.loads((root / "policies" / "projects" / "acme-agents-prod.json").read_text())
    for mine in index.values():
        assert binding_set(run_gcloud(exported, mine)) == binding_set(apply_bindings_plan(exported, plan_of(mine)))


def rerun_snapshots(tmp_path: Path) -> tuple[dict[str, Any], IdentityPolicies]:
    """A second month: the snapshot holds the custom role the first run created, bound to the agent."""
    entries = [entry(BOT, f"2026-11-{d:02d}T10:00:00Z", [("compute.instances.stop", True)]) for d in range(1, 31)]
    first_root = write_snapshot(
        tmp_path / "first",
        policy(binding("roles/x", f"serviceAccount:{BOT}")),
        [role("roles/x", *POOL)],
        entries,
        [account(BOT)],
    )
    _, first = run_audit(first_root)
    created = next(c for c in first[BOT].apply if c.startswith("gcloud iam roles create "))
    role_name = created.split()[4]
    ours = {**role(f"projects/p1/roles/{role_name}", "compute.instances.stop"), "etag": "BwYourEtag="}
    second_policy = policy(binding(f"projects/p1/roles/{role_name}", f"serviceAccount:{BOT}"))
    second_root = write_snapshot(tmp_path / "second", second_policy, [ours], entries, [account(BOT)])
    _, second = run_audit(second_root)
    return second_policy, second[BOT]


def test_a_reruns_gcloud_commands_keep_the_role_they_update(tmp_path):
    exported, entry = rerun_snapshots(tmp_path)
    assert binding_set(run_gcloud(exported, entry)) == binding_set(apply_bindings_plan(exported, plan_of(entry)))


def test_a_rerun_updates_the_role_a_previous_run_created(tmp_path):
    exported, entry = rerun_snapshots(tmp_path)
    role_name = exported["bindings"][0]["role"].rsplit("/", 1)[1]
    assert any(c.startswith(f"gcloud iam roles update {role_name} --project=p1 ") for c in entry.apply)
    assert not any(c.startswith("gcloud iam roles create") for c in entry.apply)
    (document,) = documents(entry)
    assert document["etag"] == "BwYourEtag=" and document["includedPermissions"] == ["compute.instances.stop"]
    assert binding_set(apply_bindings_plan(exported, plan_of(entry))) == binding_set(exported)  # the plan keeps it


grants = st.lists(st.sets(st.sampled_from(POOL), min_size=1, max_size=8), min_size=1, max_size=3)
calls = st.lists(
    st.tuples(
        st.sampled_from(POOL), st.integers(min_value=-3, max_value=29), st.sampled_from([True, True, False, None])
    ),
    max_size=20,
)
audit_logs = st.sampled_from(
    [
        (),
        (("storage.googleapis.com", "DATA_READ", ()),),
        (("allServices", "ADMIN_READ", ()), ("allServices", "DATA_READ", ()), ("allServices", "DATA_WRITE", ())),
    ]
)


@settings(max_examples=32, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(grants, calls), min_size=1, max_size=4), audit_logs, st.booleans())
def test_emitted_role_holds_exactly_the_used_permissions_plus_listed_unobservable(bots, audit, drop):
    """One project, one to four agents (each with its own roles and calls), one audit."""
    names = [sa(f"bot{b}") for b in range(len(bots))]
    definitions = {
        name: [role(f"roles/b{b}r{i}", *perms) for i, perms in enumerate(roles_granted)]
        for b, (name, (roles_granted, _)) in enumerate(zip(names, bots, strict=True))
    }
    bindings = [binding(d["name"], f"serviceAccount:{name}") for name in names for d in definitions[name]]
    project = policy(*bindings, audit=audit)
    entries = [
        entry(sa("heartbeat"), f"2026-11-{d:02d}T00:30:00Z", [("compute.zones.list", True)]) for d in range(1, 31)
    ]
    used: dict[str, set[str]] = {name: set() for name in names}
    for name, (roles_granted, events) in zip(names, bots, strict=True):
        granted = {p for perms in roles_granted for p in perms}
        for permission, days_before, outcome in events:
            when = datetime.fromtimestamp(END.timestamp() - days_before * 86400 - 3600, UTC)
            entries.append(entry(name, when.strftime("%Y-%m-%dT%H:%M:%SZ"), [(permission, outcome)]))
            if outcome is True and days_before >= 0 and permission in granted:
                used[name].add(permission)
    every_role = [d for name in names for d in definitions[name]]
    with tempfile.TemporaryDirectory() as tmp:
        root = write_snapshot(Path(tmp) / "in", project, every_role, entries, [account(n) for n in names])
        _, index = run_audit(root, drop)
    for name, (roles_granted, _) in zip(names, bots, strict=True):
        check_bot(index[name], used[name], {p for perms in roles_granted for p in perms}, drop)


def check_bot(mine: IdentityPolicies, used: set[str], granted: set[str], drop: bool) -> None:
    applied = {p for doc in documents(mine) for p in doc["includedPermissions"]}
    exception = {p for doc in documents(mine, "exception") for p in doc["includedPermissions"]}
    listed = {k["permission"] for k in mine.kept_unobservable}
    assert used <= applied
    assert applied - used <= listed
    assert not (listed and drop)
    assert listed <= granted - used
    if mine.dormant:  # no activity at all: the plan removes every binding; the exception keeps what logs miss
        assert not used and not applied and exception <= listed
        assert plan_of(mine)["add"] == []
    else:
        assert not exception
    for doc in documents(mine) + documents(mine, "exception"):
        assert set(doc) == {"title", "description", "stage", "includedPermissions"}
        assert not any("*" in p for p in doc["includedPermissions"])
        size = len(doc["title"].encode()) + len(doc["description"].encode()) + sum(map(len, doc["includedPermissions"]))
        assert len(doc["includedPermissions"]) <= MAX_PERMISSIONS and size <= MAX_ROLE_BYTES
