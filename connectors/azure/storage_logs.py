"""Azure data-plane usage: fold Storage resource logs into per-(subscription, principal, dataAction,
outcome) counters, and tell which storage accounts the logs cover.

Each request of an Entra identity (``OAuth``, ``Kerberos``) yields every ``identity.authorization[]
.action`` as a dataAction of its caller: refused by authorization (HTTP 403, an ``Authorization*``
status, an entry whose result is ``Denied``) is a denied attempt, any other status means the check
passed (used). A request counts once per action (``correlationId``), wherever it was read. Shared
key, SAS and anonymous requests are no identity's calls: skipped and counted. An identity request
without authorization details is listed as unmapped, never guessed from its ``operationName``.

Coverage: a diagnostic setting may enable any of StorageRead / StorageWrite / StorageDelete, and a
day without a record cannot be told from logging switched off, so an account's service is *covered*
only when every whole day of the window holds records of all three categories.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from auditor.connectors.azure.activity_logs import UNKNOWN_OPERATION, Partial, ScanOptions
from auditor.connectors.azure.activity_records import NotActivityLog, decode
from auditor.connectors.azure.storage_records import CATEGORIES, IDENTITY_AUTH, StorageRecord, normalize
from auditor.connectors.log_scan import batches_of, dated_records, fold_files
from auditor.coverage import missing_days
from auditor.errors import InputError
from auditor.fileio import read_input

EVIDENCE = "storage-logs"
_BIT = {c: 1 << i for i, c in enumerate(CATEGORIES)}
ALL_CATEGORIES = (1 << len(CATEGORIES)) - 1
#: ``statusText`` values of a request refused by authorization (Azure Storage error codes).
REFUSALS = frozenset(
    {
        "authorizationfailure",
        "authorizationpermissionmismatch",
        "authorizationresourcetypemismatch",
        "authorizationservicemismatch",
        "authorizationprotocolmismatch",
        "authorizationsourceipmismatch",
    }
)
NO_DETAILS = "identity request without authorization details: its dataAction is not guessed from the operation name"


def scope_key(account: str, service: str) -> str:
    """How coverage names one service of one account: ``<account id, lower-case>/<service>Services``."""
    return f"{account.lower()}/{service}services"


def subscription_of(scope: str) -> str:
    """The subscription of a :func:`scope_key` (lower-case)."""
    return scope.split("/")[2]


@dataclass
class StoragePartial(Partial):
    """Activity counters plus, per account service, the categories seen each day (bit mask)."""

    record_noun: ClassVar[tuple[str, str]] = ("storage log record", "storage log records")

    categories: dict[str, dict[str, int]] = field(default_factory=dict)  # scope -> day -> mask
    accounts: dict[str, str] = field(default_factory=dict)  # scope -> account id as written

    def merge(self, other: StoragePartial) -> None:  # type: ignore[override]
        super().merge(other)
        for scope, days in other.categories.items():
            mine = self.categories.setdefault(scope, {})
            for day, mask in days.items():
                mine[day] = mine.get(day, 0) | mask
        for scope, account in other.accounts.items():
            self.accounts.setdefault(scope, account)

    def missing(self, scope: str, start: str, end: str) -> dict[str, list[str]]:
        """Per category, the whole days of the window without a record of it."""
        days = self.categories.get(scope, {})
        return {
            category: gap
            for category, bit in _BIT.items()
            if (gap := missing_days([d for d, mask in days.items() if mask & bit], start, end))
        }

    def covered(self, start: str, end: str) -> dict[str, str]:
        """The account services covered for the whole window: scope -> account id as written."""
        return {s: a for s, a in sorted(self.accounts.items()) if not self.missing(s, start, end)}


def _refused(record: StorageRecord) -> bool:
    return record.status_code == 403 or record.status_text.lower() in REFUSALS


def _principal(record: StorageRecord, options: ScanOptions) -> str | None:
    by_entry = next((a.principal for a in record.authorization if a.principal), None)
    if record.principal or by_entry:
        return record.principal or by_entry
    return options.app_ids.get(record.app_id) if record.app_id else None


def fold(records: Sequence[Any], options: ScanOptions, out: StoragePartial, origin: str) -> None:
    for record, when in dated_records(records, normalize, options.cap, out, origin):
        scope = scope_key(record.account, record.service)
        out.accounts.setdefault(scope, record.account)
        out.saw(scope, when, when, {when[:10]: 1})
        day = out.categories.setdefault(scope, {})
        day[when[:10]] = day.get(when[:10], 0) | _BIT[record.category]
        if when < options.start or when > options.end:
            continue
        out.in_window[scope] = out.in_window.get(scope, 0) + 1
        if record.auth_type.lower() not in IDENTITY_AUTH:
            out.skip(f"{record.auth_type or 'unauthenticated'} request (not a call by an identity)", scope=scope)
            continue
        principal = _principal(record, options)
        if principal is None:
            out.skip("no caller object id or app id", scope=scope)
            continue
        if options.identities is not None and principal not in options.identities:
            continue
        _count(record, principal, when, options, out)


def _count(record: StorageRecord, principal: str, when: str, options: ScanOptions, out: StoragePartial) -> None:
    if not record.authorization:
        key4 = (record.subscription, principal, f"{record.service}:{record.operation}", NO_DETAILS)
        out.unmapped[key4] = out.unmapped.get(key4, 0) + 1
        return
    refused = _refused(record)
    request = (record.request or f"{when}/{record.account}/{record.operation}").lower()
    for entry in record.authorization:
        action = options.operations.get(entry.action.lower())
        if action is None:
            key4 = (record.subscription, principal, entry.action, UNKNOWN_OPERATION)
            out.unmapped[key4] = out.unmapped.get(key4, 0) + 1
            continue
        outcome = "denied" if refused or entry.denied else "used"
        key = (record.subscription, principal, action, outcome, EVIDENCE)
        out.seen(key, hash((request, action)))
        counter = out.usage.get(key)
        if counter is None:
            out.usage[key] = [1, when, when, {record.account}]
            continue
        counter[0] += 1
        counter[1], counter[2] = min(counter[1], when), max(counter[2], when)
        counter[3].add(record.account)


def unattributed(out: StoragePartial) -> dict[str, frozenset[str]]:
    """identity -> the services of its identity requests that carried no authorization details."""
    found: dict[str, set[str]] = {}
    for _, identity, event, reason in out.unmapped:
        if reason == NO_DETAILS:
            found.setdefault(identity, set()).add(event.split(":", 1)[0])
    return {identity: frozenset(services) for identity, services in found.items()}


def read_file(path: Path, options: ScanOptions) -> StoragePartial:
    """Fold one file; an unreadable file becomes a gap, never an exception."""
    out = StoragePartial()
    origin = str(path)
    try:
        records = decode(read_input(path, options.max_file_bytes), lambda w, e: out.bad_record(origin, w, e))
    except NotActivityLog as exc:
        return out.unreadable(origin, ValueError(str(exc).replace("an Activity Log", "a storage log")))
    except (InputError, OSError) as exc:
        return out.unreadable(origin, exc)
    fold(records, options, out, origin)
    out.file_done()
    return out


def scan(
    files: Sequence[Path], options: ScanOptions, workers: int | None = None, progress: Any = None
) -> StoragePartial:
    return fold_files(
        files,
        batches_of(functools.partial(read_file, options=options), StoragePartial),
        StoragePartial(),
        workers,
        progress,
    )
