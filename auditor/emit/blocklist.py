"""The blocklist a tool-call policy enforcement point loads: hard blocks and approval gates.

Per identity, ``deny`` lists destructive permissions that are granted but were never used (block
them in code), and ``require_approval`` lists destructive permissions that were used, or that the
logs cannot show (route them through a human approval gate). Schema:
``auditor/schemas/blocklist.schema.json``.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import yaml

from auditor import __version__
from auditor.audit import AuditResult
from auditor.timefmt import iso, window_dict

HEADER = """\
# auditor blocklist: load it at the tool-call policy enforcement point.
# Per identity: `deny` = destructive permissions granted but never used in the window (hard block);
# `require_approval` = destructive permissions that were used, or that the logs cannot show
# (route through a human approval gate). Permission names compare case-insensitively.
# JSON Schema: auditor/schemas/blocklist.schema.json
"""


def blocklist(result: AuditResult) -> dict[str, Any]:
    destructive = result.permissions.filter(pl.col("granted") & pl.col("destructive"))
    identities = []
    for audit in result.audits:
        rows = destructive.filter((pl.col("provider") == audit.provider) & (pl.col("identity") == audit.identity))
        deny_groups: dict[str, dict[str, Any]] = {}
        approval = []
        for row in rows.sort("action").iter_rows(named=True):
            if row["state"] == "unused":
                group = deny_groups.setdefault(
                    row["destructive_rule"],
                    {
                        "rule": row["destructive_rule"],
                        "category": row["destructive_category"],
                        "severity": row["destructive_severity"],
                        "reason": row["destructive_reason"],
                        "permissions": [],
                    },
                )
                group["permissions"].append(row["action"])
            elif row["state"] in ("used", "unobservable"):
                why = (
                    f"used {row['calls']} time(s) in the window"
                    if row["state"] == "used"
                    else f"the logs cannot show its use: {row['unobservable_reason']}"
                )
                approval.append(
                    {
                        "permission": row["action"],
                        "rule": row["destructive_rule"],
                        "category": row["destructive_category"],
                        "severity": row["destructive_severity"],
                        "reason": f"{row['destructive_reason']}; {why}",
                        "evidence": row["state"],
                        "calls": int(row["calls"]),
                        "last_used": iso(row["last_seen"]),
                    }
                )
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
        "window": window_dict(result.data.window),
        "identities": identities,
    }


#: libyaml's emitter when PyYAML was built with it (10x faster on large blocklists).
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.dump(document, Dumper=_DUMPER, sort_keys=False, width=120, allow_unicode=True)
