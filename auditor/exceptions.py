"""Accepted exceptions: findings a team has acknowledged, each for a limited time.

An exceptions file (YAML or JSON) lists entries of an identity (ARN, name or glob), the
permissions (globs) or the kind of finding it accepts, why, and until when::

    version: 1
    exceptions:
      - identity: "arn:aws:iam::123456789012:role/agents/deploy-agent"
        permissions: ["lambda:UpdateFunctionCode"]
        kind: used-destructive          # optional: only findings of this kind
        reason: "deploys are its job; reviewed by J. Doe"
        expires: 2027-01-31             # accepted through that day (UTC)

A finding is accepted when an active entry of its identity covers it whole: every permission it
lists (across the identity's entries of that kind), or, for a finding that lists none (an admin
grant, a dormant identity), an entry naming its kind. Accepted findings stay in the report,
marked, and no longer fail ``--fail-on``; once the entry expires the finding is open again and
says so. Nothing here changes the blocklist or the policies: an exception is a review decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import polars as pl

from auditor.errors import InputError
from auditor.matching import any_glob_regex
from auditor.ruleset import load_yaml

EXCEPTION = pl.Struct({"status": pl.Utf8, "reason": pl.Utf8, "expires": pl.Utf8, "entry": pl.Utf8})
FIELDS = {"identity", "permissions", "kind", "reason", "expires"}


@dataclass(frozen=True)
class Entry:
    """One entry of an exceptions file."""

    identity: str
    permissions: tuple[str, ...]
    kind: str | None
    reason: str
    expires: date
    where: str  # "<file> entry <n>", shown in the report

    def covers_identity(self, identity: str, name: str) -> bool:
        return fnmatchcase(identity, self.identity) or fnmatchcase(name, self.identity)

    def active(self, today: date) -> bool:
        return today <= self.expires


@dataclass(frozen=True)
class Status:
    """What became of one entry in this audit: the findings it accepted (or, expired, would have)."""

    entry: Entry
    status: str  # "active", "expired" or "unmatched" (an active entry that covered nothing)
    findings: int

    def as_dict(self) -> dict[str, Any]:
        e = self.entry
        return {
            "entry": e.where,
            "identity": e.identity,
            "permissions": list(e.permissions),
            "kind": e.kind,
            "reason": e.reason,
            "expires": e.expires.isoformat(),
            "status": self.status,
            "findings": self.findings,
        }


def load(path: Path) -> tuple[Entry, ...]:
    """Read and check an exceptions file; a one-line InputError naming the entry otherwise."""
    if not path.is_file():
        raise InputError(f"{path}: no such exceptions file", "pass --exceptions FILE (YAML, see the README)")
    try:
        doc = load_yaml(path)
    except Exception as exc:  # RuleError from the shared YAML reader: the same one line, as an input error
        raise InputError(str(exc), "fix the exceptions file") from None
    if doc.get("version") != 1 or not isinstance(doc.get("exceptions"), list):
        raise InputError(f"{path}: expected 'version: 1' and an 'exceptions' list", "see the README's Exceptions")
    return tuple(_entry(raw, f"{path} entry {index + 1}") for index, raw in enumerate(doc["exceptions"]))


def _entry(raw: Any, where: str) -> Entry:
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a mapping, got {type(raw).__name__}", "see the README's Exceptions")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise InputError(
            f"{where}: unknown field(s) {', '.join(map(str, unknown))}", f"use {', '.join(sorted(FIELDS))}"
        )
    identity, reason, kind = raw.get("identity"), raw.get("reason"), raw.get("kind")
    permissions = raw.get("permissions", [])
    if isinstance(permissions, str):
        permissions = [permissions]
    if not isinstance(identity, str) or not identity:
        raise InputError(f"{where}: 'identity' must be a non-empty string (ARN, name or glob)", "fix the entry")
    if not isinstance(reason, str) or not reason.strip():
        raise InputError(f"{where}: 'reason' is required", "say why the finding is accepted")
    if kind is not None and not isinstance(kind, str):
        raise InputError(f"{where}: 'kind' must be a finding kind such as used-destructive", "fix the entry")
    if not isinstance(permissions, list) or not all(isinstance(p, str) and p for p in permissions):
        raise InputError(f"{where}: 'permissions' must be a list of permission globs", "fix the entry")
    if not permissions and kind is None:
        raise InputError(f"{where}: give 'permissions', 'kind' or both", "an entry must say what it accepts")
    return Entry(identity, tuple(permissions), kind, reason.strip(), _expiry(raw.get("expires"), where), where)


def _expiry(value: Any, where: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InputError(f"{where}: 'expires' must be a date (YYYY-MM-DD)", "every exception is accepted for a time")


def apply(findings: pl.DataFrame, entries: Sequence[Entry], now: datetime) -> tuple[pl.DataFrame, tuple[Status, ...]]:
    """``findings`` with an ``exception`` column (accepted / expired / null), and each entry's status."""
    if not entries:  # nothing to match: the findings' long action lists need not leave polars
        return findings.with_columns(pl.lit(None, dtype=EXCEPTION).alias("exception")), ()
    today = now.date()
    marks: list[dict[str, str] | None] = []
    counts = [0] * len(entries)
    for row in findings.select("identity", "name", "kind", "actions").iter_rows(named=True):
        mine = [
            (i, e)
            for i, e in enumerate(entries)
            if (e.kind is None or e.kind == row["kind"]) and e.covers_identity(row["identity"], row["name"])
        ]
        live = [(i, e) for i, e in mine if e.active(today)]
        used = _covering(live, row["actions"] or [])
        if used:
            for i in used:
                counts[i] += 1
            first = entries[used[0]]
            marks.append(_mark("accepted", first, min(entries[i].expires for i in used)))
            continue
        lapsed = _covering([(i, e) for i, e in mine if not e.active(today)], row["actions"] or [])
        for i in lapsed:
            counts[i] += 1
        marks.append(_mark("expired", entries[lapsed[0]], entries[lapsed[0]].expires) if lapsed else None)
    statuses = tuple(
        Status(e, "expired" if not e.active(today) else ("active" if counts[i] else "unmatched"), counts[i])
        for i, e in enumerate(entries)
    )
    return findings.with_columns(pl.Series("exception", marks, dtype=EXCEPTION)), statuses


def _covering(candidates: list[tuple[int, Entry]], actions: list[str]) -> list[int]:
    """The entries that together cover a finding whole (positions), or none."""
    if not candidates:
        return []
    if not actions:
        named = [i for i, e in candidates if e.kind is not None and (not e.permissions or "*" in e.permissions)]
        return named[:1]
    pattern = any_glob_regex(p for _, e in candidates for p in e.permissions)
    if not all(pattern.fullmatch(a) for a in actions):
        return []
    return [
        i for i, e in candidates if e.permissions and any(any_glob_regex(e.permissions).fullmatch(a) for a in actions)
    ]


def _mark(status: str, entry: Entry, expires: date) -> dict[str, str]:
    return {"status": status, "reason": entry.reason, "expires": expires.isoformat(), "entry": entry.where}


def open_findings(findings: pl.DataFrame) -> pl.DataFrame:
    """The findings no active exception accepts."""
    if "exception" not in findings.columns:
        return findings
    return findings.filter(pl.col("exception").struct.field("status").fill_null("") != "accepted")
