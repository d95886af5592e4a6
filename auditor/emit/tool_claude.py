"""The Claude Code ``permissions`` fragment of one agent: merge it into managed, project or user
``settings.json``. Claude Code applies ``deny`` first, then ``ask`` (a human approves each call),
then ``allow``; a deny cannot be carved out by an allow, so a whole server is denied
(``mcp__<server>``) only when none of its tools is allowed or asked for. Function tools defined in
an agent's code are not Claude Code's to enforce and are left out.

For an agent whose Claude Code settings were read, this is the reduced settings fragment: its
allow rules are kept only where used (a used destructive one moves to ``ask``), unused destructive
ones are denied, and every deny and ask rule of its settings is carried over as written, so the
fragment never allows what the settings refuse or ask for. An MCP tool no allow rule of its
settings covered was approved call by call: it stays in ``ask``.
"""

from __future__ import annotations

from collections import defaultdict

from auditor.connectors.tools import claude_settings
from auditor.connectors.tools.inventory import BUILTIN, FUNCTION, UNLISTED, split_id
from auditor.emit.base import json_text
from auditor.emit.tool_decisions import Decisions


def rule_name(tool: str) -> str | None:
    """The Claude Code permission rule naming ``tool`` (None: not a tool Claude Code runs)."""
    server, name = split_id(tool)
    if server == FUNCTION:
        return None
    if server == BUILTIN:
        return name
    if name == UNLISTED:
        return None
    return f"mcp__{server}__{name}"


def _tool_of(rule: str) -> str:
    return rule.split("(", 1)[0]


def fragment(decisions: Decisions, keep: dict[str, list[str]] | None = None) -> dict[str, dict[str, list[str]]]:
    by_server: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for kind in ("allow", "ask", "deny"):
        for tool in getattr(decisions, kind):
            by_server[split_id(tool)[0]][kind].append(tool)
    out: dict[str, list[str]] = {"allow": [], "ask": [], "deny": []}
    for server, kinds in sorted(by_server.items()):
        if server not in (FUNCTION, BUILTIN) and kinds["deny"] and not kinds["allow"] and not kinds["ask"]:
            out["deny"].append(f"mcp__{server}")
            continue
        for kind, tools in kinds.items():
            out[kind] += [r for r in (rule_name(t) for t in tools) if r]
    # a deny cannot be carved out: an unused rule of a Claude Code tool that was called is left out
    # (its calls fall back to asking) rather than denied, so no deny can block a call of the window
    called = {_tool_of(split_id(t)[1]) for t in decisions.called if split_id(t)[0] == BUILTIN}
    out["deny"] = [r for r in out["deny"] if r.startswith("mcp__") or _tool_of(r) not in called]
    if keep is not None and "allow" in keep:
        granted = [claude_settings.parse("allow", r, "", "settings") for r in keep["allow"]]
        asked = {
            r
            for r in out["allow"]
            if r.startswith("mcp__") and not any(claude_settings.matches(g, r, {}, "/") for g in granted)
        }
        out["allow"] = [r for r in out["allow"] if r not in asked]
        out["ask"] += sorted(asked)
    for kind in ("deny", "ask"):
        out[kind] += (keep or {}).get(kind, [])
    return {"permissions": {k: sorted(set(v)) for k, v in out.items()}}


def render(decisions: Decisions, keep: dict[str, list[str]] | None = None) -> str:
    return json_text(fragment(decisions, keep))
