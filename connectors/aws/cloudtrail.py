"""AWS usage: stream CloudTrail logs into aggregated usage rows, in parallel, in bounded memory.

Reads the layouts AWS writes (``AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/*.json.gz``
holding ``{"Records": [...]}``, plain ``.json`` too, organization trails with an ``o-…`` level) and
the newline-delimited exports (one event per line, or ``lookup-events`` items carrying a
``CloudTrailEvent`` string). Each file is decoded with a typed msgspec schema that skips every field
the audit does not need, and folded into per-(identity, action, outcome) counters; only those
counters ever cross process boundaries, so memory does not grow with the number of events.
"""

from __future__ import annotations

import functools
import re
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import orjson

from auditor.catalog import aws_catalog, aws_resource_arn_formats
from auditor.connectors.aws.actions import ActionMapping, EventActionMapper
from auditor.connectors.aws.cloudtrail_records import Event, Resource, decode, looks_like_cloudtrail
from auditor.connectors.log_scan import (
    SECOND_TAILS,
    EventClock,
    FoldInFlight,
    ScanCounters,
    newest_event,
    problem_row,
)
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP, read_input, walk_files
from auditor.narrowing import NarrowingRules
from auditor.ruleset import Rules

#: Event types that are calls made by the identity itself (service events and sign-ins are not).
COUNTED_EVENT_TYPES = frozenset({"AwsApiCall", "AwsConsoleAction"})
#: Cap on distinct resources remembered per (identity, action): beyond it a policy uses "*" anyway.
MAX_RESOURCES = 64
#: Cap on the (action, ARN) answers a worker remembers before it starts over (ARNs such as instance
#: ids, which narrowing leaves as they are, can be distinct in every call of an account).
ARN_CACHE = 1 << 18
SKIPPED_DIRS = ("CloudTrail-Digest", "CloudTrail-Insight")
NDJSON_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json.gz", ".json")
_TRAIL_FILE_NAME = re.compile(r"^\d{12}_CloudTrail_[a-z0-9-]+_\d{8}T\d{4}Z_[A-Za-z0-9]+\.json(\.gz)?$")


@dataclass(frozen=True)
class TrailOptions:
    """What the parser needs besides the files: window bounds, the cap, which identities to keep."""

    start: str  # ISO-8601 "YYYY-MM-DDTHH:MM:SSZ", inclusive
    end: str  # inclusive
    cap: str  # nothing can be later than this (collection time / now): later records are input problems
    identities: frozenset[str] | None  # identity ARNs to aggregate (None: all)
    rules: Rules
    max_file_bytes: int = DEFAULT_CAP  # a log file larger than this once decompressed is skipped, listed


@dataclass
class Partial(ScanCounters):
    """Counters from some files: usage per (account, identity, action, outcome, evidence) holds
    [calls, first, last, resources (None past the cap), every call carried a resource]."""

    usage: dict[tuple[str, str, str, str, str], list[Any]] = field(default_factory=dict)

    def merge(self, other: Partial) -> None:
        super().merge(other)
        for key, (calls, first, last, resources, complete) in other.usage.items():
            mine = self.usage.get(key)
            if mine is None:
                self.usage[key] = [calls, first, last, resources, complete]
                continue
            mine[0] += calls
            mine[1] = min(mine[1], first)
            mine[2] = max(mine[2], last)
            if mine[3] is not None:
                mine[3] = None if resources is None else _capped(mine[3] | resources)
            mine[4] = mine[4] and complete

    def keep_only(self, identities: frozenset[str]) -> None:
        """Drop the counters of identities not in ``identities``: what the fold would have kept had
        it known them (the counters before its identity check do not depend on the identity)."""
        self.usage = {k: v for k, v in self.usage.items() if k[1] in identities}
        self.record_ids = {k: v for k, v in self.record_ids.items() if k[1] in identities}
        self.unmapped = {k: v for k, v in self.unmapped.items() if k[1] in identities}


def _capped(resources: set[str]) -> set[str] | None:
    return resources if len(resources) <= MAX_RESOURCES else None


def _is_delivery_file(path: Path) -> bool:
    """A file CloudTrail delivered to S3 (its name and folder say so): read without looking inside."""
    return "CloudTrail" in path.parts and _TRAIL_FILE_NAME.match(path.name) is not None


def find_log_files(paths: Sequence[Path], required: bool = True) -> tuple[list[Path], list[dict[str, Any]]]:
    """Every CloudTrail log file under ``paths``, sorted, and what could not be looked at (GAPS rows).

    A file named explicitly is always read; inside a folder a file is a log file when CloudTrail
    delivered it (S3 layout) or when its content shows CloudTrail records, whatever its name
    (digest and insight files, snapshot metadata and other JSON are not; such a file inside a
    ``CloudTrail`` folder is listed). ``required``: none is an error."""
    for root in paths:
        if not root.exists() and not root.is_symlink():
            raise InputError(f"{root}: no such file or directory", "pass the folder you synced the trail bucket into")
    explicit = [p for p in paths if p.is_file()]
    files, problems = walk_files([p for p in paths if not p.is_file()])
    found = list(explicit)
    for path in files:
        if any(part in SKIPPED_DIRS for part in path.parts):
            continue
        if _is_delivery_file(path):
            found.append(path)
            continue
        try:
            if looks_like_cloudtrail(path):
                found.append(path)
            elif "CloudTrail" in path.parts:  # where only CloudTrail delivers: said, not passed over
                problems.append((path, "it lies among CloudTrail's log files but does not begin like one"))
        except InputError as exc:
            problems.append((path, str(exc)))
    if not found and required:
        shown = ", ".join(str(p) for p in paths)
        raise InputError(
            f"{shown}: no CloudTrail log files found",
            "sync the trail bucket with `aws s3 sync s3://BUCKET/AWSLogs/ DIR/AWSLogs/`, or point at exported logs",
        )
    gaps = [problem_row(path, reason) for path, reason in problems]
    return sorted(found), gaps


# ----------------------------------------------------------------------------- folding


_ARN_PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")


def _arn_regex(template: str) -> str:
    out, last = [], 0
    for match in _ARN_PLACEHOLDER.finditer(template):
        out.append(re.escape(template[last : match.start()]))
        name = match.group(1)
        out.append(
            {"Partition": r"aws[a-z-]*", "Region": r"[a-z0-9-]*", "Account": r"(?:\d{12}|aws|)"}.get(name, r".+")
        )
        last = match.end()
    out.append(re.escape(template[last:]))
    return "".join(out)


class _Context:
    """Per-process state: the event mapper and per-action ARN matchers (built once per worker)."""

    def __init__(self, options: TrailOptions) -> None:
        self.options = options
        self.mapper = EventActionMapper.from_rules(options.rules, aws_catalog())
        self.narrowing = NarrowingRules.of(options.rules)
        self.clock = EventClock(options.cap)
        self.arn_formats = aws_resource_arn_formats()
        self._arn_matchers: dict[str, Callable[[str], Any] | None] = {}
        self.plans: dict[str, dict[str, ActionMapping | None]] = {}  # source -> name -> mapping (None: per call)
        self.arn_cache: dict[tuple[str, str], str | None] = {}
        self.accounts: dict[str, str] = {}  # identity ARN -> its account

    def arn_matcher(self, action: str) -> Callable[[str], Any] | None:
        if action not in self._arn_matchers:
            templates = self.arn_formats.get(action) or []
            self._arn_matchers[action] = (
                re.compile("|".join(f"(?:{_arn_regex(t)})" for t in templates)).fullmatch if templates else None
            )
        return self._arn_matchers[action]


_CONTEXT: _Context | None = None
_UNPLANNED: Any = object()  # a call not looked up yet (None: one mapped call by call, from its request)


def _init_worker(options: TrailOptions) -> None:
    global _CONTEXT
    if _CONTEXT is None or _CONTEXT.options != options:
        _CONTEXT = _Context(options)
        _CONTEXT.mapper.namespace("s3.amazonaws.com")  # loads the index of botocore's services before any fork


def _fold(events: list[Event], ctx: _Context, out: Partial, origin: str, keep: frozenset[str] | None) -> Iterable[str]:
    """The hot loop: one pass over decoded events, counters only (see ``Partial``); only the
    identities in ``keep`` are counted (None: all). Returns the accounts the events were of."""
    opts = ctx.options
    start, end, cap = opts.start, opts.end, opts.cap
    mapper, plans, arn_cache, accounts, clock = ctx.mapper, ctx.plans, ctx.arn_cache, ctx.accounts, ctx.clock
    usage, unmapped, skipped, minutes = out.usage, out.unmapped, out.skipped, clock.minutes
    remember, record_ids = out.seen, out.record_ids
    # Per account, the time of each event and how many fall in the window: gathered here, turned into
    # days and spans once per file (ScanCounters.saw_times). A file nearly always holds one account.
    times: dict[str, list[str]] = {}
    in_window: dict[str, int] = {}
    account_times: list[str] = []
    current, inside = None, 0  # the account of the events just read, and how many were in the window
    for index, event in enumerate(events):
        when = event.eventTime
        if not (minutes.get(when[:16]) and when[16:] in SECOND_TAILS):  # a known-good minute, then ":SSZ"
            when = clock.canonical(when)  # anything but a known-good minute in the exact form
        if when is None:
            out.bad_record(origin, f"record {index}", ValueError(f"impossible eventTime {event.eventTime[:40]!r}"))
            continue
        if when > cap:
            out.after_cap(origin, when)
            continue
        account = event.recipientAccountId or (event.userIdentity.accountId if event.userIdentity else None) or "?"
        if account != current:
            if inside:
                in_window[current] = in_window.get(current, 0) + inside
            current, inside = account, 0
            account_times = times.setdefault(account, [])
        account_times.append(when)
        if when < start or when > end:
            continue
        inside += 1
        kind = event.eventType
        if kind is not None and kind not in COUNTED_EVENT_TYPES:
            skey = (account, f"{kind} (not a call by the identity)")
            skipped[skey] = skipped.get(skey, 0) + 1
            continue
        # The identity whose permissions authorized the call: the role for assumed-role sessions.
        user = event.userIdentity
        if user is None:
            identity = None
        else:
            context = user.sessionContext
            issuer = context.sessionIssuer.arn if context is not None and context.sessionIssuer is not None else None
            if issuer:
                identity = issuer
            elif user.type == "Root" and user.accountId:
                identity = f"arn:aws:iam::{user.accountId}:root"
            else:
                identity = user.arn
        if identity is None:
            skey = (account, _no_identity_reason(event))
            skipped[skey] = skipped.get(skey, 0) + 1
            continue
        if keep is not None and identity not in keep:
            continue
        source, name = event.eventSource, event.eventName
        names = plans.get(source)
        if names is None:
            names = plans[source] = {}
        mapping = names.get(name, _UNPLANNED)
        if mapping is _UNPLANNED:
            mapping = names[name] = None if mapper.needs_request(source, name) else mapper.map(source, name)
        if mapping is None:  # depends on requestParameters
            mapping = mapper.map_raw(source, name, bytes(event.requestParameters))
        identity_account = accounts.get(identity)
        if identity_account is None:
            identity_account = accounts[identity] = (
                identity.split(":", 5)[4] if identity.startswith("arn:") else account
            )
        if mapping.status != "mapped":
            if mapping.status == "unmapped":
                key = (identity_account, identity, f"{source}:{name}", mapping.reason)
                unmapped[key] = unmapped.get(key, 0) + 1
            continue
        error = event.errorCode
        outcome = "denied" if error is not None and mapper.is_denied_error(error) else "used"
        console = event.sessionCredentialFromConsole
        evidence = "cloudtrail-console" if console is True or console == "true" else "cloudtrail"
        resources = event.resources
        record = hash((event.eventID, when, source, name, identity)) if event.eventID else None
        for action in mapping.actions:
            arns = _matching(ctx, arn_cache, action, resources) if resources else []
            key = (identity_account, identity, action, outcome, evidence)
            entry = usage.get(key)  # _count(), inlined: this loop runs once per event
            if entry is None:
                usage[key] = [1, when, when, set(arns), bool(arns)]
            else:
                entry[0] += 1
                if when < entry[1]:
                    entry[1] = when
                elif when > entry[2]:
                    entry[2] = when
                if not arns:
                    entry[4] = False
                elif entry[3] is not None:
                    entry[3].update(arns)
                    if len(entry[3]) > MAX_RESOURCES:
                        entry[3] = None
            if record is not None:
                ids = record_ids.get(key)  # ScanCounters.seen(), inlined
                if ids is None:
                    ids = record_ids[key] = array("q")
                ids.append(record)
        if outcome == "used" and event.readOnly is not True:
            raw = bytes(event.requestParameters)
            if b":iam::" in raw:  # a role ARN may be passed: implied iam:PassRole
                for role in mapper.passed_roles(_request(raw), source, name):
                    key = (identity_account, identity, "iam:PassRole", "used", "implied")
                    _count(usage, key, when, [role])
                    if record is not None:
                        remember(key, record)
    if inside:
        in_window[current] = in_window.get(current, 0) + inside
    for account, seen in times.items():
        out.saw_times(account, seen, in_window.get(account, 0))
    return times.keys()


def _no_identity_reason(event: Event) -> str:
    user = event.userIdentity
    if user is not None and user.type == "AWSService":
        return f"AWSService caller {user.invokedBy or ''} (not a call by an agent)".replace("  ", " ")
    return "no userIdentity"


def _matching(
    ctx: _Context, cache: dict[tuple[str, str], str | None], action: str, resources: list[Resource]
) -> list[str]:
    """ARNs of ``resources`` that ``action`` can be scoped to, generalized (object keys -> bucket/*).
    ``cache`` answers for an (action, ARN) pair seen before: every ARN the narrowing rules leave as
    it is (tables, buckets: they repeat), and every generalized one (object keys do not repeat)."""
    found = []
    for resource in resources:
        arn = resource.ARN
        if not arn:
            continue
        hit = cache.get((action, arn), False)
        if hit is False:
            general = ctx.narrowing.apply(arn)
            hit = cache.get((action, general), False)
            if hit is False:
                if len(cache) >= ARN_CACHE:
                    cache.clear()
                matcher = ctx.arn_matcher(action)
                hit = cache[(action, general)] = general if matcher and matcher(general) else None
        if hit is not None:
            found.append(hit)
    return found


def _request(raw: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _count(usage: dict, key: tuple[str, str, str, str, str], when: str, arns: list[str]) -> None:
    entry = usage.get(key)
    if entry is None:
        usage[key] = [1, when, when, set(arns), bool(arns)]
        return
    entry[0] += 1
    if when < entry[1]:
        entry[1] = when
    elif when > entry[2]:
        entry[2] = when
    if not arns:
        entry[4] = False
    elif entry[3] is not None:
        entry[3].update(arns)
        if len(entry[3]) > MAX_RESOURCES:
            entry[3] = None


def read_batch(paths: list[Path], identities: frozenset[str] | None = None) -> Partial:
    """Fold log files into one Partial (not one per file, merged: that was a few percent of a scan);
    an unreadable file becomes a gap, never an exception. ``identities``: the ones to count, when not
    the options' (a scan started before they were known)."""
    assert _CONTEXT is not None, "worker not initialised"
    context = _CONTEXT
    keep = context.options.identities if identities is None else identities
    out = Partial()
    for path in paths:
        origin = str(path)
        try:
            events = decode(read_input(path, context.options.max_file_bytes), origin, out)
        except (InputError, OSError, ValueError, msgspec.DecodeError, RecursionError) as exc:
            out.unreadable(origin, exc)
        else:
            out.file_done(_fold(events, context, out, origin, keep))
        out.list_malformed()
    return out


def read_file(path: Path, identities: frozenset[str] | None = None) -> Partial:
    """One log file folded (:func:`read_batch`)."""
    return read_batch([path], identities)


def start_scan(files: Sequence[Path], options: TrailOptions, workers: int | None = None) -> FoldInFlight[Partial]:
    """Start folding ``files`` in worker processes (when there are enough of them); collect with
    :meth:`FoldInFlight.finish`."""
    return FoldInFlight(files, read_batch, workers, initializer=_init_worker, initargs=(options,))


def rest_reader(identities: frozenset[str]) -> Callable[[list[Path]], Partial]:
    """The batch reader that counts only ``identities``, for the batches a scan started with
    ``TrailOptions.identities=None`` has not begun when they become known."""
    return functools.partial(read_batch, identities=identities)


def scan(
    files: Sequence[Path],
    options: TrailOptions,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Partial:
    """Fold all ``files``; in parallel processes when there are enough files to pay for them."""
    return start_scan(files, options, workers).finish(Partial(), progress)


def _newest_in(path: Path) -> str:
    """The newest datable event of one file no later than the cap ("" if none or unreadable: the
    full scan reports the file)."""
    assert _CONTEXT is not None, "worker not initialised"
    clock, cap = _CONTEXT.clock, _CONTEXT.options.cap
    try:
        events = decode(read_input(path, _CONTEXT.options.max_file_bytes), str(path), Partial())
    except (InputError, OSError, ValueError, msgspec.DecodeError, RecursionError):
        return ""
    times = (clock.canonical(e.eventTime) for e in events)
    return max((t for t in times if t is not None and t <= cap), default="")


def newest_event_time(files: Sequence[Path], options: TrailOptions, workers: int | None = None) -> str:
    """Newest eventTime no later than the cap (see :func:`auditor.connectors.log_scan.newest_event`)."""
    return newest_event(files, _newest_in, options.cap, workers, initializer=_init_worker, initargs=(options,))
