"""Drift between two audits: what changed per identity since the previous month's run.

An audit is read back from its ``report.json`` (a file, or the ``--out`` folder holding it) and,
when it sits beside it, ``permissions.parquet``: the table says which policy, binding or assignment
grants each permission, so new grants are attributed to who added them. From ``report.json``
alone the permission states are rebuilt from the used permissions and the findings' lists (which
name every unused, unobservable and denied permission); grants are then attributed per identity.

Findings are compared item by item: an escalation path by its method, a finding that lists
permissions by each permission, any other finding by its kind and rule. A finding is *opened* when
it has an item the previous audit did not, *closed* when an item is gone; ``--fail-on-new`` gates
on opened findings that no exception accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from auditor.errors import InputError
from auditor.fileio import load_json
from auditor.ruleset import SEVERITY_RANK

SCHEMA = "auditor.drift/v1"
REPORT_SCHEMA = "auditor.report/v1"
KEYS = ["provider", "identity"]
PERMISSIONS = {
    "provider": pl.Utf8,
    "identity": pl.Utf8,
    "action": pl.Utf8,
    "granted": pl.Boolean,  # null: not known from report.json alone (a denied attempt)
    "state": pl.Utf8,
    "destructive": pl.Boolean,
    "grant_sources": pl.List(pl.Utf8),  # null: report.json alone does not say
}
#: The permission state each finding kind's list names (report.json alone).
STATE_OF_FINDING = {
    "unused-destructive": ("unused", True),
    "unused-grant": ("unused", False),
    "unobservable-grant": ("unobservable", None),
    "used-destructive": ("used", True),
    "denied-attempt": ("denied", None),
}


@dataclass(frozen=True)
class Audit:
    """One audit as drift reads it: its report and its permission table (see ``PERMISSIONS``)."""

    report: dict[str, Any]
    permissions: pl.DataFrame
    origin: str
    attributed: bool  # the table carries per-permission grant sources


def load(path: Path) -> Audit:
    """Read an audit back from its ``report.json`` or output folder."""
    report_path = path / "report.json" if path.is_dir() else path
    if not report_path.is_file():
        raise InputError(f"{path}: no report.json", "pass an audit's --out folder or its report.json")
    report = load_json(report_path, "an auditor report.json")
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        raise InputError(
            f"{report_path}: not an auditor report ({REPORT_SCHEMA})", "pass the report.json an audit wrote"
        )
    table = report_path.parent / "permissions.parquet"
    if table.is_file():
        try:
            frame = pl.read_parquet(table, columns=list(PERMISSIONS))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(f"{table}: unreadable ({exc})", "remove it to compare report.json alone") from None
        return Audit(report, frame.select([pl.col(c).cast(t) for c, t in PERMISSIONS.items()]), str(path), True)
    return Audit(report, permissions_of_report(report), str(path), False)


def of_result(report: dict[str, Any], permissions: pl.DataFrame, origin: str) -> Audit:
    """The audit just run, from its in-memory report and permission table."""
    return Audit(report, permissions.select([pl.col(c).cast(t) for c, t in PERMISSIONS.items()]), origin, True)


def permissions_of_report(report: dict[str, Any]) -> pl.DataFrame:
    """The permission states a report.json names (used permissions first, then the findings' lists)."""
    rows: list[tuple[Any, ...]] = []
    for ident in report.get("identities", []):
        for p in ident.get("used_permissions", []):
            rows.append(
                (
                    ident["provider"],
                    ident["identity"],
                    p["action"],
                    p.get("granted"),
                    "used",
                    p.get("destructive"),
                    None,
                )
            )
    for f in report.get("findings", []):
        state = STATE_OF_FINDING.get(f["kind"])
        if state is None:
            continue
        granted = None if state[0] == "denied" else True
        rows += [(f["provider"], f["identity"], a, granted, state[0], state[1], None) for a in f.get("actions") or []]
    frame = pl.DataFrame(rows, schema=PERMISSIONS, orient="row")
    return frame.unique(["provider", "identity", "action"], keep="first", maintain_order=True)


def drift(previous: Audit, new: Audit) -> dict[str, Any]:
    """The drift document (``auditor.drift/v1``) from ``previous`` to ``new``."""
    before = {(i["provider"], i["identity"]): i for i in previous.report["identities"]}
    after = {(i["provider"], i["identity"]): i for i in new.report["identities"]}
    audited_both = set(previous.report["windows"]) & set(new.report["windows"])
    changes = _permission_changes(previous.permissions, new.permissions)
    opened, closed = _finding_changes(previous.report["findings"], new.report["findings"])
    identities = []
    for key in sorted(before.keys() | after.keys()):
        old, now = before.get(key), after.get(key)
        if now is None and key[0] not in audited_both:  # its cloud was not audited now: no evidence of removal
            identities.append({**_identity(key, old, old, {}, [], []), "status": "not-audited"})
            continue
        identities.append(_identity(key, old, now, changes.get(key, {}), opened.get(key, []), closed.get(key, [])))
    counted = {(i["provider"], i["identity"]) for i in identities if i["status"] != "not-audited"}
    new_open = [f for key in opened for f in opened[key] if not f["accepted"]]
    return {
        "schema": SCHEMA,
        "previous": _about(previous),
        "new": _about(new),
        "warnings": _warnings(previous, new),
        "summary": {
            "identities": {s: sum(1 for i in identities if i["status"] == s) for s in _STATUSES},
            "permissions_added": sum(len(i["permissions_added"]) for i in identities),
            "permissions_removed": sum(len(i["permissions_removed"]) for i in identities),
            "newly_used": sum(len(i["newly_used"]) for i in identities),
            "newly_unused": sum(len(i["newly_unused"]) for i in identities),
            "new_destructive": sum(len(i["new_destructive"]) for i in identities),
            "findings_opened": _severity_counts(new_open),
            "findings_closed": _severity_counts(f for key in closed if key in counted for f in closed[key]),
            "unused_percent": {
                "previous": _unused_share(previous.report),
                "new": _unused_share(new.report),
            },
        },
        "identities": identities,
    }


_STATUSES = ("new", "removed", "not-audited", "changed", "unchanged")


def opened_at_or_above(summary: dict[str, Any], level: str) -> int:
    """How many opened findings (not accepted) of a drift summary are at or above ``level``."""
    rank = SEVERITY_RANK[level]
    return sum(n for severity, n in summary["findings_opened"].items() if SEVERITY_RANK[severity] >= rank)


def _about(audit: Audit) -> dict[str, Any]:
    return {
        "origin": audit.origin,
        "generated_at": audit.report.get("generated_at"),
        "windows": audit.report.get("windows", {}),
        "grants_attributed": audit.attributed,
    }


def _warnings(previous: Audit, new: Audit) -> list[str]:
    found = []
    for provider, window in new.report["windows"].items():
        old = previous.report["windows"].get(provider)
        if old and old["end"] >= window["end"]:
            found.append(f"{provider}: the previous audit's window ends {old['end']}, not before the new one's")
    for provider in sorted(set(previous.report["windows"]) - set(new.report["windows"])):
        found.append(f"{provider}: audited before, not now; its identities are not-audited, not removed")
    if not previous.attributed or not new.attributed:
        found.append("permissions.parquet missing beside a report.json: new grants are attributed per identity only")
    return found


def _permission_changes(before: pl.DataFrame, after: pl.DataFrame) -> dict[tuple[str, str], dict[str, list]]:
    """Per identity: permissions added / removed, newly used / unused, new destructive grants (joined in polars)."""
    keys = [*KEYS, "action"]
    joined = before.join(after, on=keys, how="full", coalesce=True, suffix="_new")
    was_granted = pl.col("granted").fill_null(False)
    is_granted = pl.col("granted_new").fill_null(False)
    flags = {
        "permissions_added": is_granted & ~was_granted,
        "permissions_removed": was_granted & ~is_granted,
        "newly_used": (pl.col("state_new") == "used") & (pl.col("state").fill_null("") != "used"),
        "newly_unused": (pl.col("state") == "used") & (pl.col("state_new") == "unused"),
        "new_destructive": is_granted
        & pl.col("destructive_new").fill_null(False)
        & ~(was_granted & pl.col("destructive").fill_null(False)),
    }
    out: dict[tuple[str, str], dict[str, list]] = {}
    for name, flag in flags.items():
        chosen = joined.filter(flag)
        if name == "permissions_added":
            grouped = chosen.group_by(KEYS).agg(
                pl.struct(pl.col("action"), pl.col("grant_sources_new").alias("sources")).sort_by("action")
            )
        else:
            grouped = chosen.group_by(KEYS).agg(pl.col("action").sort())
        for provider, identity, values in grouped.iter_rows():
            out.setdefault((provider, identity), {})[name] = values
    return out


def _subjects(finding: dict[str, Any]) -> list[str]:
    if finding["kind"] == "privilege-escalation" and finding.get("rule"):
        return finding["rule"].split(",")
    return list(finding.get("actions") or []) or [""]


def finding_key(finding: dict[str, Any]) -> tuple[str, str, str, str]:
    rule = "" if finding["kind"] == "privilege-escalation" else finding.get("rule") or ""
    return finding["provider"], finding["identity"], finding["kind"], rule


def _finding_changes(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> tuple[dict[tuple[str, str], list[dict[str, Any]]], dict[tuple[str, str], list[dict[str, Any]]]]:
    """Opened and closed findings per identity: a finding is opened by the items (see ``_subjects``) no
    finding of its kind and rule had before, closed by those none has now."""
    return _gained(after, _items(before)), _gained(before, _items(after))


def _items(findings: list[dict[str, Any]]) -> dict[tuple[str, str, str, str], set[str]]:
    """Every item of the findings, per (provider, identity, kind, rule): several findings may share a
    key (one used-destructive finding per permission), so their items are united."""
    items: dict[tuple[str, str, str, str], set[str]] = {}
    for finding in findings:
        items.setdefault(finding_key(finding), set()).update(_subjects(finding))
    return items


def _gained(
    findings: list[dict[str, Any]], other: dict[tuple[str, str, str, str], set[str]]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for finding in findings:
        key = finding_key(finding)
        extra = set(_subjects(finding)) - other.get(key, set())
        if extra:
            found.setdefault(key[:2], []).append(_change(finding, extra))
    return found


def _change(finding: dict[str, Any], subjects: Iterable[str]) -> dict[str, Any]:
    exception = finding.get("exception") or {}
    return {
        "kind": finding["kind"],
        "rule": finding.get("rule"),
        "severity": finding["severity"],
        "title": finding["title"],
        "subjects": sorted(s for s in subjects if s),
        "accepted": exception.get("status") == "accepted",
    }


def _identity(
    key: tuple[str, str],
    old: dict[str, Any] | None,
    now: dict[str, Any] | None,
    changes: dict[str, list],
    opened: list[dict[str, Any]],
    closed: list[dict[str, Any]],
) -> dict[str, Any]:
    shown = now or old
    assert shown is not None
    sources_before = set(old["grant_sources"]) if old else set()
    sources_after = set(now["grant_sources"]) if now else set()
    entry = {
        "provider": key[0],
        "account": shown["account"],
        "identity": key[1],
        "name": shown["name"],
        "grant_sources_added": sorted(sources_after - sources_before),
        "grant_sources_removed": sorted(sources_before - sources_after),
        **{name: changes.get(name, []) for name in _PERMISSION_CHANGES},
        "findings_opened": sorted(opened, key=_severity_order),
        "findings_closed": sorted(closed, key=_severity_order),
        "escalation_opened": sorted(s for f in opened if f["kind"] == "privilege-escalation" for s in f["subjects"]),
        "escalation_closed": sorted(s for f in closed if f["kind"] == "privilege-escalation" for s in f["subjects"]),
        "unused_percent": {
            "previous": old["unused_percent"] if old else None,
            "new": now["unused_percent"] if now else None,
        },
    }
    entry["status"] = "new" if old is None else "removed" if now is None else _changed(entry)
    return entry


_PERMISSION_CHANGES = ("permissions_added", "permissions_removed", "newly_used", "newly_unused", "new_destructive")


def _changed(entry: dict[str, Any]) -> str:
    lists = ("grant_sources_added", "grant_sources_removed", *_PERMISSION_CHANGES, "findings_opened", "findings_closed")
    return "changed" if any(entry[name] for name in lists) else "unchanged"


def _severity_order(finding: dict[str, Any]) -> tuple[int, str]:
    return -SEVERITY_RANK[finding["severity"]], finding["kind"]


def _severity_counts(findings: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(sorted(SEVERITY_RANK, key=SEVERITY_RANK.get, reverse=True), 0)
    for finding in findings:
        counts[finding["severity"]] += 1
    return counts


def _unused_share(report: dict[str, Any]) -> float:
    summary = report.get("summary", {})
    granted = summary.get("granted") or 0
    return round(100 * (summary.get("unused") or 0) / granted, 1) if granted else 0.0


def dumps(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
