"""Cedar policies for the two tool-call enforcement points that load Cedar, with the schema each is
validated against, both generated from the same tool inventory.

Amazon Bedrock AgentCore Gateway: one action per tool, ``AgentCore::Action::"<target>___<tool>"``,
on ``AgentCore::Gateway::"<gateway ARN>"`` (the manifest's ``gateway``); the principal is the IAM
role the agent runs as when the manifest names one. Stacklok ToolHive: ``Action::"call_tool"`` on
``Tool::"<tool>"``, one policy set per MCP server (ToolHive fronts one server per proxy).

Cedar denies by default and ``forbid`` overrides ``permit``: the used tools are permitted, the tools
a human must approve are permitted with ``@approval("required")`` for the enforcement point to
route, and the unused destructive ones are also forbidden outright, so a later broad permit cannot
bring them back. Function tools and a server's unlisted tools have no Cedar action to name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from auditor.connectors.tools.inventory import BUILTIN, FUNCTION, UNLISTED, split_id
from auditor.emit.tool_decisions import Decisions

GATEWAY_PLACEHOLDER = "arn:aws:bedrock-agentcore:REGION:ACCOUNT:gateway/GATEWAY-ID"
_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:/@()[]{}<>+=,;*#!?&%$~|^`")


def literal(value: str) -> str:
    """A Cedar string literal: every character outside a plain set as a ``\\u{…}`` escape."""
    return '"' + "".join(c if c in _PLAIN else f"\\u{{{ord(c):x}}}" for c in value) + '"'


def _servers(tools: Iterable[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for tool in tools:
        server, name = split_id(tool)
        if server not in (FUNCTION, BUILTIN) and name != UNLISTED:
            found[server].append(name)
    return found


def _policy(effect: str, ident: str, principal: str, actions: list[str], resource: str, approval: bool) -> str:
    head = f"@id({literal(ident)})\n" + ('@approval("required")\n' if approval else "")
    listed = ",\n    ".join(actions)
    action = f"action == {actions[0]}" if len(actions) == 1 else f"action in [\n    {listed}\n  ]"
    return f"{head}{effect} (\n  {principal},\n  {action},\n  {resource}\n);\n"


def agentcore(agent: str, decisions: Decisions, attributes: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(policies, schema) for an AgentCore Gateway policy engine."""
    targets = attributes.get("gateway_targets") or {}
    gateway = attributes.get("gateway") or GATEWAY_PLACEHOLDER
    role = (attributes.get("runs_as") or {}).get("aws_role")
    principal = f"principal == AgentCore::IamEntity::{literal(role)}" if role else "principal"
    resource = f"resource == AgentCore::Gateway::{literal(gateway)}"

    def actions(tools: Iterable[str]) -> list[str]:
        return [
            f"AgentCore::Action::{literal(f'{targets.get(s, s)}___{n}')}"
            for s, names in sorted(_servers(tools).items())
            for n in sorted(names)
        ]

    parts = [f"// auditor: least-privilege tool policy of agent {agent} for an AgentCore Gateway\n"]
    if not attributes.get("gateway"):
        parts.append("// the manifest names no gateway: replace the placeholder gateway ARN\n")
    for effect, kind, tools, approval in (
        ("permit", "allow", decisions.allow, False),
        ("permit", "ask", decisions.ask, True),
        ("forbid", "deny-destructive", [t for t in decisions.deny if t in decisions.destructive], False),
    ):
        named = actions(tools)
        if named:
            parts.append(_policy(effect, f"auditor-{kind}", principal, named, resource, approval))
    every = sorted({a.split("::", 2)[2] for a in actions([*decisions.allow, *decisions.ask, *decisions.deny])})
    applies = {"principalTypes": ["IamEntity", "OAuthUser"], "resourceTypes": ["Gateway"]}
    schema = {
        "AgentCore": {
            "entityTypes": {"IamEntity": {}, "OAuthUser": {}, "Gateway": {}},
            "actions": {name[1:-1]: {"appliesTo": applies} for name in every},
        }
    }
    return "\n".join(parts), schema


def toolhive(decisions: Decisions) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per MCP server: (policies, schema) for the ToolHive proxy in front of it."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    granted = _servers([*decisions.allow, *decisions.ask, *decisions.deny])
    for server in sorted(granted):
        parts = [f"// auditor: least-privilege tool policy for the ToolHive proxy of MCP server {server}\n"]
        for effect, kind, tools, approval in (
            ("permit", "allow", decisions.allow, False),
            ("permit", "ask", decisions.ask, True),
            ("forbid", "deny-destructive", [t for t in decisions.deny if t in decisions.destructive], False),
        ):
            mine = sorted(_servers(tools).get(server, []))
            for name in mine:
                parts.append(
                    _policy(
                        effect,
                        f"auditor-{kind}-{name}",
                        "principal",
                        ['Action::"call_tool"'],
                        f"resource == Tool::{literal(name)}",
                        approval,
                    )
                )
        schema = {
            "": {
                "entityTypes": {"Client": {}, "Tool": {}},
                "actions": {
                    "call_tool": {"appliesTo": {"principalTypes": ["Client"], "resourceTypes": ["Tool"]}},
                    "list_tools": {"appliesTo": {"principalTypes": ["Client"], "resourceTypes": ["Tool"]}},
                },
            }
        }
        out[server] = ("\n".join(parts), schema)
    return out
