"""One identity's part of ``blocklist.yaml`` as a lookup table: a permission in, the decision out.

What each list means at the enforcement point:

- ``deny``: blocked, never sent.
- ``require_approval``: sent only after a human approves it.
- Neither: allowed. The blocklist lists the destructive permissions only; keeping the rest to
  what the agent used is the least-privilege policy's job (``policy.json``, ``boundary.json``).
- Tool-layer identities (those with an ``allow`` list) are allow-lists: a tool in none of the three
  lists is blocked (rule :data:`NOT_ALLOWED`), as the same audit's ``tools.json`` denies it: it was
  granted and never used, or never granted. ``<server>.(unlisted tools)`` stands for the tools of a
  server no ``tools/list`` enumerated: a tool of that server named in no list takes its decision.

Names compare case-insensitively; a permission in several lists takes the strictest (deny, then
approval, then allow). Lookups are one dict access: the cost does not grow with the blocklist. An
entry with ``*`` or ``?`` (the audit writes none; a hand-edited file may) is a pattern, tried when no
name matches. A name no cloud spells a permission with (white space, look-alike letters, a wildcard)
is blocked for deny-list identities, which would otherwise let it through.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Decision = Literal["allow", "deny", "require_approval"]
#: The rule of a tool an allow-list identity lists nowhere.
NOT_ALLOWED = "guard-not-allowed"
#: The rule of a name no cloud calls a permission by (white space, look-alike letters, a wildcard):
#: blocked, since a deny list would let through whatever it cannot spell.
MALFORMED = "guard-malformed-name"
#: What IAM actions, GCP permissions and ARM operations are spelled with.
_PERMISSION_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")
#: The tool part of ``<server>.(unlisted tools)`` (as :mod:`auditor.connectors.tools.inventory` spells it).
UNLISTED = "(unlisted tools)"
_STRICTNESS = {"allow": 0, "require_approval": 1, "deny": 2}


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the blocklist says about one permission."""

    decision: Decision
    rule: str | None = None
    reason: str = ""
    severity: str | None = None


ALLOWED = Verdict("allow", None, "not in the blocklist")
LISTED_ALLOWED = Verdict("allow", None, "in the identity's allow list")


@dataclass(frozen=True)
class IdentityPolicy:
    """The decisions of one blocklist identity."""

    provider: str
    identity: str
    name: str
    account: str | None
    table: Mapping[str, Verdict]  # lower-cased permission -> verdict
    unlisted: Mapping[str, Verdict]  # lower-cased server -> verdict of its "(unlisted tools)" entry
    allow_list: bool  # a tool-layer identity: what no list names is blocked
    # entries holding * or ? (written by hand: the audit lists names), strictest first
    patterns: tuple[tuple[re.Pattern[str], Verdict], ...] = field(default=())

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> IdentityPolicy:
        """The policy of one (schema-valid) ``identities[]`` entry."""
        table: dict[str, Verdict] = {}
        allow_list = "allow" in entry
        for name in entry.get("allow") or ():
            _put(table, name, LISTED_ALLOWED)
        for item in entry.get("require_approval") or ():
            verdict = Verdict("require_approval", item["rule"], item["reason"], item.get("severity"))
            _put(table, item["permission"], verdict)
        for group in entry.get("deny") or ():
            verdict = Verdict("deny", group["rule"], group["reason"], group.get("severity"))
            for name in group["permissions"]:
                _put(table, name, verdict)
        patterns = sorted(
            ((re.compile(fnmatch.translate(key)), v) for key, v in table.items() if "*" in key or "?" in key),
            key=lambda pair: -_STRICTNESS[pair[1].decision],
        )
        unlisted = {}
        if allow_list:
            suffix = "." + UNLISTED.lower()
            unlisted = {key[: -len(suffix)]: v for key, v in table.items() if key.endswith(suffix)}
        return cls(
            provider=entry["provider"],
            identity=entry["identity"],
            name=entry.get("name") or "",
            account=entry.get("account"),
            table=table,
            unlisted=unlisted,
            allow_list=allow_list,
            patterns=tuple(patterns),
        )

    def decide(self, permission: str) -> Verdict:
        """The verdict for ``permission`` (an IAM action, an ARM operation, a tool name)."""
        key = permission.lower()
        hit = self.table.get(key)
        if hit is not None:
            return hit
        for pattern, verdict in self.patterns:
            if pattern.match(key):
                return verdict
        if not self.allow_list:
            if _PERMISSION_NAME.fullmatch(permission) is None:
                return Verdict("deny", MALFORMED, f"{permission!r} is not a permission name: refused, not looked up")
            return ALLOWED
        server, dot, _ = key.partition(".")
        if dot and server in self.unlisted:
            return self.unlisted[server]
        return Verdict(
            "deny",
            NOT_ALLOWED,
            f"{permission} is not in {self.name or self.identity}'s allow list: not granted, or granted and never "
            "used in the audit window (tools.json denies it)",
        )


def _put(table: dict[str, Verdict], name: str, verdict: Verdict) -> None:
    key = name.lower()
    known = table.get(key)
    if known is None or _STRICTNESS[verdict.decision] >= _STRICTNESS[known.decision]:
        table[key] = verdict
