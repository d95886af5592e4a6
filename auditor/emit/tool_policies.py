"""Least-privilege outputs of each agent's tool layer (provider ``tools``), in its own folder:

- ``tools.json``: the canonical ``{allow, ask, deny}`` of :mod:`auditor.emit.tool_decisions`;
- ``claude-settings.json``: the Claude Code ``permissions`` fragment (:mod:`auditor.emit.tool_claude`);
- ``agentcore.cedar`` + ``agentcore.cedarschema.json``: Amazon Bedrock AgentCore Gateway policies;
- ``toolhive/<server>.cedar`` + ``.cedarschema.json``: Stacklok ToolHive policies per MCP server
  (:mod:`auditor.emit.tool_cedar`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from auditor.emit import base, tool_cedar, tool_claude
from auditor.emit.base import IdentityPolicies, PolicyFile
from auditor.emit.tool_decisions import PROVIDER, tool_decisions

if TYPE_CHECKING:
    from auditor.audit import AuditResult


def _json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def emit(result: AuditResult, folders: Mapping[str, str]) -> list[IdentityPolicies]:
    decisions = tool_decisions(result)
    identities = result.data.identities
    attributes = {
        i: json.loads(a or "{}")
        for p, i, a in identities.select("provider", "identity", "attributes").iter_rows()
        if p == PROVIDER
    }
    out = []
    for audit in (a for a in result.audits if a.provider == PROVIDER):
        mine = decisions[audit.identity]
        attrs = attributes.get(audit.identity, {})
        entry = IdentityPolicies(PROVIDER, audit.account, audit.identity, audit.name, folders[audit.identity])
        folder = entry.folder
        canonical = {
            "agent": audit.name,
            "identity": audit.identity,
            "allow": mine.allow,
            "ask": mine.ask,
            "deny": mine.deny,
        }
        entry.files.append(PolicyFile(f"{folder}/tools.json", _json(canonical)))
        entry.files.append(
            PolicyFile(f"{folder}/claude-settings.json", tool_claude.render(mine, attrs.get("claude_code")))
        )
        policies, schema = tool_cedar.agentcore(audit.name, mine, attrs)
        entry.files.append(PolicyFile(f"{folder}/agentcore.cedar", policies))
        entry.files.append(PolicyFile(f"{folder}/agentcore.cedarschema.json", _json(schema)))
        for server, (text, server_schema) in tool_cedar.toolhive(mine).items():
            entry.files.append(PolicyFile(f"{folder}/toolhive/{server}.cedar", text))
            entry.files.append(PolicyFile(f"{folder}/toolhive/{server}.cedarschema.json", _json(server_schema)))
        if not attrs.get("gateway"):
            entry.note = "agentcore.cedar names a placeholder gateway ARN: set `gateway` in the manifest"
        out.append(entry)
    return out


base.register(PROVIDER, emit)
