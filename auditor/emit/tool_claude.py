"""The Claude Code ``permissions`` fragment of one agent: merge it into managed, project or user
``settings.json``. Claude Code applies ``deny`` first, then ``ask`` (a human approves each call),
then ``allow``; a deny cannot be carved out by an allow, so a whole server is denied
(``mcp__<server>``) only when none of its tools is allowed or asked for. Function tools defined in
an agent's code are not Claude Code's to enforce and are left out.
"""

from __future__ import annotations

import json
from collections import defaultdict

from auditor.connectors.tools.inventory import BUILTIN, FUNCTION, UNLISTED, split_id
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


def fragment(decisions: Decisions) -> dict[str, dict[str, list[str]]]:
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
    return {"permissions": {k: sorted(set(v)) for k, v in out.items()}}


def render(decisions: Decisions) -> str:
    return json.dumps(fragment(decisions), indent=2) + "\n"
