"""The custom role emitter: exactly the used permissions (plus listed unobservable ones), Google's
limits, and a bindings plan that applies to the exported policy."""

from __future__ import annotations

import copy
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from gcp_builders import account, binding, entry, policy, role, sa, write_snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.audit import AuditOptions, analyze, gather
from auditor.connectors.base import AuditRequest
from auditor.connectors.gcp.files import GcpFiles
from auditor.emit.gcp_role import (
    MAX_DESCRIPTION_BYTES,
    MAX_PERMISSIONS,
    MAX_ROLE_BYTES,
    MAX_TITLE_BYTES,
    ROLE_ID,
    predefined_alternative,
    role_id,
    split_roles,
)
from auditor.emit.write import write_outputs
from auditor.ruleset import load_rules
from auditor.selection import AgentSelector

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
RULES = load_rules()


def apply_patch(document: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 test / remove / add (what the bindings plan uses)."""
    doc = copy.deepcopy(document)
    for op in patch:
        *parents, last = op["path"].lstrip("/").split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if op["op"] == "test":
            assert target[last] == op["value"], op
        elif op["op"] == "remove":
            del target[int(last) if isinstance(target, list) else last]
        elif op["op"] == "add":
            assert last == "-"
            target.append(op["value"])
    return doc


def run_audit(root: Path, out: Path, drop: bool = False):
    request = AuditRequest(days=30, until=END, selector=AgentSelector(), rule_dirs=RULES.dirs, workers=1)
    result = analyze(gather([GcpFiles.from_dir(root)], request), RULES, AuditOptions(drop_unobservable=drop))
    write_outputs(result, out)
    index = {p["identity"]: p for p in json.loads((out / "policies" / "index.json").read_text())}
    return result, index


def role_files(out: Path, index: dict[str, Any], identity: str) -> list[dict[str, Any]]:
    return [yaml.safe_load((out / f).read_text()) for f in index[identity]["files"] if f.endswith(".role.yaml")]


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
    _, index = run_audit(root, tmp_path / "out", drop=True)
    plan = index[BOT]
    patch = json.loads((tmp_path / "out" / plan["files"][-1]).read_text())
    after = apply_patch(project, patch)
    members = {b["role"]: b["members"] for b in after["bindings"]}
    assert members["roles/editor"] == [f"serviceAccount:{other}"]
    assert "roles/run.admin" not in members  # the agent was its only member: the binding goes
    ((custom_role, custom_members),) = [(r, m) for r, m in members.items() if r.startswith("projects/p1/roles/")]
    assert custom_members == [f"serviceAccount:{BOT}"]
    (created,) = role_files(tmp_path / "out", index, BOT)
    assert created["includedPermissions"] == ["compute.instances.stop"] and created["stage"] == "GA"
    assert any(c.startswith("gcloud iam roles create " + custom_role.rsplit("/", 1)[1]) for c in plan["apply"])
    assert (
        f"gcloud projects remove-iam-policy-binding p1 --member=serviceAccount:{BOT} --role=roles/editor "
        "--condition=None" in plan["apply"]
    )
    assert apply_patch(project, patch[:1]) == project  # the etag guard passes on the exported policy


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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grants, calls, audit_logs, st.booleans())
def test_emitted_role_holds_exactly_the_used_permissions_plus_listed_unobservable(roles_granted, events, audit, drop):
    definitions = [role(f"roles/r{i}", *perms) for i, perms in enumerate(roles_granted)]
    granted = {p for perms in roles_granted for p in perms}
    project = policy(*(binding(d["name"], f"serviceAccount:{BOT}") for d in definitions), audit=audit)
    entries = [
        entry(sa("heartbeat"), f"2026-11-{d:02d}T00:30:00Z", [("compute.zones.list", True)]) for d in range(1, 31)
    ]
    used = set()
    for permission, days_before, outcome in events:
        when = datetime.fromtimestamp(END.timestamp() - days_before * 86400 - 3600, UTC)
        entries.append(entry(BOT, when.strftime("%Y-%m-%dT%H:%M:%SZ"), [(permission, outcome)]))
        if outcome is True and days_before >= 0 and permission in granted:
            used.add(permission)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_snapshot(Path(tmp) / "in", project, definitions, entries, [account(BOT)])
        _, index = run_audit(root, Path(tmp) / "out", drop)
        emitted = role_files(Path(tmp) / "out", index, BOT)
    in_role = {p for doc in emitted for p in doc["includedPermissions"]}
    listed = {k["permission"] for k in index[BOT]["kept_unobservable"]}
    assert used <= in_role
    assert in_role - used <= listed
    assert not (listed and drop)
    assert listed <= granted - used
    for doc in emitted:
        assert set(doc) == {"title", "description", "stage", "includedPermissions"}
        assert not any("*" in p for p in doc["includedPermissions"])
        size = len(doc["title"].encode()) + len(doc["description"].encode()) + sum(map(len, doc["includedPermissions"]))
        assert len(doc["includedPermissions"]) <= MAX_PERMISSIONS and size <= MAX_ROLE_BYTES
