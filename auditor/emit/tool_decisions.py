"""Per agent, the tools it may call (``allow``), may call after a human approves (``ask``) and may
not call (``deny``): one decision per granted tool, shared by every tool-layer dialect.

``allow``: used and not destructive; unobservable and not destructive (kept, unless
``--drop-unobservable``). ``ask``: destructive and used, or destructive and unobservable (the
blocklist's ``require_approval``). ``deny``: everything else granted — unused, or only refused.
Never wider than the grant: a tool no grant source lists is in no list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from auditor.audit import AuditResult

PROVIDER = "tools"


@dataclass
class Decisions:
    allow: list[str] = field(default_factory=list)
    ask: list[str] = field(default_factory=list)
    deny: list[str] = field(default_factory=list)
    destructive: set[str] = field(default_factory=set)
    called: set[str] = field(default_factory=set)  # every tool with a call in the window, granted or not

    def of(self, tool: str) -> str | None:
        for name in ("allow", "ask", "deny"):
            if tool in getattr(self, name):
                return name
        return None


def decide(state: str, destructive: bool, drop_unobservable: bool) -> str:
    if state == "used" or (state == "unobservable" and (destructive or not drop_unobservable)):
        return "ask" if destructive else "allow"
    return "deny"


def tool_decisions(result: AuditResult) -> dict[str, Decisions]:
    """Per tools identity: its decisions, each list sorted."""
    rows = result.permissions.filter((pl.col("provider") == PROVIDER) & pl.col("granted")).select(
        "identity", "action", "state", "destructive"
    )
    out: dict[str, Decisions] = {a.identity: Decisions() for a in result.audits if a.provider == PROVIDER}
    called = result.permissions.filter((pl.col("provider") == PROVIDER) & (pl.col("calls") > 0))
    for identity, action in called.select("identity", "action").iter_rows():
        out.setdefault(identity, Decisions()).called.add(action)
    for identity, action, state, destructive in rows.sort("action").iter_rows():
        entry = out.setdefault(identity, Decisions())
        getattr(entry, decide(state, bool(destructive), result.options.drop_unobservable)).append(action)
        if destructive:
            entry.destructive.add(action)
    return out
