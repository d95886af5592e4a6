"""The blocklist enforced by AWS: deny.json denies exactly the identity's ``deny`` permissions (with
AdministratorAccess attached too), and boundary.json allows every used permission."""

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.aws_policy import evaluate
from auditor.catalog import aws_catalog
from auditor.emit.aws_enforce import MANAGED_LIMIT, compact

ROOT = Path(__file__).parents[1]
CATALOG = aws_catalog()
SERVICES = ["s3", "iam", "lambda", "cloudformation", "ec2", "dynamodb"]
ADMIN = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def _actions(service: str) -> list[str]:
    return sorted(CATALOG.actions_of_service(service))


@settings(max_examples=120, deadline=None)
@given(st.sampled_from(SERVICES).flatmap(lambda s: st.sets(st.sampled_from(_actions(s)), min_size=1)))
def test_compacted_patterns_match_exactly_the_denied_actions(denied):
    patterns = compact(denied, CATALOG)
    assert CATALOG.expand(patterns) == frozenset(denied)
    assert len(patterns) <= len(denied)


def test_a_whole_service_is_one_pattern_and_unknown_names_stay_as_written():
    assert compact(_actions("lambda"), CATALOG) == ["lambda:*"]
    assert compact(["s3:NoSuchAction"], CATALOG) == ["s3:NoSuchAction"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    out = tmp_path_factory.mktemp("enforce") / "out"
    assert run_cli("audit", "--aws-dir", ROOT / "fixtures/aws", "--out", out, "-q").code == 0
    return out


def _deny_documents(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("deny*.json"))]


def test_deny_policies_deny_exactly_the_blocklist_deny_permissions(audited):
    table = pl.read_parquet(audited / "permissions.parquet").filter(pl.col("provider") == "aws")
    blocklist = {i["identity"]: i for i in _blocklist(audited)["identities"] if i["provider"] == "aws"}
    index = {e["identity"]: e for e in json.loads((audited / "policies" / "index.json").read_text())}
    checked = 0
    for identity, entry in blocklist.items():
        denied = {p for group in entry["deny"] for p in group["permissions"]}
        documents = _deny_documents(audited / index[identity]["folder"])
        if not denied:
            assert not documents
            continue
        assert all(len(json.dumps(d, separators=(",", ":"))) <= MANAGED_LIMIT for d in documents[1:])
        for action in table.filter(pl.col("identity") == identity)["action"].to_list():
            decision = evaluate([ADMIN, *documents], action)
            assert (decision == "explicit-deny") == (action in denied), (identity, action)
        checked += 1
    assert checked >= 3


def test_the_boundary_allows_every_used_permission_and_its_commands_are_in_the_plan(audited):
    table = pl.read_parquet(audited / "permissions.parquet")
    index = json.loads((audited / "policies" / "index.json").read_text())
    with_boundary = 0
    for entry in (e for e in index if e["provider"] == "aws"):
        boundary = audited / entry["folder"] / "boundary.json"
        if not boundary.exists():
            continue
        with_boundary += 1
        document = json.loads(boundary.read_text())
        used = table.filter((pl.col("identity") == entry["identity"]) & (pl.col("state") == "used"))
        for action, granted, seen in used.select("action", "granted", "resources_seen").iter_rows():
            for resource in (seen or ["*"]) if granted else []:  # on every resource it was used on
                assert evaluate([document], action, resource) == "allow", (entry["name"], action, resource)
        assert any(
            "permissions-boundary" in c and "--permissions-boundary=arn:aws:iam::" in c for c in entry["enforce"]
        )
        assert any(c.startswith("aws iam create-policy") and "boundary.json" in c for c in entry["enforce"])
    assert with_boundary >= 3


def test_a_large_deny_list_becomes_managed_policies_within_the_size_limit(audited):
    index = {e["name"]: e for e in json.loads((audited / "policies" / "index.json").read_text())}
    admin = index["support-bot"]
    documents = _deny_documents(audited / admin["folder"])
    assert len(documents) > 1 and all(len(json.dumps(d, separators=(",", ":"))) <= MANAGED_LIMIT for d in documents)
    attaches = [c for c in admin["enforce"] if c.startswith("aws iam attach-role-policy")]
    assert len(attaches) == len(documents) and admin["enforce_note"]


def _blocklist(out: Path) -> dict:
    import yaml

    return yaml.safe_load((out / "blocklist.yaml").read_text())


def test_the_scp_denies_only_what_every_tagged_agent_may_lose(audited):
    index = json.loads((audited / "policies" / "index.json").read_text())
    (scp,) = [e for e in index if e["name"] == "agents-deny (SCP)"]
    documents = [json.loads((audited / path).read_text()) for path in scp["files"]]
    assert all(len((audited / path).read_text().strip()) <= 5120 for path in scp["files"])
    assert all(
        d["Statement"][0]["Condition"] == {"StringEquals": {"aws:PrincipalTag/agent": ["true"]}} for d in documents
    )
    assert len(scp["enforce"]) == len(documents) and all(
        "create-policy" in c and "attach-policy" in c for c in scp["enforce"]
    )
    table = pl.read_parquet(audited / "permissions.parquet").filter((pl.col("provider") == "aws") & pl.col("granted"))
    blocklist = {i["identity"]: i for i in _blocklist(audited)["identities"] if i["provider"] == "aws"}
    denied_somewhere = {p for i in blocklist.values() for g in i["deny"] for p in g["permissions"]}
    scp_denied = set()
    for identity, action in table.select("identity", "action").iter_rows():
        mine = {p for g in blocklist[identity]["deny"] for p in g["permissions"]}
        if evaluate([ADMIN, *documents], action) == "explicit-deny":
            assert action in mine, (identity, action)  # never a permission this agent keeps
            scp_denied.add(action)
    assert scp_denied and scp_denied <= denied_somewhere


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_a_pattern_takes_in_a_document_what_json_gives_it(text):
    from auditor.emit.aws_enforce import _json_length

    assert _json_length(text) == len(json.dumps(text))
