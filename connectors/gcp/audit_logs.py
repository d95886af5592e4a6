"""GCP usage: stream Cloud Audit Log entries into aggregated counters, in parallel, in bounded memory.

Reads ``gcloud logging read --format=json`` output (a JSON array), the REST ``entries.list`` page
shape (``{"entries": [...]}``) and the newline-delimited files a Cloud Storage log sink writes
(``cloudaudit.googleapis.com/activity/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json``), gzipped or not. Each
entry is decoded with a typed msgspec schema holding only the fields the audit reads, then folded
into per-(project, principal, permission, outcome) counters; only counters cross process boundaries.

Use is ``authorizationInfo[].permission`` with ``granted: true``; absent ``granted`` means false
(proto3 omits false), i.e. "attempted, denied". Entries without ``authorizationInfo`` and GKE
``k8s.io`` pseudo-permissions are counted and listed, never guessed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from auditor.connectors.gcp.audit_records import (
    AuthN,
    AuthZ,
    Entry,
    Payload,
    ServiceData,
    decode,
    looks_like_audit_log,
)
from auditor.connectors.log_scan import EventClock, ScanCounters, batches_of, fold_files, newest_event, problem_row
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP, read_input, walk_files

#: Cap on distinct resources remembered per (principal, permission), as for CloudTrail.
MAX_RESOURCES = 64
LOG_SUFFIXES = (".json", ".json.gz", ".ndjson", ".ndjson.gz", ".jsonl", ".jsonl.gz")
K8S_SERVICE = "k8s.io"
EVIDENCE = "audit-log"


@dataclass(frozen=True)
class ScanOptions:
    start: str  # "YYYY-MM-DDTHH:MM:SSZ", inclusive
    end: str  # inclusive
    identities: frozenset[str] | None  # principals to aggregate (None: all)
    cap: str = "9999-12-31T23:59:59Z"  # later entries are input problems, never part of the window
    max_file_bytes: int = DEFAULT_CAP  # a log file larger than this once decompressed is skipped, listed


#: How many permissions one method is remembered to check (a call checks a handful at most).
MAX_METHOD_PERMISSIONS = 16


@dataclass
class Partial(ScanCounters):
    """Counters from some files: usage per (project, principal, permission, outcome, evidence)
    holds [calls, first, last, resources]; plus impersonation chains, audit-config changes, the
    calls logged without ``authorizationInfo`` per (project, principal, service, method) as
    [calls, first, last], the permissions every logged call of a method checked (to map those
    calls), and every permission the logs show at all (what they demonstrably record)."""

    record_noun: ClassVar[tuple[str, str]] = ("log entry", "log entries")

    usage: dict[tuple[str, str, str, str, str], list[Any]] = field(default_factory=dict)
    delegations: dict[tuple[str, str, str], int] = field(default_factory=dict)
    audit_changes: set[tuple[str, str, str, str, str]] = field(default_factory=set)  # project, time, action, svc, type
    unchecked: dict[tuple[str, str, str, str], list[Any]] = field(default_factory=dict)
    # operation id -> (key, time) of entries without a check: the rest of an operation whose first
    # entry was checked is not a call of its own (dropped once the whole scan is merged)
    unchecked_operations: dict[str, list[tuple[tuple[str, str, str, str], str]]] = field(default_factory=dict)
    checked_operations: set[str] = field(default_factory=set)
    method_checks: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    seen_permissions: set[str] = field(default_factory=set)

    def merge(self, other: Partial) -> None:
        super().merge(other)
        for key, (calls, first, last, resources) in other.usage.items():
            mine = self.usage.get(key)
            if mine is None:
                self.usage[key] = [calls, first, last, resources]
                continue
            mine[0] += calls
            mine[1] = min(mine[1], first)
            mine[2] = max(mine[2], last)
            mine[3] = _capped(mine[3] | resources)
        for key, count in other.delegations.items():
            self.delegations[key] = self.delegations.get(key, 0) + count
        self.audit_changes |= other.audit_changes
        for op, entries in other.unchecked_operations.items():
            self.unchecked_operations.setdefault(op, []).extend(entries)
        self.checked_operations |= other.checked_operations
        for key, (calls, first, last) in other.unchecked.items():
            mine = self.unchecked.get(key)
            if mine is None:
                self.unchecked[key] = [calls, first, last]
            else:
                mine[0] += calls
                mine[1], mine[2] = min(mine[1], first), max(mine[2], last)
        for key, checks in other.method_checks.items():
            self.method_checks[key] = self.method_checks[key] & checks if key in self.method_checks else checks
        self.seen_permissions |= other.seen_permissions


def _capped(resources: set[str]) -> set[str]:
    return resources if len(resources) <= MAX_RESOURCES else set(sorted(resources)[:MAX_RESOURCES])


def find_log_files(paths: Sequence[Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Every log file below ``paths``, sorted, and what could not be looked at (GAPS rows). A file
    named explicitly is always read; inside a folder, by name (``.json``, ``.ndjson``, ``.jsonl``,
    optionally gzipped) or, for other names, when its content shows Cloud Logging entries."""
    for root in paths:
        if not root.exists() and not root.is_symlink():
            raise InputError(f"{root}: no such file or directory", "pass the folder holding the exported audit logs")
    found = [p for p in paths if p.is_file()]
    files, problems = walk_files([p for p in paths if not p.is_file()])
    for path in files:
        try:
            if path.name.endswith(LOG_SUFFIXES) or looks_like_audit_log(path):
                found.append(path)
        except InputError as exc:
            problems.append((path, str(exc)))
    gaps = [problem_row(path, reason) for path, reason in problems]
    return sorted(found), gaps


# ----------------------------------------------------------------------------- folding


def project_of(entry: Entry) -> str:
    name = entry.logName
    if name.startswith("projects/"):
        return name[9 : name.find("/", 9)] if name.find("/", 9) > 0 else name[9:]
    labels = entry.resource.labels if entry.resource else None
    return (labels or {}).get("project_id") or "?"


def _chain(authn: AuthN) -> str | None:
    infos = authn.serviceAccountDelegationInfo
    if not infos:
        return None
    callers = []
    for info in infos:
        first = info.firstPartyPrincipal
        callers.append((first.principalEmail or first.principalSubject or "?") if first else "third-party principal")
    return " → ".join(callers)


def fold(entries: list[Entry], options: ScanOptions, out: Partial, origin: str = "") -> None:
    start, end, cap, keep = options.start, options.end, options.cap, options.identities
    usage, unmapped, skipped, days, in_window = out.usage, out.unmapped, out.skipped, out.days, out.in_window
    clock = EventClock(cap)
    projects: dict[str, str] = {}  # logName -> project
    spans: dict[str, list[str]] = {}  # project -> [first, last] seen in these entries
    for index, entry in enumerate(entries):
        when = clock.canonical(_second(entry.timestamp))
        if when is None:
            out.bad_record(origin, f"entry {index}", ValueError(f"impossible timestamp {entry.timestamp[:40]!r}"))
            continue
        if when > cap:
            out.after_cap(origin, when)
            continue
        project = projects.get(entry.logName)
        if project is None:
            project = projects[entry.logName] = project_of(entry)
        span = spans.get(project)
        if span is None:
            spans[project] = [when, when]
        elif when < span[0]:
            span[0] = when
        elif when > span[1]:
            span[1] = when
        seen = days.get(project)
        if seen is None:
            seen = days[project] = {}
        seen[when[:10]] = seen.get(when[:10], 0) + 1
        payload = entry.protoPayload
        if payload is not None and payload.serviceData is not None:
            _audit_changes(payload.serviceData, project, when, out)
        if when < start or when > end:
            continue
        in_window[project] = in_window.get(project, 0) + 1
        if payload is None:
            key2 = (project, "not an audit log entry (no protoPayload)")
            skipped[key2] = skipped.get(key2, 0) + 1
            continue
        checks = payload.authorizationInfo
        if checks:  # in the window only: auditConfigs may have changed since
            _learn(payload, checks, out)
        authn = payload.authenticationInfo
        principal = (authn.principalEmail or authn.principalSubject) if authn is not None else None
        if not principal:
            key2 = (project, "no principal (system event)")
            skipped[key2] = skipped.get(key2, 0) + 1
            continue
        if keep is not None and principal not in keep:
            continue
        chain = _chain(authn) if authn.serviceAccountDelegationInfo else None
        if chain:
            key3 = (project, principal, chain)
            out.delegations[key3] = out.delegations.get(key3, 0) + 1
        service = payload.serviceName or "?"
        if service == K8S_SERVICE:
            key = (project, principal, f"k8s.io:{payload.methodName}", "GKE pseudo-permission, not an IAM permission")
            unmapped[key] = unmapped.get(key, 0) + 1
            continue
        operation = entry.operation.id if entry.operation is not None else None
        if checks and operation:
            out.checked_operations.add(operation)
        if not checks:
            ukey = (project, principal, service, payload.methodName or "?")
            if operation:  # decided after the scan: it may be the rest of a checked operation
                out.unchecked_operations.setdefault(operation, []).append((ukey, when))
                continue
            counter = out.unchecked.get(ukey)
            if counter is None:
                out.unchecked[ukey] = [1, when, when]
            else:
                counter[0] += 1
                counter[1], counter[2] = min(counter[1], when), max(counter[2], when)
            continue
        for check in checks:
            permission = check.permission
            if not permission:
                key = (project, principal, f"{service}:{payload.methodName}", "authorizationInfo without permission")
                unmapped[key] = unmapped.get(key, 0) + 1
                continue
            resource = check.resource or (check.resourceAttributes.name if check.resourceAttributes else None)
            ukey5 = (project, principal, permission, "used" if check.granted is True else "denied", EVIDENCE)
            if entry.insertId:
                out.seen(ukey5, hash((entry.insertId, when, permission)))
            counter = usage.get(ukey5)
            if counter is None:
                usage[ukey5] = [1, when, when, {resource} if resource else set()]
                continue
            counter[0] += 1
            if when < counter[1]:
                counter[1] = when
            elif when > counter[2]:
                counter[2] = when
            if resource and len(counter[3]) < MAX_RESOURCES:
                counter[3].add(resource)
    for project, (first, last) in spans.items():
        out._span(project, first, last)


def unchecked_calls(partial: Partial) -> dict[tuple[str, str, str, str], list[Any]]:
    """Calls logged without ``authorizationInfo`` that are calls of their own: entries of an
    operation none of whose entries carried the check (its first one may lie outside the window)."""
    calls = {key: list(value) for key, value in partial.unchecked.items()}
    for operation, entries in partial.unchecked_operations.items():
        if operation in partial.checked_operations:
            continue
        key, _ = entries[0]
        times = [when for _, when in entries]
        mine = calls.setdefault(key, [0, min(times), max(times)])
        mine[0] += 1  # one operation, however many entries it logged
        mine[1], mine[2] = min(mine[1], *times), max(mine[2], *times)
    return calls


def _learn(payload: Payload, checks: list[AuthZ], out: Partial) -> None:
    """What the logs show about permissions: every one that appears is recorded by them, and the
    permissions a method checks every time map its calls logged without ``authorizationInfo``."""
    permissions = frozenset(c.permission for c in checks if c.permission)
    out.seen_permissions |= permissions
    key = (payload.serviceName or "?", payload.methodName or "?")
    known = out.method_checks.get(key)
    if known is None:
        if len(permissions) <= MAX_METHOD_PERMISSIONS:
            out.method_checks[key] = permissions
    elif not permissions >= known:
        out.method_checks[key] = known & permissions


def _audit_changes(data: ServiceData, project: str, when: str, out: Partial) -> None:
    """SetIamPolicy calls that changed auditConfigs: a log type enabled mid-window was not on all along."""
    deltas = data.policyDelta.auditConfigDeltas if data.policyDelta else None
    for delta in deltas or ():
        if delta.service and delta.logType:
            out.audit_changes.add((project, when, delta.action or "?", delta.service, delta.logType))


def read_file(path: Path, options: ScanOptions) -> Partial:
    """Fold one log file; an unreadable file becomes a gap, never an exception."""
    out = Partial()
    origin = str(path)
    try:
        entries = decode(read_input(path, options.max_file_bytes), origin, out)
    except (InputError, OSError, ValueError, msgspec.DecodeError, RecursionError) as exc:
        return out.unreadable(origin, exc)
    fold(entries, options, out, origin)
    out.file_done()
    return out


def scan(
    files: Sequence[Path],
    options: ScanOptions,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Partial:
    """Fold all ``files``; in parallel processes when there are enough files to pay for them."""
    return fold_files(
        files,
        batches_of(functools.partial(read_file, options=options), Partial),
        Partial(),
        workers,
        progress,
        batch_size=16,
    )


def _newest_in(path: Path, cap: str, max_file_bytes: int) -> str:
    """Newest datable entry time of one file no later than ``cap`` ("" if none: the scan reports it)."""
    clock = EventClock(cap)
    try:
        entries = decode(read_input(path, max_file_bytes), str(path), Partial())
    except (InputError, OSError, ValueError, msgspec.DecodeError, RecursionError):
        return ""
    times = (clock.canonical(_second(e.timestamp)) for e in entries)
    return max((t for t in times if t is not None and t <= cap), default="")


def _second(when: str) -> str:
    """``...SS.fffZ`` -> ``...SSZ`` (the fraction is dropped: times are compared to the second)."""
    if len(when) > 20 and when[10] == "T" and when[19] in ".Z" and when[-1] == "Z":
        return when[:19] + "Z"
    return when


def newest_entry_time(
    files: Sequence[Path], cap: str, workers: int | None = None, max_file_bytes: int = DEFAULT_CAP
) -> str:
    """Newest entry timestamp no later than ``cap`` (see :func:`auditor.connectors.log_scan.newest_event`)."""
    return newest_event(files, functools.partial(_newest_in, cap=cap, max_file_bytes=max_file_bytes), cap, workers)
