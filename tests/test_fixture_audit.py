"""The bundled demo account: facts about its agents that any correct audit must report."""

import json
from pathlib import Path

import polars as pl
import pytest

from auditor.audit import AuditOptions, analyze, gather
from auditor.aws_policy import allows
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.base import AuditRequest
from auditor.emit.policies import aws_policies
from auditor.ruleset import load_rules
from auditor.selection import AgentSelector

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aws"


@pytest.fixture(scope="module")
def result():
    rules = load_rules()
    request = AuditRequest(days=30, until=None, selector=AgentSelector(), rule_dirs=rules.dirs)
    return analyze(gather([AwsFiles.from_dir(FIXTURE)], request), rules, AuditOptions())


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
    assert {"admin-grant", "privilege-escalation", "unused-destructive"} <= kinds
    used = {a for a, s in states(result, "support-bot").items() if s == "used"}
    assert used == {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:DescribeTable"}
    (policy,) = [p for p in aws_policies(result) if p.name == "support-bot"]
    documents = [json.loads(f.content) for f in policy.files]
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
    assert row["days_with_events"] >= 30
    assert not any("no events for" in r for r in result.data.observability["reason"])
