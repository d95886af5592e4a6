"""A tool's tier (read / write / destructive) and why, from ``rules/tools/classification.yaml``.

Order: the user's overrides; the MCP annotations of a trusted server (spec defaults for absent
hints); verbs in the tool's name; the specification's default (destructive) for the rest. The tier
becomes the tool's catalog access level, which the ``tools-destructive-*`` rules of
``destructive.yaml`` match, so blocklist, findings and reports treat tools like cloud actions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.connectors.tools.inventory import Tool
from auditor.errors import RuleError
from auditor.matching import any_glob_regex
from auditor.ruleset import Rules, mapping, strings

RULES_FILE = "tools/classification.yaml"
TIERS = ("read", "write", "destructive")
#: access level per (tier, basis); every destructive one is matched by a rule in destructive.yaml.
LEVELS = {
    "read": "Read",
    "write": "Write",
    "destructive": "Destructive",
    "destructive-name": "Destructive (name)",
    "destructive-default": "Destructive (default)",
}
_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


@dataclass(frozen=True)
class Tier:
    tier: str  # read | write | destructive
    basis: str  # shown in reports: which rule decided
    level: str  # the catalog access level


@dataclass(frozen=True)
class ToolRules:
    trusted_servers: frozenset[str]
    destructive_verbs: frozenset[str]
    write_verbs: frozenset[str]
    read_verbs: frozenset[str]
    overrides: tuple[tuple[re.Pattern[str], str, str], ...]  # (glob, tier, reason), the latest layer first
    denied_errors: re.Pattern[str]
    claude_no_approval: frozenset[str] = frozenset()  # Claude Code tools that never ask
    claude_refusals: re.Pattern[str] = re.compile(r"(?!)")  # tool results Claude Code writes for refused calls

    @classmethod
    def of(cls, rules: Rules) -> ToolRules:
        return rules.view("tools/classification", cls._build)

    @classmethod
    def _build(cls, rules: Rules) -> ToolRules:
        trusted: set[str] = set()
        verbs: dict[str, set[str]] = {"destructive_verbs": set(), "write_verbs": set(), "read_verbs": set()}
        overrides: list[tuple[re.Pattern[str], str, str]] = []
        denied: list[str] = []
        no_approval: set[str] = set()
        refusals: list[str] = []
        for path, doc in rules.layers(RULES_FILE):
            no_approval.update(strings(doc.get("claude_code_no_approval"), f"{path} claude_code_no_approval"))
            refusals += strings(doc.get("claude_code_refusals"), f"{path} claude_code_refusals")
            trusted.update(strings(doc.get("trusted_servers"), f"{path} trusted_servers"))
            for key, found in verbs.items():
                found.update(v.lower() for v in strings(doc.get(key), f"{path} {key}"))
            layer = []
            for index, entry in enumerate(doc.get("overrides") or []):
                where = f"{path} overrides[{index}]"
                entry = mapping(entry, where)
                tier = entry.get("tier")
                if tier not in TIERS:
                    raise RuleError(f"{where}: tier must be one of {', '.join(TIERS)}")
                reason = entry.get("reason") or "override in tools/classification.yaml"
                layer.append((any_glob_regex(strings(entry.get("tools"), f"{where} tools", True)), tier, str(reason)))
            overrides = layer + overrides
            denied += strings(doc.get("denied_errors"), f"{path} denied_errors")
        return cls(
            frozenset(trusted),
            frozenset(verbs["destructive_verbs"]),
            frozenset(verbs["write_verbs"]),
            frozenset(verbs["read_verbs"]),
            tuple(overrides),
            any_glob_regex(denied),
            frozenset(no_approval),
            any_glob_regex(refusals),
        )

    def classify(self, tool: Tool, trusted: bool) -> Tier:
        for glob, tier, reason in self.overrides:
            if glob.fullmatch(tool.id):
                return Tier(tier, f"override: {reason}", LEVELS[tier])
        if trusted and tool.annotations is not None:
            hints = tool.hints()
            if hints["readOnlyHint"]:
                return Tier("read", "trusted MCP annotation readOnlyHint", LEVELS["read"])
            if not hints["destructiveHint"]:
                return Tier("write", "trusted MCP annotation destructiveHint: false (additive)", LEVELS["write"])
            given = "destructiveHint" in (tool.annotations or {})
            why = "destructiveHint" if given else "no destructiveHint (the specification's default: true)"
            return Tier("destructive", f"trusted MCP annotation {why}", LEVELS["destructive"])
        words = {w.lower() for w in _WORDS.findall(tool.name)}
        if words & self.destructive_verbs:
            return Tier(
                "destructive", f"name verb {sorted(words & self.destructive_verbs)[0]}", LEVELS["destructive-name"]
            )
        if words & self.write_verbs:
            return Tier("write", f"name verb {sorted(words & self.write_verbs)[0]}", LEVELS["write"])
        if words & self.read_verbs:
            return Tier("read", f"name verb {sorted(words & self.read_verbs)[0]}", LEVELS["read"])
        why = "annotations of an untrusted server are not used" if tool.annotations else "no trusted annotations"
        return Tier("destructive", f"MCP specification default ({why})", LEVELS["destructive-default"])

    def is_claude_refusal(self, text: str) -> bool:
        """Whether a Claude Code tool result is the text it writes for a call it refused."""
        return bool(text) and self.claude_refusals.fullmatch(text.strip()) is not None

    def is_refusal(self, text: str) -> bool:
        """Whether an error text (error.type, status message, exception.type) is a policy refusal."""
        return bool(text) and self.denied_errors.fullmatch(text) is not None
