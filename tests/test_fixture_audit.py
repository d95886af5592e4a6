"""The bundled demo account: facts about its agents that any correct audit must report."""

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from conftest import audit

from auditor.aws_policy import allows
from auditor.connectors.aws.files import AwsFiles
from auditor.emit.base import all_policies

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aws"
AFTER_THE_FIXTURE = datetime(2026, 11, 21, tzinfo=UTC)  # its newest event is 2026-11-20T23:59:46Z


@pytest.fixture(scope="module")
def result():
    return audit(AwsFiles.from_dir(FIXTURE), now=AFTER_THE_FIXTURE)


def findings(result, name):
    return result.findings.filter(pl.col("name") == name)


def states(result, name):
    perms = result.permissions.filter(pl.col("name") == name)
    return dict(zip(perms["action"], perms["state"], strict=True))


def test_agents_are_the_tagged_identities(result):
    agents = set(result.data.identities.filter(pl.col("is_agent"))["name"])
    assert agents == {"support-bot", "doc-summarizer", "deploy-agent", "invoice-agent", "data-agent", "release-agent"}


def test_support_bot_is_an_admin_using_two_tables(result):
    kinds = set(findings(result, "support-bot")["kind"])
    assert {"admin-grant", "unused-destructive"} <= kinds
    assert "privilege-escalation" not in kinds  # an administrator has nothing left to gain: the admin finding says it
    used = {a for a, s in states(result, "support-bot").items() if s == "used"}
    assert used == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:DescribeTable"}
    (policy,) = [p for p in all_policies(result) if p.provider == "aws" and p.name == "support-bot"]
    assert policy.folder == "policies/aws/123456789012/role/support-bot"
    names = [f.path.rsplit("/", 1)[-1] for f in policy.files]
    assert names[0] == "policy.json" and "policy.2.json" not in names  # one least-privilege document
    documents = [json.loads(f.content) for f in policy.files if f.path.endswith("/policy.json")]
    orders = "arn:aws:dynamodb:us-east-1:123456789012:table/Orders"
    assert allows(documents, "dynamodb:GetItem", orders)
    assert not allows(documents, "dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/Payroll")
    assert not allows(documents, "dynamodb:DeleteTable", orders)


def test_invoice_agent_is_dormant(result):
    assert "dormant-identity" in set(findings(result, "invoice-agent")["kind"])


def test_deploy_agent_deletes_stacks_behind_an_approval_gate(result):
    used_destructive = findings(result, "deploy-agent").filter(pl.col("kind") == "used-destructive")
    assert "cloudformation:DeleteStack" in {a for actions in used_destructive["actions"] for a in actions}
    passrole = result.permissions.filter((pl.col("name") == "deploy-agent") & (pl.col("action") == "iam:PassRole"))
    assert passrole["state"].to_list() == ["used"] and passrole["evidence"].to_list() == [["implied"]]


def test_data_agent_boundary_and_deny_limit_the_grant(result):
    data = states(result, "data-agent")
    assert "glue:DeleteTable" not in data or data["glue:DeleteTable"] != "unused"  # boundary removes it
    assert data.get("glue:CreateTable") == "denied"
    assert "s3:DeleteObject" not in {a for a, s in data.items() if s == "unused"}
    assert "denied-attempt" in set(findings(result, "data-agent")["kind"])


def test_the_fixture_window_is_fully_covered(result):
    (row,) = result.data.coverage.iter_rows(named=True)
    assert row["account"] == "123456789012" and row["days_with_events"] >= 30
    assert not any("no events for" in r for r in result.data.observability["reason"])
    assert result.data.gaps.is_empty()


def test_the_window_ends_at_the_newest_event(result):
    window = result.window("aws")
    assert window.end == datetime(2026, 11, 20, 23, 59, 46, tzinfo=UTC) and window.days == 30
    assert "newest CloudTrail event" in window.basis and result.window("gcp") is None
