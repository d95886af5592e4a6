"""The demo tool layer (fixtures/tools) through the whole audit: grants from three MCP client
configurations, captured tools/list results and the manifest; usage from three instrumentations."""

from __future__ import annotations

import json

import cedarpy
import jsonschema
import polars as pl
import pytest
import yaml
from conftest import END, run_cli
from tools_support import FIXTURE, audit_tools

from auditor.connectors.tools.manifest import schema as manifest_schema
from auditor.emit.write import write_outputs

AGENT = "agent://acme-agents/{}"


@pytest.fixture(scope="module")
def result():
    return audit_tools(FIXTURE)


def states(result, agent):
    rows = result.permissions.filter(pl.col("identity") == AGENT.format(agent))
    return dict(rows.select("action", "state").iter_rows())


def test_each_instrumentation_counts_calls_once_per_call(result):
    table = result.permissions.filter(pl.col("state") == "used")
    calls = {(i.rsplit("/", 1)[1], a): c for i, a, c in table.select("identity", "action", "calls").iter_rows()}
    # 20 days with calls; read_file is seen by GenAI and MCP spans, counted once
    assert calls[("support-bot", "filesystem.read_file")] == 20
    assert calls[("research-agent", "web-search.web_search")] == 20  # OpenInference; one timed out: still used
    assert calls[("billing-agent", "billing.get_invoice")] == 20  # OpenLLMetry + MCP, AgentCore Target___tool name
    assert calls[("billing-agent", "postgres.query")] == 20  # server without tools/list: the name the traces give


def test_states_of_the_demo_agents(result):
    support = states(result, "support-bot")
    assert support["function.refund_order"] == "used"
    assert support["github.delete_branch"] == "unused"
    assert support["filesystem.write_file"] == "unused"
    denied = result.permissions.filter(pl.col("action") == "function.refund_order")["denied_calls"].to_list()
    assert denied == [1]  # the call refused by policy
    assert set(states(result, "intern-bot").values()) == {"unobservable"}  # no instrumentation: never unused
    billing = states(result, "billing-agent")
    assert billing["postgres.(unlisted tools)"] == "unobservable"
    assert billing["billing.void_invoice"] == "unused"


def test_classification_trusts_annotations_only_of_trusted_servers(result):
    levels = dict(result.permissions.select("action", "access_level").unique().iter_rows())
    assert levels["filesystem.read_file"] == "Read"  # trusted readOnlyHint
    assert levels["filesystem.create_directory"] == "Write"  # trusted destructiveHint false
    assert levels["filesystem.move_file"] == "Destructive"  # readOnlyHint false, destructiveHint absent: default true
    assert levels["github.merge_pull_request"] == "Destructive (name)"  # untrusted readOnlyHint ignored


def test_outputs_blocklist_report_and_dialects(result, tmp_path):
    document = write_outputs(result, tmp_path / "out")
    out = tmp_path / "out"
    blocklist = yaml.safe_load((out / "blocklist.yaml").read_text())
    schema = json.loads((FIXTURE.parents[2] / "auditor/schemas/blocklist.schema.json").read_text())
    jsonschema.validate(blocklist, schema)
    support = next(i for i in blocklist["identities"] if i["name"] == "support-bot")
    assert "filesystem.read_file" in support["allow"]
    assert [a["permission"] for a in support["require_approval"]] == ["function.refund_order"]
    denied = {p for group in support["deny"] for p in group["permissions"]}
    assert {"github.delete_branch", "filesystem.write_file"} <= denied
    report = (out / "report.md").read_text()
    assert "runs as aws identity arn:aws:iam::123456789012:role/agents/support-bot" in report
    (entry,) = [i for i in document["identities"] if i["name"] == "support-bot"]
    folder = out / entry["policy_folder"]
    claude = json.loads((folder / "claude-settings.json").read_text())["permissions"]
    assert "mcp__filesystem__read_file" in claude["allow"] and "mcp__github__delete_branch" in claude["deny"]
    policies = (folder / "agentcore.cedar").read_text()
    cedar_schema = (folder / "agentcore.cedarschema.json").read_text()
    assert cedarpy.validate_policies(policies, cedar_schema).validation_passed
    gateway = 'AgentCore::Gateway::"arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/support-gw"'
    principal = 'AgentCore::IamEntity::"arn:aws:iam::123456789012:role/agents/support-bot"'

    def decision(tool):
        request = {"principal": principal, "action": f'AgentCore::Action::"{tool}"', "resource": gateway, "context": {}}
        return cedarpy.is_authorized(request, policies, []).allowed

    assert decision("filesystem___read_file") and not decision("github___delete_branch")


def test_the_manifest_validates_against_its_schema():
    jsonschema.validate(yaml.safe_load(FIXTURE.read_text()), manifest_schema())


def test_cli_runs_the_tool_layer(tmp_path):
    run = run_cli("audit", "--tools-manifest", FIXTURE, "--out", tmp_path / "out", "--until", END.isoformat(), "-q")
    assert run.code == 0, run.err
    assert (tmp_path / "out" / "blocklist.yaml").is_file()


def test_a_bad_manifest_is_one_line(tmp_path):
    bad = tmp_path / "agents.yaml"
    bad.write_text("version: 1\nagents: [{tools: 3}]\n")
    run = run_cli("audit", "--tools-manifest", bad, "--out", tmp_path / "out")
    assert run.code == 2 and "agents/0" in run.err and "Traceback" not in run.err
