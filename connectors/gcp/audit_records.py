"""Cloud Audit Log entries out of any file an export or a sink leaves behind (no file I/O here).

Shapes read, told apart by content: ``gcloud logging read --format=json`` arrays, the REST
``entries.list`` page (``{"entries": [...]}``), newline-delimited sink files, one entry alone, and
Pub/Sub wrappers (a push or pull message whose ``data`` is the base64 entry, or a forwarder's
``{"data": {...}}`` / ``{"message": "<json>"}``). A typed msgspec decode of the whole file comes first;
the value-by-value reading only when it fails.

An entry that cannot be decoded (malformed JSON, nested too deeply, mis-typed fields, no time) goes
to ``sink.bad_record`` and the rest of the file is read; a file that is not Cloud Logging at all
raises ``ValueError``. ``timestamp`` is returned as written (``receiveTimestamp`` when it is missing):
the fold makes it canonical with ``auditor.timefmt.event_time``, whose None (an impossible time) is a
bad record for the fold to count.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Any

import msgspec

from auditor import fileio
from auditor.connectors.record_reader import DECODE_ERRORS, RecordReader, Sink, at

MAX_WRAPPING = 6
_OPEN_OBJECT, _OPEN_ARRAY, _QUOTE = 0x7B, 0x5B, 0x22
_HEAD_MARKERS = re.compile(rb'\\*"(?:logName|protoPayload)\\*"\s*:')
_ABSENT = msgspec.Raw(b"")


# gc=False: decoded entries are trees (no reference cycles), so the cyclic garbage collector need not
# track millions of them; this halves the decode time of a large file.
class _Principal(msgspec.Struct, gc=False):
    principalEmail: str | None = None
    principalSubject: str | None = None


class _Delegation(msgspec.Struct, gc=False):
    firstPartyPrincipal: _Principal | None = None
    thirdPartyPrincipal: dict[str, Any] | None = None


class AuthN(msgspec.Struct, gc=False):
    principalEmail: str | None = None
    principalSubject: str | None = None
    serviceAccountDelegationInfo: list[_Delegation] | None = None


class _ResourceAttributes(msgspec.Struct, gc=False):
    name: str | None = None


class AuthZ(msgspec.Struct, gc=False):
    permission: str | None = None
    granted: bool | None = None
    resource: str | None = None
    resourceAttributes: _ResourceAttributes | None = None


class _AuditConfigDelta(msgspec.Struct, gc=False):
    action: str | None = None
    service: str | None = None
    logType: str | None = None


class _PolicyDelta(msgspec.Struct, gc=False):
    auditConfigDeltas: list[_AuditConfigDelta] | None = None


class ServiceData(msgspec.Struct, gc=False):
    policyDelta: _PolicyDelta | None = None


class Payload(msgspec.Struct, gc=False):
    serviceName: str | None = None
    methodName: str | None = None
    authenticationInfo: AuthN | None = None
    authorizationInfo: list[AuthZ] | None = None
    serviceData: ServiceData | None = None


class _Resource(msgspec.Struct, gc=False):
    labels: dict[str, str] | None = None


class Operation(msgspec.Struct, gc=False):
    """A long-running operation's entries share an ``id``; the first carries the permission check."""

    id: str | None = None
    first: bool | None = None
    last: bool | None = None


class Entry(msgspec.Struct, gc=False):
    """The fields of a LogEntry the audit reads; everything else is skipped unparsed."""

    timestamp: str = ""
    logName: str = ""
    protoPayload: Payload | None = None
    resource: _Resource | None = None
    insertId: str | None = None
    operation: Operation | None = None


class _Page(msgspec.Struct, gc=False):
    entries: list[Entry] | None = None


class _Probe(msgspec.Struct):
    """The keys that tell the shapes apart, values left unparsed; an absent key is an empty ``Raw``."""

    entries: msgspec.Raw = _ABSENT
    logName: msgspec.Raw = _ABSENT
    protoPayload: msgspec.Raw = _ABSENT
    insertId: msgspec.Raw = _ABSENT
    receiveTimestamp: msgspec.Raw = _ABSENT
    message: msgspec.Raw = _ABSENT
    data: msgspec.Raw = _ABSENT


_ENTRY = msgspec.json.Decoder(Entry)
_ENTRIES = msgspec.json.Decoder(list[Entry])
_PAGE = msgspec.json.Decoder(_Page)
_PROBE = msgspec.json.Decoder(_Probe)
_RAWS = msgspec.json.Decoder(list[msgspec.Raw])
_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STRING = msgspec.json.Decoder(str)


def decode(raw: bytes, origin: str, sink: Sink) -> list[Entry]:
    """The usable log entries of one file's text; ``ValueError`` if it holds none at all."""
    entries = _typed(raw)
    if entries is not None:
        return entries
    return _Reader(origin, sink).read(raw)


def _typed(raw: bytes) -> list[Entry] | None:
    """The fast paths, one typed decode each: a ``gcloud`` array, an ``entries.list`` page, a sink
    file (one entry per line). None when the text is none of them."""
    try:
        if fileio.first_byte(raw) == _OPEN_ARRAY:
            entries = _ENTRIES.decode(raw)
        else:
            try:
                return _PAGE.decode(raw).entries  # None for one entry alone
            except msgspec.DecodeError:
                entries = _ENTRIES.decode(fileio.joined_lines(raw))
    except DECODE_ERRORS:
        return None
    return entries if _are_entries(entries) else None


def looks_like_audit_log(path: Path) -> bool:
    """Whether a file holds Cloud Logging entries, judged from the head of its text only (a gzip
    head is inflated); Pub/Sub messages whose ``data`` is base64 do not show it and must be named
    explicitly. ``InputError`` for a path that cannot be read."""
    head = fileio.read_head(path)
    return fileio.first_byte(head) in (_OPEN_OBJECT, _OPEN_ARRAY) and _HEAD_MARKERS.search(head) is not None


def _are_entries(entries: list[Entry]) -> bool:
    """Whether a typed decode found log entries (not wrappers, whose fields all stay empty), judged
    by the first: a later entry's missing or impossible time is the fold's bad record to count."""
    return bool(entries) and bool(entries[0].timestamp) and bool(entries[0].logName or entries[0].protoPayload)


class _Reader(RecordReader[Entry]):
    """The slow path: finds the entries in any supported shape, value by value."""

    kind = "Cloud Logging export"
    none_found = "no log entries found"
    empty_is_a_problem = True  # gcloud and the API write `[]` or `{}` for no entries; the collector, no file

    def batch(self, text: bytes) -> list[Entry] | None:
        records = _ENTRIES.decode(text)
        return records if _are_entries(records) else None

    def truncated(self, text: bytes, where: str, exc: Exception) -> None:
        """An array or page the text ends inside, or one too deep to decode (``exc``): its entries as
        far as they can be found; anything else is one bad entry."""
        start = len(text) - len(text.lstrip())
        items = None
        if fileio.first_byte(text) == _OPEN_ARRAY:
            items = fileio.array_items(text, start)
        elif fileio.first_byte(text) == _OPEN_OBJECT:
            for key, value_start in fileio.object_members(text, start):
                if key == "entries" and text[value_start : value_start + 1] == b"[":
                    items, where = fileio.array_items(text, value_start), at(where, key)
                    break
        if items is None:
            return self.bad(where, exc)
        self.recognize()
        for index, item in items:
            if item is None:
                self.bad(f"{where}[{index}]", ValueError("the text ends before this entry does"))
            else:
                self.value(item, f"{where}[{index}]", 0)
        return None

    def undecodable(self, value: bytes | memoryview, where: str, depth: int, exc: Exception) -> None:
        """An object the decoder refuses: re-read leniently (raw control characters in strings), else
        as a truncated or too deep container."""
        strict = None if "truncated" in str(exc) else fileio.lenient_json(value)
        if strict is not None and depth < MAX_WRAPPING:
            return self.value(strict, where, depth + 1)
        return self.truncated(bytes(value), where, exc)

    def value(self, value: bytes | memoryview | msgspec.Raw, where: str, depth: int) -> None:
        if isinstance(value, msgspec.Raw):
            value = memoryview(value)
        first = fileio.first_byte(value)
        if depth > MAX_WRAPPING:
            self.bad(where, ValueError("wrapped in too many envelopes"))
        elif first == _OPEN_OBJECT:
            self.object(value, where, depth)
        elif first == _OPEN_ARRAY:
            self.array(value, where, depth)
        elif first == _QUOTE:
            self.string(value, where, depth)
        else:
            self.bad(where, ValueError("not a JSON object"))

    def string(self, value: bytes | memoryview, where: str, depth: int) -> None:
        """An entry serialised into a JSON string, as JSON text or base64 (Pub/Sub ``data``)."""
        try:
            inner = _STRING.decode(value).encode()
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        if fileio.first_byte(inner) not in (_OPEN_OBJECT, _OPEN_ARRAY):
            try:
                inner = base64.b64decode(inner, validate=True)
            except (binascii.Error, ValueError):
                return self.bad(where, ValueError("a string that is neither JSON nor base64"))
            if fileio.first_byte(inner) not in (_OPEN_OBJECT, _OPEN_ARRAY):
                return self.bad(where, ValueError("base64 data that is not JSON"))
        return self.value(inner, where, depth + 1)

    def array(self, value: bytes | memoryview, where: str, depth: int) -> None:
        try:
            entries = _ENTRIES.decode(value)
        except DECODE_ERRORS:
            entries = None
        if entries is not None and _are_entries(entries):
            return self.add(entries)
        try:
            items = _RAWS.decode(value)
        except DECODE_ERRORS as exc:
            return self.truncated(bytes(value), where, exc)
        if not items:
            return self.recognize()  # an empty export
        label = where or "entry"
        for index, item in enumerate(items):
            self.value(item, f"{label}[{index}]", depth)
        return None

    def object(self, value: bytes | memoryview, where: str, depth: int) -> None:
        try:
            probe = _PROBE.decode(value)
        except DECODE_ERRORS as exc:
            return self.undecodable(value, where, depth, exc)
        if probe.entries:
            self.recognize()
            return self.value(probe.entries, at(where, "entries"), depth + 1)
        if probe.logName or probe.protoPayload or probe.insertId:
            return self.entry(value, where, probe)
        for key in ("message", "data"):  # Pub/Sub messages and forwarders' wrappers
            inner = getattr(probe, key)
            if inner:
                return self.value(inner, at(where, key), depth + 1)
        keys = sorted(_KEYS.decode(value))
        if not keys or keys == ["nextPageToken"]:
            return self.recognize()  # an entries.list page without entries
        return self.bad(where, ValueError(f"not a log entry (keys: {', '.join(keys[:8])})"))

    def entry(self, value: bytes | memoryview, where: str, probe: _Probe) -> None:
        self.recognize()
        try:
            entry = _ENTRY.decode(value)
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        if not entry.timestamp and probe.receiveTimestamp:  # Logging fills a missing timestamp in so
            try:
                entry.timestamp = _STRING.decode(probe.receiveTimestamp)
            except DECODE_ERRORS as exc:
                return self.bad(where, exc)
        if not entry.timestamp:
            return self.bad(where, ValueError("a log entry needs a timestamp (or receiveTimestamp)"))
        return self.add([entry])
