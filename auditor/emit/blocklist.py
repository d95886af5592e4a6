"""The blocklist a tool-call policy enforcement point loads: hard blocks and approval gates.

Per identity, ``deny`` lists destructive permissions that are granted but were never successfully
used — unused, or only attempted and refused (block them in code) —, and ``require_approval`` lists
destructive permissions that were used, or that the logs cannot show (route them through a human
approval gate). A destructive permission is always in exactly one of the two. Agents' tool-layer
identities (provider ``tools``) also list ``allow``: the tools they may call without approval
(:mod:`auditor.emit.tool_decisions`). Schema:
``auditor/schemas/blocklist.schema.json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from auditor import __version__
from auditor.emit import tool_decisions
from auditor.timefmt import iso, window_dict

if TYPE_CHECKING:
    from auditor.audit import AuditResult

HEADER = """\
# auditor blocklist: load it at the tool-call policy enforcement point.
# Per identity: `deny` = destructive permissions granted but never successfully used in the window
# (unused, or only refused: hard block);
# `require_approval` = destructive permissions that were used, or that the logs cannot show
# (route through a human approval gate); tool-layer agents also `allow` = tools callable without approval.
# Permission names compare case-insensitively.
# JSON Schema: auditor/schemas/blocklist.schema.json
"""


#: States whose destructive permissions are hard-denied (never successfully used).
BLOCKED_STATES = ("unused", "denied")


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
    destructive = (  # only the columns read below: the big list columns are not copied
        result.permissions.lazy()
        .filter(pl.col("granted") & pl.col("destructive"))
        .select(
            "provider",
            "identity",
            "action",
            "state",
            "calls",
            "last_seen",
            "destructive_rule",
            "destructive_category",
            "destructive_severity",
            "destructive_reason",
            "unobservable_reason",
        )
        .sort("action")
        .collect()
    )
    blocked = destructive.filter(pl.col("state").is_in(BLOCKED_STATES))
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in (
        blocked.group_by(["provider", "identity", "destructive_rule"], maintain_order=True)
        .agg(
            pl.col("destructive_category").first(),
            pl.col("destructive_severity").first(),
            pl.col("destructive_reason").first(),
            pl.col("action").sort(),
        )
        .sort("destructive_rule")
        .iter_rows(named=True)
    ):
        group = _deny_group(row)
        group["permissions"] = row["action"]
        groups[(row["provider"], row["identity"])].append(group)
    gated: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in destructive.filter(~pl.col("state").is_in(BLOCKED_STATES)).iter_rows(named=True):
        gated[(row["provider"], row["identity"])].append(_approval(row))
    allowed = {i: d.allow for i, d in tool_decisions.tool_decisions(result).items()}
    identities = []
    for audit in result.audits:
        deny_groups = {g["rule"]: g for g in groups.get((audit.provider, audit.identity), [])}
        approval = gated.get((audit.provider, audit.identity), [])
        identities.append(
            {
                "provider": audit.provider,
                "account": audit.account,
                "identity": audit.identity,
                "name": audit.name,
                "deny": sorted(deny_groups.values(), key=lambda g: g["rule"]),
                "require_approval": approval,
                **({"allow": allowed.get(audit.identity, [])} if audit.provider == tool_decisions.PROVIDER else {}),
            }
        )
    return {
        "version": 1,
        "generated_by": f"auditor {__version__}",
        "generated_at": iso(result.generated_at),
        "windows": {p: window_dict(w) for p, w in sorted(result.data.windows.items())},
        "identities": identities,
        # last, so that a file cut off at any line break is told apart from a whole one (the guard refuses it)
        "complete": True,
    }


def render(document: dict[str, Any]) -> str:
    return HEADER + "".join(_yaml(document, 0)) + "\n"


def _scalar(value: Any) -> str:
    """A YAML scalar: strings as JSON strings (valid YAML double-quoted scalars, nothing to escape by hand)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return orjson.dumps(str(value)).decode()


def _yaml(value: Any, indent: int) -> Iterator[str]:
    """Block-style YAML of dicts, lists and scalars (the blocklist can hold 100,000s of permissions:
    a generic dumper is the slow part there)."""
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                yield f"{pad}{key}:\n"
                yield from _yaml(item, indent + 2)
            else:
                empty = "{}" if isinstance(item, dict) else "[]" if isinstance(item, list) else _scalar(item)
                yield f"{pad}{key}: {empty}\n"
    elif isinstance(value, list):
        if all(type(item) is str for item in value):  # permission lists: the bulk of the file
            dumps = orjson.dumps
            yield "".join([f"{pad}- {dumps(item).decode()}\n" for item in value])
            return
        for item in value:
            if isinstance(item, dict) and item:
                lines = list(_yaml(item, indent + 2))
                yield f"{pad}- {lines[0].lstrip()}"
                yield from lines[1:]
            else:
                yield f"{pad}- {_scalar(item)}\n"
    else:
        yield f"{pad}{_scalar(value)}\n"
