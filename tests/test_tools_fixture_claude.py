"""The demo's Claude Code agent (fixtures/tools, ``dev-assistant``) through the whole audit, with the
expected states worked out here from the fixture's own files (settings, transcripts, telemetry,
tools/list capture), and the properties every emitted dialect must hold over every demo agent."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cedarpy
import polars as pl
import pytest
import yaml
from conftest import run_cli
from tools_support import FIXTURE, audit_tools

from auditor.connectors.tools import claude_settings
from auditor.emit.write import write_outputs

ROOT = FIXTURE.parent
AGENT = "agent://acme-agents/dev-assistant"
NO_APPROVAL = {"Read", "Grep", "Glob", "LS", "NotebookRead", "TodoRead", "TodoWrite"}


@pytest.fixture(scope="module")
def result():
    return audit_tools(FIXTURE)


@pytest.fixture(scope="module")
def outputs(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return out, write_outputs(result, out)


def _values(attrs: list[dict[str, Any]]) -> dict[str, str]:
    return {a["key"]: next(iter(a["value"].values())) for a in attrs}


def fixture_calls() -> dict[str, dict[str, Any]]:
    """Every Claude Code call of the fixture by tool_use_id, read here from the raw files:
    {tool, input, when, rejected, seen: set of sources}."""
    calls: dict[str, dict[str, Any]] = {}
    for path in sorted((ROOT / "claude" / "projects").rglob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        refused = {
            b["tool_use_id"]
            for line in lines
            for b in line["message"]["content"]
            if b["type"] == "tool_result" and b.get("is_error")
        }
        for line in lines:
            for block in line["message"]["content"]:
                if block["type"] == "tool_use":
                    call = calls.setdefault(block["id"], {"seen": set()})
                    call |= {"tool": block["name"], "input": block["input"], "when": line["timestamp"][:19] + "Z"}
                    call["rejected"] = block["id"] in refused
                    call["seen"].add("transcript")
    for line in (ROOT / "claude" / "telemetry" / "otel-logs.jsonl").read_text().splitlines():
        for record in json.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
            attrs = _values(record["attributes"])
            call = calls.setdefault(attrs["tool_use_id"], {"seen": set(), "rejected": False})
            call["seen"].add("telemetry")
            call["rejected"] = call["rejected"] or attrs.get("decision") == "reject"
            if "when" not in call:
                params = json.loads(attrs.get("tool_parameters") or attrs.get("tool_input"))
                tool = attrs["tool_name"]
                if tool == "mcp_tool":
                    tool = f"mcp__{params['mcp_server_name']}__{params['mcp_tool_name']}"
                elif tool == "Bash":
                    params = {"command": params["bash_command"]}
                call |= {"tool": tool, "input": params, "when": attrs["event.timestamp"][:19] + "Z"}
    return calls


def in_window(result) -> list[dict[str, Any]]:
    window = result.data.windows["tools"]
    start, end = (f"{t:%Y-%m-%dT%H:%M:%S}Z" for t in (window.start, window.end))
    return [c for c in fixture_calls().values() if start <= c["when"] <= end]


def _rules(kind: str) -> list[str]:
    files = [
        "claude/managed/managed-settings.json",
        "claude/home/settings.json",
        "claude/shop/.claude/settings.json",
        "claude/shop/.claude/settings.local.json",
    ]
    return [r for f in files for r in json.loads((ROOT / f).read_text())["permissions"].get(kind, [])]


def _prefix(rule: str) -> str:
    return rule.removeprefix("Bash(").removesuffix(")").removesuffix(" *")


def expected_rule(call: dict[str, Any]) -> str:
    """The permission a call used, by a plain reading of the fixture's rules: Bash commands by
    the prefix of a rule, WebFetch by domain, MCP tools by name, Read without a rule."""
    tool, given = call["tool"], call["input"]
    if tool.startswith("mcp__"):
        server, name = tool[5:].split("__", 1)
        return f"{server}.{name}"
    if tool == "Bash":
        hits = [r for r in _rules("allow") if r.startswith("Bash(") and given["command"].startswith(_prefix(r))]
        (rule,) = hits
        return f"builtin.{rule}"
    if tool == "WebFetch":
        (rule,) = [r for r in _rules("allow") if r.startswith("WebFetch(domain:") and r[16:-1] in given["url"]]
        return f"builtin.{rule}"
    return f"builtin.{tool}"


def states(result, identity: str = AGENT) -> dict[str, dict[str, Any]]:
    rows = result.permissions.filter(pl.col("identity") == identity)
    return {r["action"]: r for r in rows.iter_rows(named=True)}


def test_calls_of_both_sources_count_once_under_the_rule_they_used(result):
    calls = in_window(result)
    both = [c for c in calls if c["seen"] == {"transcript", "telemetry"}]
    only = {s: [c for c in calls if c["seen"] == {s}] for s in ("transcript", "telemetry")}
    assert both and only["transcript"] and only["telemetry"]  # the fixture holds the three cases
    expected: dict[str, int] = {}
    for call in calls:
        if not call["rejected"]:
            expected[expected_rule(call)] = expected.get(expected_rule(call), 0) + 1
    perms = states(result)
    assert {a: r["calls"] for a, r in perms.items() if r["state"] == "used"} == expected


def test_the_managed_deny_beats_the_project_allow_and_the_rejection_is_denied(result):
    rejected = [c for c in in_window(result) if c["rejected"]]
    assert len(rejected) == 1 and "telemetry" in rejected[0]["seen"]
    command = rejected[0]["input"]["command"]
    assert any(command.startswith(_prefix(r)) for r in _rules("allow"))  # a project allow matches it ...
    assert any(command.startswith(_prefix(r)) for r in _rules("deny"))  # ... and the managed deny wins
    bash = states(result)["builtin.Bash"]
    assert bash["state"] == "denied" and bash["denied_calls"] == 1


def test_unused_rules_and_tools_of_the_fixture(result):
    perms = states(result)
    called = {expected_rule(c) for c in in_window(result)}
    applied = [r for r in _rules("allow") if not r.startswith("Write(")]
    for rule in applied:
        name = f"builtin.{rule}" if not rule.startswith("mcp__") else rule[5:].replace("__", ".", 1)
        assert perms[name]["state"] == ("used" if name in called else "unused"), name
    listed = json.loads((ROOT / "tools-list" / "sentry.json").read_text())["result"]["tools"]
    for tool in listed:
        name = f"sentry.{tool['name']}"
        assert perms[name]["state"] == ("used" if name in called else "unused"), name
        hints = tool["annotations"]  # the specification's defaults: readOnlyHint false, destructiveHint true
        assert perms[name]["destructive"] == (
            not hints.get("readOnlyHint", False) and hints.get("destructiveHint", True)
        )
    unused_destructive = {a for a, r in perms.items() if r["state"] == "unused" and r["destructive"]}
    assert unused_destructive == {"builtin.Bash(rm -rf *)", "sentry.delete_project"}
    assert not any(a.startswith("builtin.Write") for a in perms)  # accepted, never applied: not a grant
    assert "builtin.Bash(npm publish *)" not in perms  # an ask rule is no grant


def _fragment_settings(folder: Path, tmp: Path) -> claude_settings.Settings:
    project = tmp / folder.name
    (project / ".claude").mkdir(parents=True, exist_ok=True)
    (project / ".claude" / "settings.json").write_text((folder / "claude-settings.json").read_text())
    return claude_settings.load(None, None, project)


def _cedar(folder: Path) -> tuple[str, dict[str, str]]:
    text = (folder / "agentcore.cedar").read_text()
    principal = re.search(r'principal == (AgentCore::IamEntity::"[^"]+")', text)
    gateway = re.search(r'resource == (AgentCore::Gateway::"[^"]+")', text)
    return text, {
        "principal": principal.group(1) if principal else 'AgentCore::OAuthUser::"anyone"',
        "resource": gateway.group(1) if gateway else 'AgentCore::Gateway::"none"',
    }


def _targets() -> dict[str, dict[str, str]]:
    manifest = yaml.safe_load(FIXTURE.read_text())
    return {
        a["name"]: {s["name"]: s["gateway_target"] for s in a.get("mcp_servers", ()) if "gateway_target" in s}
        for a in manifest["agents"]
    }


def _dialects(folder: Path, agent: str, blocklist: dict[str, Any], tmp: Path):
    """Per dialect, a function (permission, Claude Code call or None) -> allowed?"""
    canonical = json.loads((folder / "tools.json").read_text())
    mine = next(i for i in blocklist["identities"] if i["name"] == agent)
    blocked = {p for g in mine["deny"] for p in g["permissions"]}
    gated = {a["permission"] for a in mine["require_approval"]}
    fragment = _fragment_settings(folder, tmp)
    agentcore, request = _cedar(folder)
    targets = _targets()[agent]

    def claude(action: str, call: dict[str, Any] | None) -> bool | None:
        server, name = action.split(".", 1)
        if server == "function" or name == "(unlisted tools)":
            return None  # not Claude Code's to enforce
        if call is not None:
            return fragment.decide(call["tool"], call["input"])[0] in ("allow", "ask")
        if server == "builtin":
            return None  # decided by replaying the calls
        return fragment.decide(f"mcp__{server}__{name}", {})[0] in ("allow", "ask")

    def cedar(action: str) -> tuple[bool, bool] | None:
        server, name = action.split(".", 1)
        if server in ("function", "builtin") or name == "(unlisted tools)":
            return None  # no Cedar action names it
        core = {**request, "action": f'AgentCore::Action::"{targets.get(server, server)}___{name}"', "context": {}}
        hive = {"principal": 'Client::"c"', "action": 'Action::"call_tool"', "resource": f'Tool::"{name}"'}
        policies = (folder / "toolhive" / f"{server}.cedar").read_text()
        return (
            cedarpy.is_authorized(core, agentcore, []).allowed,
            cedarpy.is_authorized({**hive, "context": {}}, policies, []).allowed,
        )

    return canonical, blocked, mine["allow"], gated, claude, cedar


def test_every_dialect_allows_every_called_tool_and_denies_unused_destructive(result, outputs, tmp_path):
    out, document = outputs
    blocklist = yaml.safe_load((out / "blocklist.yaml").read_text())
    agents = [i for i in document["identities"] if i["provider"] == "tools"]
    assert len(agents) == 5
    for entry in agents:
        folder = out / entry["policy_folder"]
        canonical, blocked, allowed, gated, claude, cedar = _dialects(folder, entry["name"], blocklist, tmp_path)
        perms = states(result, entry["identity"])
        for action, row in perms.items():
            if row["state"] == "used":
                assert action in canonical["allow"] + canonical["ask"], action
                assert action not in blocked and (action in allowed or action in gated), action
                assert claude(action, None) in (True, None), action
                assert cedar(action) in ((True, True), None), action
            if row["state"] == "unused" and row["destructive"] and row["granted"]:
                assert action in canonical["deny"] and action in blocked, action
                assert claude(action, None) in (False, None), action
                assert cedar(action) in ((False, False), None), action
    # Claude Code's own tools: replay every call of the window against the reduced settings
    dev = next(e for e in agents if e["name"] == "dev-assistant")
    folder = out / dev["policy_folder"]
    *_, claude, _ = _dialects(folder, "dev-assistant", blocklist, tmp_path)
    before = claude_settings.load(ROOT / "claude" / "managed", ROOT / "claude/home/settings.json", ROOT / "claude/shop")
    after = _fragment_settings(folder, tmp_path)
    for call in in_window(result):
        was = before.decide(call["tool"], call["input"])[0]
        now = after.decide(call["tool"], call["input"])[0]
        if call["rejected"]:
            assert was == now == "deny", call
        else:
            assert claude(expected_rule(call), call), call
            assert now != "allow" or was == "allow" or call["tool"] in NO_APPROVAL, call  # never wider
    fragment = json.loads((folder / "claude-settings.json").read_text())["permissions"]
    assert "mcp__sentry__delete_project" in fragment["deny"]
    # Bash is called, so the unused destructive Bash rule is dropped, not denied (a deny cannot be carved out)
    assert "Bash(rm -rf *)" not in fragment["allow"] + fragment["ask"] + fragment["deny"]
    assert set(_rules("deny")) <= set(fragment["deny"]) and set(_rules("ask")) <= set(fragment["ask"])


def test_the_readme_demo_command_runs_on_the_fixture(tmp_path):
    run = run_cli("audit", "--tools-manifest", FIXTURE, "--out", tmp_path / "out", "-q")
    assert run.code == 0, run.err
    assert (tmp_path / "out" / "policies" / "tools" / "acme-agents" / "agent" / "dev-assistant").is_dir()


def test_the_generator_is_deterministic(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("generate_tools", ROOT.parent / "generate_tools.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(tmp_path / "tools")
    for path in (tmp_path / "tools").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (ROOT / path.relative_to(tmp_path / "tools")).read_bytes(), path


def test_settings_findings_are_in_the_report(result, outputs):
    out, document = outputs
    mine = [f for f in document["findings"] if f["identity"] == AGENT]
    wider = {f["actions"][0]: f for f in mine if f["kind"] == "wider-than-used"}
    shapes: dict[str, set[str]] = {}
    for call in in_window(result):
        if call["tool"] == "Bash" and not call["rejected"]:
            shapes.setdefault(expected_rule(call), set()).add(call["input"]["command"])
    assert set(wider) == {rule for rule, seen in shapes.items() if len(seen) <= 3}
    for rule, finding in wider.items():
        assert finding["severity"] == "low" and finding["title"].endswith("; ".join(sorted(shapes[rule])))
    (ignored,) = [f for f in mine if f["kind"] == "ignored-rule"]
    (write_rule,) = [r for r in _rules("allow") if r.startswith("Write(")]
    assert write_rule in ignored["title"] and ignored["severity"] == "low"
    report = (out / "report.md").read_text()
    assert "`ignored-rule`" in report and "`wider-than-used`" in report
