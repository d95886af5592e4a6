"""Properties of every emitted tool-layer dialect (tools.json, blocklist, Claude Code permissions,
AgentCore and ToolHive Cedar evaluated with cedarpy): a called tool is allowed, an unused
destructive tool is denied, a tool without instrumentation is never unused."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import cedarpy
import polars as pl
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tools_support import audit_tools, tool_layer

from auditor.emit.write import write_outputs

NAMES = st.sampled_from(["read_file", "delete_file", "query", "send_email", "get_status", "frobnicate", "Drop-Table"])
HINTS = st.one_of(
    st.none(), st.fixed_dictionaries({}, optional={"readOnlyHint": st.booleans(), "destructiveHint": st.booleans()})
)


def _claude_allows(claude: dict, tool: str) -> bool:
    rule = f"mcp__srv__{tool}"
    return (
        rule not in claude["deny"]
        and "mcp__srv" not in claude["deny"]
        and (rule in claude["allow"] or rule in claude["ask"])
    )


def _claude_denies(claude: dict, tool: str) -> bool:
    return f"mcp__srv__{tool}" in claude["deny"] or "mcp__srv" in claude["deny"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tools=st.dictionaries(NAMES, HINTS, min_size=1, max_size=5),
    used=st.sets(NAMES, max_size=5),
    instrumented=st.booleans(),
    trusted=st.booleans(),
)
def test_every_dialect_allows_what_was_called_and_denies_unused_destructive(tools, used, instrumented, trusted):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        calls = {name: 2 for name in used if name in tools}
        manifest = tool_layer(root / "layer", tools, calls, instrumented=instrumented, trusted=trusted)
        result = audit_tools(manifest)
        perms = result.permissions.filter(pl.col("granted"))
        states = dict(perms.select("action", "state").iter_rows())
        destructive = set(perms.filter(pl.col("destructive"))["action"])
        if not instrumented:
            assert "unused" not in states.values()
        write_outputs(result, root / "out")
        (folder_out,) = {p.parent for p in (root / "out").rglob("tools.json")}
        canonical = json.loads((folder_out / "tools.json").read_text())
        claude = json.loads((folder_out / "claude-settings.json").read_text())["permissions"]
        blocklist = yaml.safe_load((root / "out" / "blocklist.yaml").read_text())["identities"][0]
        blocked = {p for g in blocklist["deny"] for p in g["permissions"]}
        gated = {a["permission"] for a in blocklist["require_approval"]}
        agentcore = (folder_out / "agentcore.cedar").read_text()
        toolhive = (folder_out / "toolhive" / "srv.cedar").read_text()
        for text, schema in (
            (agentcore, folder_out / "agentcore.cedarschema.json"),
            (toolhive, folder_out / "toolhive" / "srv.cedarschema.json"),
        ):
            assert cedarpy.validate_policies(text, schema.read_text()).validation_passed, text

        def cedar(tool: str) -> tuple[bool, bool]:
            gateway = 'AgentCore::Gateway::"arn:aws:bedrock-agentcore:REGION:ACCOUNT:gateway/GATEWAY-ID"'
            core = {
                "principal": 'AgentCore::OAuthUser::"u"',
                "action": f'AgentCore::Action::"srv___{tool}"',
                "resource": gateway,
                "context": {},
            }
            hive = {
                "principal": 'Client::"c"',
                "action": 'Action::"call_tool"',
                "resource": f'Tool::"{tool}"',
                "context": {},
            }
            return cedarpy.is_authorized(core, agentcore, []).allowed, cedarpy.is_authorized(hive, toolhive, []).allowed

        for name in calls:
            action = f"srv.{name}"
            if not instrumented:
                continue
            assert states[action] == "used"
            assert action in canonical["allow"] + canonical["ask"]
            assert action not in blocked and (action in blocklist["allow"] or action in gated)
            assert _claude_allows(claude, name)
            assert cedar(name) == (True, True)
        for action, state in states.items():
            if state == "unused" and action in destructive:
                name = action.split(".", 1)[1]
                assert action in canonical["deny"] and action in blocked
                assert _claude_denies(claude, name)
                assert cedar(name) == (False, False)
