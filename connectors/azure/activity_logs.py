"""Azure usage: fold Activity Log records into per-(subscription, principal, operation, outcome) counters.

A request logs several records (Started, Accepted, Succeeded/Failed) sharing an ``operationId``
(else a ``correlationId``): each counts once, wherever it was read (a file and another export of
it included). Outcomes: a record refused by authorization (``Failed`` with ``Forbidden``,
``AuthorizationFailed``...) is a denied attempt; any other record of an Administrative operation
means the permission check passed (a ``Failed`` conflict or quota error included), so it is used.
Records of other categories (Policy, ServiceHealth, ...) are not calls of the caller and are skipped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from auditor.connectors.azure.activity_records import NotActivityLog, Record, decode, normalize
from auditor.connectors.azure.rules import AzureRules
from auditor.connectors.log_scan import (
    EventClock,
    ScanCounters,
    batches_of,
    dated_records,
    fold_files,
    newest_event,
    problem_row,
)
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP, read_input, walk_files

EVIDENCE = "activity-log"
MAX_RESOURCES = 64
LOG_SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
UNKNOWN_OPERATION = "not among the provider operations of the snapshot (export `az provider operation list`)"


@dataclass(frozen=True)
class ScanOptions:
    start: str  # "YYYY-MM-DDTHH:MM:SSZ", inclusive
    end: str
    identities: frozenset[str] | None  # object ids to aggregate (None: all)
    app_ids: Mapping[str, str]  # app id -> object id, for records whose claims carry only the appid
    operations: Mapping[str, str]  # lower-case -> catalog spelling
    rules: AzureRules
    cap: str = "9999-12-31T23:59:59Z"
    max_file_bytes: int = DEFAULT_CAP


@dataclass
class Partial(ScanCounters):
    """usage per (subscription, principal, operation, outcome, evidence) -> [calls, first, last, scopes]."""

    record_noun: ClassVar[tuple[str, str]] = ("Activity Log record", "Activity Log records")

    usage: dict[tuple[str, str, str, str, str], list[Any]] = field(default_factory=dict)

    def merge(self, other: Partial) -> None:
        super().merge(other)
        for key, (calls, first, last, scopes) in other.usage.items():
            mine = self.usage.get(key)
            if mine is None:
                self.usage[key] = [calls, first, last, scopes]
                continue
            mine[0] += calls
            mine[1], mine[2] = min(mine[1], first), max(mine[2], last)
            mine[3] = mine[3] | scopes if len(mine[3]) < MAX_RESOURCES else mine[3]


def find_log_files(paths: Sequence[Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Every log file below ``paths`` (a file named explicitly is always read) and GAPS rows for
    what could not be looked at."""
    for root in paths:
        if not root.exists() and not root.is_symlink():
            raise InputError(f"{root}: no such file or directory", "pass the folder holding the Activity Log export")
    found = [p for p in paths if p.is_file()]
    files, problems = walk_files([p for p in paths if not p.is_file()])
    found += [p for p in files if p.name.endswith(LOG_SUFFIXES)]
    return sorted(set(found)), [problem_row(path, reason) for path, reason in problems]


def _principal(record: Record, options: ScanOptions) -> str | None:
    if record.principal:
        return record.principal
    if record.app_id and record.app_id in options.app_ids:
        return options.app_ids[record.app_id]
    return None


def fold(records: Sequence[Any], options: ScanOptions, out: Partial, origin: str) -> None:
    start, end, keep = options.start, options.end, options.identities
    for record, when in dated_records(records, normalize, options.cap, out, origin):
        scope = record.subscription or "?"
        out.saw(scope, when, when, {when[:10]: 1})
        if when < start or when > end:
            continue
        out.in_window[scope] = out.in_window.get(scope, 0) + 1
        if record.category and record.category.lower() != "administrative":
            out.skip(f"{record.category} record (not a call)", scope=scope)
            continue
        principal = _principal(record, options)
        if principal is None:
            out.skip("no caller object id or app id", scope=scope)
            continue
        if keep is not None and principal not in keep:
            continue
        _count(record, principal, scope, when, options, out)


def _count(record: Record, principal: str, scope: str, when: str, options: ScanOptions, out: Partial) -> None:
    operation = options.operations.get(record.operation.lower())
    if operation is None:
        key4 = (scope, principal, record.operation, UNKNOWN_OPERATION)
        out.unmapped[key4] = out.unmapped.get(key4, 0) + 1
        return
    denied = record.status == "failed" and options.rules.is_authorization_failure(*record.signals)
    key = (scope, principal, operation, "denied" if denied else "used", EVIDENCE)
    request = record.operation_id or record.event_id or f"{when}/{record.scope}"
    out.seen(key, hash((request.lower(), operation)))
    counter = out.usage.get(key)
    if counter is None:
        out.usage[key] = [1, when, when, {record.scope} if record.scope else set()]
        return
    counter[0] += 1
    counter[1], counter[2] = min(counter[1], when), max(counter[2], when)
    if record.scope and len(counter[3]) < MAX_RESOURCES:
        counter[3].add(record.scope)


def _records(path: Path, max_file_bytes: int, out: Partial) -> list[Any]:
    origin = str(path)
    return decode(read_input(path, max_file_bytes), lambda where, exc: out.bad_record(origin, where, exc))


def read_file(path: Path, options: ScanOptions) -> Partial:
    """Fold one file; an unreadable file becomes a gap, never an exception."""
    out = Partial()
    try:
        records = _records(path, options.max_file_bytes, out)
    except (InputError, OSError, NotActivityLog) as exc:
        return out.unreadable(str(path), exc)
    fold(records, options, out, str(path))
    out.file_done()
    return out


def scan(
    files: Sequence[Path],
    options: ScanOptions,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Partial:
    return fold_files(
        files, batches_of(functools.partial(read_file, options=options), Partial), Partial(), workers, progress
    )


def _newest_in(path: Path, cap: str, max_file_bytes: int) -> str:
    clock = EventClock(cap)
    try:
        records = _records(path, max_file_bytes, Partial())
    except (InputError, OSError, NotActivityLog):
        return ""
    newest = ""
    for raw in records:
        try:
            when = clock.canonical(normalize(raw).time)
        except (ValueError, TypeError, AttributeError):
            continue
        if when is not None and when <= cap and when > newest:
            newest = when
    return newest


def newest_record_time(files: Sequence[Path], cap: str, workers: int | None, max_file_bytes: int = DEFAULT_CAP) -> str:
    return newest_event(files, functools.partial(_newest_in, cap=cap, max_file_bytes=max_file_bytes), cap, workers)
