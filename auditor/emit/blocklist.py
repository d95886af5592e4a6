"""The blocklist a tool-call policy enforcement point loads: hard blocks and approval gates.

Per identity, ``deny`` lists destructive permissions that are granted but were never successfully
used — unused, or only attempted and refused (block them in code) —, and ``require_approval`` lists
destructive permissions that were used, or that the logs cannot show (route them through a human
approval gate). A destructive permission is always in exactly one of the two. Schema:
``auditor/schemas/blocklist.schema.json``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import polars as pl
import yaml

from auditor import __version__
from auditor.timefmt import iso, window_dict

if TYPE_CHECKING:
    from auditor.audit import AuditResult

HEADER = """\
# auditor blocklist: load it at the tool-call policy enforcement point.
# Per identity: `deny` = destructive permissions granted but never successfully used in the window
# (unused, or only refused: hard block);
# `require_approval` = destructive permissions that were used, or that the logs cannot show
# (route through a human approval gate). Permission names compare case-insensitively.
# JSON Schema: auditor/schemas/blocklist.schema.json
"""


def _deny_group(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule": row["destructive_rule"],
        "category": row["destructive_category"],
        "severity": row["destructive_severity"],
        "reason": row["destructive_reason"],
        "permissions": [],
    }


def _approval(row: dict[str, Any]) -> dict[str, Any]:
    why = (
        f"used {row['calls']} time(s) in the window"
        if row["state"] == "used"
        else f"the logs cannot show its use: {row['unobservable_reason']}"
    )
    return {
        "permission": row["action"],
        "rule": row["destructive_rule"],
        "category": row["destructive_category"],
        "severity": row["destructive_severity"],
        "reason": f"{row['destructive_reason']}; {why}",
        "evidence": row["state"],
        "calls": int(row["calls"]),
        "last_used": iso(row["last_seen"]),
    }


def blocklist(result: AuditResult) -> dict[str, Any]:
    destructive = result.permissions.filter(pl.col("granted") & pl.col("destructive")).sort("action")
    by_identity = destructive.partition_by(["provider", "identity"], as_dict=True)
    identities = []
    for audit in result.audits:
        rows = by_identity.get((audit.provider, audit.identity))
        deny_groups: dict[str, dict[str, Any]] = {}
        approval = []
        for row in rows.iter_rows(named=True) if rows is not None else ():
            if row["state"] in ("unused", "denied"):
                deny_groups.setdefault(row["destructive_rule"], _deny_group(row))["permissions"].append(row["action"])
            else:
                approval.append(_approval(row))
        identities.append(
            {
                "provider": audit.provider,
                "account": audit.account,
                "identity": audit.identity,
                "name": audit.name,
                "deny": sorted(deny_groups.values(), key=lambda g: g["rule"]),
                "require_approval": approval,
            }
        )
    return {
        "version": 1,
        "generated_by": f"auditor {__version__}",
        "generated_at": iso(result.generated_at),
        "windows": {p: window_dict(w) for p, w in sorted(result.data.windows.items())},
        "identities": identities,
    }


#: libyaml's emitter when PyYAML was built with it (10x faster on large blocklists).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.dump(document, Dumper=_DUMPER, sort_keys=False, width=120, allow_unicode=True)
