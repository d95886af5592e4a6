"""The guard's decisions equal the blocklist's intent; a bad blocklist refuses to start."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.guard import ActionBlocked, Guard, GuardConfigError
from auditor.guard.policy import MALFORMED, NOT_ALLOWED, IdentityPolicy
from tests.guard_support import AGENT, identity, s3_blocklist, write_blocklist

ROOT = Path(__file__).resolve().parents[1]

names = st.text(st.sampled_from("abcDEF:./-_*"), min_size=1, max_size=8)


def intent(entry: dict, permission: str) -> str:
    """The blocklist's meaning, read the slow way: scan every list, the strictest wins."""
    key = permission.lower()
    listed = {
        "deny": any(key == p.lower() for g in entry["deny"] for p in g["permissions"]),
        "require_approval": any(key == a["permission"].lower() for a in entry["require_approval"]),
        "allow": any(key == p.lower() for p in entry.get("allow", ())),
    }
    for decision in ("deny", "require_approval", "allow"):
        if listed[decision]:
            return decision
    patterns = {  # hand-written entries with * or ?: tried after every name, the strictest first
        "deny": [p for g in entry["deny"] for p in g["permissions"]],
        "require_approval": [a["permission"] for a in entry["require_approval"]],
        "allow": list(entry.get("allow", ())),
    }
    for decision, listed_names in patterns.items():
        if any(("*" in p or "?" in p) and fnmatch.fnmatchcase(key, p.lower()) for p in listed_names):
            return decision
    if "allow" not in entry:
        return "allow" if re.fullmatch(r"[A-Za-z0-9_.:/-]+", permission) else "deny"
    server = key.partition(".")[0]
    if "." in key:
        for decision in ("deny", "require_approval", "allow"):
            everything = {
                "deny": [p for g in entry["deny"] for p in g["permissions"]],
                "require_approval": [a["permission"] for a in entry["require_approval"]],
                "allow": entry.get("allow", []),
            }[decision]
            if any(p.lower() == f"{server}.(unlisted tools)" for p in everything):
                return decision
    return "deny"


@settings(max_examples=300, deadline=None)
@given(
    deny=st.lists(names, max_size=6),
    approval=st.lists(names, max_size=6),
    allow=st.one_of(st.none(), st.lists(names, max_size=6)),
    unlisted=st.sampled_from(["", "deny", "approval", "allow"]),
    probe=names,
    case=st.sampled_from(["same", "upper", "lower"]),
    pick=st.integers(0, 20),
)
def test_decision_equals_the_blocklists_intent(deny, approval, allow, unlisted, probe, case, pick) -> None:
    if unlisted and allow is not None:
        {"deny": deny, "approval": approval, "allow": allow}[unlisted].append("srv.(unlisted tools)")
    entry = identity("tools" if allow is not None else "aws", "id-1", "agent", deny, approval, allow)
    pool = [*deny, *approval, *(allow or []), probe, "srv.x", "srv.(unlisted tools)"]
    permission = pool[pick % len(pool)]
    permission = {"same": permission, "upper": permission.upper(), "lower": permission.lower()}[case]
    verdict = IdentityPolicy.from_entry(entry).decide(permission)
    assert verdict.decision == intent(entry, permission)
    if verdict.decision == "deny" and verdict.rule not in (NOT_ALLOWED, MALFORMED):
        assert verdict.rule == "test-destroy"


def test_the_bundled_fixture_blocklist_loads_and_enforces(tmp_path: Path) -> None:
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(ROOT / "fixtures/aws"), "--tools-manifest",
         str(ROOT / "fixtures/tools/agents.yaml"), "--out", str(out), "--quiet"],
        check=True, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    guard = Guard.from_blocklist(out / "blocklist.yaml", identity="deploy-agent")
    assert guard.decide("cloudformation:DeleteStackSet").decision == "deny"
    assert guard.decide("CLOUDFORMATION:deletestack").decision == "require_approval"
    assert guard.decide("cloudformation:DescribeStacks").decision == "allow"
    tools = Guard.from_blocklist(out / "blocklist.yaml", identity="billing-agent", provider="tools")
    assert tools.decide("billing.get_invoice").decision == "allow"
    assert tools.decide("billing.void_invoice").decision == "deny"
    assert tools.decide("postgres.drop_table").decision == "require_approval"  # via postgres.(unlisted tools)
    assert tools.decide("billing.never_heard_of").rule == NOT_ALLOWED
    with pytest.raises(GuardConfigError, match="matches 2 entries"):
        Guard.from_blocklist(out / "blocklist.yaml", identity="support-bot")  # an AWS role and a tools agent


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "blocklist not found"),
        ("identities: [\n", "not valid YAML"),
        ("", "not a valid blocklist"),
        ("version: 1\ngenerated_at: x\nidentities:\n  - provider: aws\n", "not a valid blocklist"),
        ("version: 2\ngenerated_at: '2026-01-01T00:00:00Z'\nidentities: []\n", "not a valid blocklist"),
        (
            "version: 1\ngenerated_at: '2026-01-01T00:00:00Z'\nidentities:\n  - {provider: aws, identity: a, name: a,"
            " deny: [{rule: r, severity: high, reason: x, permissions: s3:DeleteBucket}], require_approval: []}\n",
            "not a valid blocklist",
        ),
        ("\x00\x01binary", "not valid YAML"),
    ],
    ids=["missing", "truncated", "empty", "no-lists", "version", "mistyped-permissions", "binary"],
)
def test_a_bad_blocklist_refuses_to_start(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "blocklist.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(GuardConfigError, match=message) as caught:
        Guard.from_blocklist(path, identity="a")
    assert str(path) in caught.value.one_line() and "\n" not in caught.value.one_line()


def test_a_blocklist_cut_anywhere_refuses(tmp_path: Path) -> None:
    """Cut at a line break, YAML still parses and the schema still holds: a file that lost the approval
    gates at its end let those calls through. Every cut short of the whole file must refuse."""
    full = s3_blocklist(tmp_path / "full.yaml").read_text()
    whole = full.index("complete: true") + len("complete: true")  # then only line breaks follow
    breaks = [i + 1 for i, char in enumerate(full[:whole]) if char == "\n"]
    cuts = sorted({*breaks, *range(len(full) // 3, whole, 7)})
    assert len(breaks) > 10
    for cut in cuts:
        path = tmp_path / "cut.yaml"
        path.write_text(full[:cut])
        with pytest.raises(GuardConfigError):
            Guard.from_blocklist(path, identity=AGENT)
    path.write_text(full[:whole])
    assert Guard.from_blocklist(path, identity=AGENT).decide("s3:DeleteObject").decision == "require_approval"


def test_unknown_identity_is_loud(tmp_path: Path) -> None:
    path = s3_blocklist(tmp_path / "b.yaml")
    with pytest.raises(GuardConfigError, match="no identity 'nobody'") as caught:
        Guard.from_blocklist(path, identity="nobody")
    assert "s3-agent" in caught.value.one_line()
    with pytest.raises(GuardConfigError, match="of provider 'azure'"):
        Guard.from_blocklist(path, identity="s3-agent", provider="azure")


def test_duplicated_entries_are_ambiguous(tmp_path: Path) -> None:
    entry = identity("aws", AGENT, "s3-agent", deny=["s3:DeleteBucket"])
    path = write_blocklist(tmp_path / "b.yaml", entry, identity("aws", AGENT, "s3-agent"))
    with pytest.raises(GuardConfigError, match="matches 2 entries"):
        Guard.from_blocklist(path, identity=AGENT)


def test_huge_blocklist_decides_by_lookup(tmp_path: Path) -> None:
    deny = [f"svc{i}:Delete{i}" for i in range(50_000)]
    path = write_blocklist(tmp_path / "b.yaml", identity("aws", AGENT, "big", deny=deny, approval=["x:Put"]))
    guard = Guard.from_blocklist(path, identity="big")
    assert guard.decide("SVC49999:delete49999").decision == "deny"
    assert guard.decide("svc50000:Delete50000").decision == "allow"
    with pytest.raises(ActionBlocked) as caught:
        guard.check("svc7:Delete7")
    assert (caught.value.action, caught.value.rule) == ("svc7:Delete7", "test-destroy")


def test_a_call_needing_several_permissions_takes_the_strictest(tmp_path: Path) -> None:
    guard = Guard.from_blocklist(s3_blocklist(tmp_path / "b.yaml"), identity=AGENT)
    guard.check(["s3:GetObject", "s3:PutObject"])  # allowed
    guard.check([])  # a call that needs no permission
    with pytest.raises(ActionBlocked, match="s3:DeleteBucket"):
        guard.check(["s3:DeleteObject", "s3:DeleteBucket"])
    with pytest.raises(ActionBlocked, match="no approval queue"):
        guard.check(["s3:GetObject", "s3:DeleteObject"])


def test_a_hand_written_wildcard_entry_is_a_pattern() -> None:
    policy = IdentityPolicy.from_entry(identity("aws", "id-1", "agent", ["dynamodb:Delete*"], ["s3:Put?bject"]))
    assert policy.decide("dynamodb:DeleteItem").decision == "deny"
    assert policy.decide("DYNAMODB:deletetable").decision == "deny"
    assert policy.decide("s3:PutObject").decision == "require_approval"
    assert policy.decide("dynamodb:GetItem").decision == "allow"


@pytest.mark.parametrize(
    "name",
    [" s3:DeleteBucket", "s3:DeleteBucket\n", "s3:Delete\u200bBucket", "s3:D\u0435leteBucket", "s3:Delete*", "*"],
)
def test_a_name_no_cloud_spells_is_blocked_for_a_deny_list_identity(name: str) -> None:
    """A deny list lets through what it cannot spell: a model-chosen name passed to check() must not."""
    verdict = IdentityPolicy.from_entry(identity("aws", "id-1", "agent", ["s3:DeleteBucket"], [])).decide(name)
    assert (verdict.decision, verdict.rule) == ("deny", MALFORMED)


@pytest.mark.parametrize("name", [None, "", "  ", 5])
def test_no_identity_is_a_config_error(tmp_path: Path, name) -> None:
    with pytest.raises(GuardConfigError, match="names no identity"):
        Guard.from_blocklist(s3_blocklist(tmp_path / "b.yaml"), identity=name)


@pytest.mark.parametrize("kind", ["corrupt", "bad-url"])
def test_an_approval_queue_that_cannot_be_opened_blocks_and_logs(tmp_path: Path, kind: str) -> None:
    if kind == "corrupt":
        queue = tmp_path / "approvals.db"
        queue.write_bytes(b"not a database" * 100)
    else:
        queue = "ftp://approvals.example/queue"
    log = tmp_path / "guard.jsonl"
    guard = Guard.from_blocklist(s3_blocklist(tmp_path / "b.yaml"), identity=AGENT, queue=queue, log=log)
    with pytest.raises(ActionBlocked, match="approval queue failed"):
        guard.check("s3:DeleteObject", resource="arn:aws:s3:::b/k")
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["decision"] == "blocked" and "approval queue failed" in record["reason"]
