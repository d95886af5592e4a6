"""CloudTrail records out of any file a trail, an export or a query leaves behind (no file I/O here).

Shapes read, told apart by content, never by file name:

- the S3 delivery layout ``{"Records": [...]}``: one typed msgspec decode of the whole file, the fast
  path; every other shape is tried only when that decode fails or finds no ``Records``;
- a JSON array of records, one record alone, newline-delimited or concatenated records;
- EventBridge events (``detail-type: AWS API Call via CloudTrail``, the record under ``detail``),
  one, an array or newline-delimited; events of other detail types are ignored;
- ``aws cloudtrail lookup-events`` output (``{"Events": [{"CloudTrailEvent": "<json>"}]}``), an array
  of its items or one item per line;
- CloudTrail Lake ``get-query-results`` output (``QueryResultRows``, one single-key object per
  column; the usual columns map back to record fields);
- CloudWatch Logs subscription batches (``logEvents[].message``, what Firehose delivers to S3);
- SIEM and pipeline exports: the record as a JSON string under ``message`` or ``_raw``, Splunk's
  ``{"result": {"_raw": ...}}``, ECS ``event.original``, Logstash records whose ``eventTime`` became
  ``@timestamp``.

A record that cannot be decoded (malformed JSON, nested too deeply, mis-typed fields, no eventTime,
eventSource or eventName) goes to ``sink.bad_record`` and the rest of the file is read; a file that
is not CloudTrail at all raises ``ValueError`` with a one-line reason. ``eventTime`` is returned as
written: the fold makes it canonical with ``auditor.timefmt.event_time`` (one cached lookup per
event), whose None (an impossible time such as ``2026-13-45T99:99:99Z``) is a bad record to count.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from auditor import fileio
from auditor.connectors.record_reader import DECODE_ERRORS, RecordReader, Sink, at

#: How many envelopes (a string inside a ``message`` inside a ``result``...) are unwrapped.
MAX_WRAPPING = 6
_OPEN_OBJECT, _OPEN_ARRAY, _QUOTE = 0x7B, 0x5B, 0x22
_HEAD_MARKERS = re.compile(
    rb'[Ee]ventSource\\*"\s*:\s*\\*"[a-z0-9.-]+\.amazonaws\.com'
    rb'|"CloudTrailEvent"\s*:|"QueryResultRows"\s*:|"detail-type"\s*:\s*"[^"]*CloudTrail'
)
_ABSENT = msgspec.Raw(b"")
_Handler = Callable[[bytes | memoryview, str, int], None]


# gc=False: decoded records are trees (no reference cycles), so the cyclic garbage collector need not
# track them; with many records alive (a batch of files) this cuts the decode time severalfold.
class _SessionIssuer(msgspec.Struct, gc=False):
    arn: str | None = None


class _SessionContext(msgspec.Struct, gc=False):
    sessionIssuer: _SessionIssuer | None = None


class _UserIdentity(msgspec.Struct, gc=False):
    type: str | None = None
    arn: str | None = None
    accountId: str | None = None
    invokedBy: str | None = None
    sessionContext: _SessionContext | None = None


class Resource(msgspec.Struct, gc=False):
    ARN: str | None = None


class Event(msgspec.Struct, gc=False):
    """The fields of a CloudTrail record the audit reads; everything else is skipped unparsed."""

    eventTime: str = ""
    eventSource: str = ""
    eventName: str = ""
    eventType: str | None = None
    errorCode: str | None = None
    readOnly: bool | str | None = None
    recipientAccountId: str | None = None
    sessionCredentialFromConsole: str | bool | None = None
    userIdentity: _UserIdentity | None = None
    resources: list[Resource] | None = None
    requestParameters: msgspec.Raw = msgspec.Raw(b"null")  # kept unparsed: decoded only when needed
    eventID: str | None = None


class _TrailFile(msgspec.Struct, gc=False):
    Records: list[Event] | None = None


class _Probe(msgspec.Struct):
    """The keys that tell the shapes apart, values left unparsed (so this decode never mis-types);
    an absent key is an empty ``Raw``."""

    Records: msgspec.Raw = _ABSENT
    Events: msgspec.Raw = _ABSENT
    QueryResultRows: msgspec.Raw = _ABSENT
    logEvents: msgspec.Raw = _ABSENT
    messageType: msgspec.Raw = _ABSENT
    CloudTrailEvent: msgspec.Raw = _ABSENT
    detail: msgspec.Raw = _ABSENT
    detail_type: msgspec.Raw = msgspec.field(default=_ABSENT, name="detail-type")
    result: msgspec.Raw = _ABSENT
    splunk_raw: msgspec.Raw = msgspec.field(default=_ABSENT, name="_raw")
    eventSource: msgspec.Raw = _ABSENT
    eventName: msgspec.Raw = _ABSENT
    timestamp: msgspec.Raw = msgspec.field(default=_ABSENT, name="@timestamp")
    message: msgspec.Raw = _ABSENT
    event: msgspec.Raw = _ABSENT
    source: msgspec.Raw = msgspec.field(default=_ABSENT, name="_source")
    hits: msgspec.Raw = _ABSENT
    preview: msgspec.Raw = _ABSENT
    lastrow: msgspec.Raw = _ABSENT
    digestStartTime: msgspec.Raw = _ABSENT


class _EcsArn(msgspec.Struct):
    arn: str | None = None


class _EcsSession(msgspec.Struct):
    session_issuer: _EcsArn | None = None


class _EcsIdentity(msgspec.Struct):
    type: str | None = None
    arn: str | None = None
    invoked_by: str | None = None
    session_context: _EcsSession | None = None


class _EcsFlattened(msgspec.Struct):
    request_parameters: msgspec.Raw = msgspec.Raw(b"null")


class _EcsTrail(msgspec.Struct):
    """``aws.cloudtrail`` of an Elastic (ECS) document: the record's fields in snake case."""

    event_type: str | None = None
    error_code: str | None = None
    read_only: bool | str | None = None
    recipient_account_id: str | None = None
    session_credential_from_console: str | bool | None = None
    user_identity: _EcsIdentity | None = None
    resources: list[_EcsArn] | None = None
    flattened: _EcsFlattened | None = None


class _EcsAws(msgspec.Struct):
    cloudtrail: _EcsTrail | None = None


class _EcsEvent(msgspec.Struct):
    original: str | None = None
    action: str | None = None
    provider: str | None = None
    id: str | None = None


class _EcsDocument(msgspec.Struct):
    """What Elastic indexes for a record: ``event.original`` holds the record when the integration
    preserves it, else the record is rebuilt from ``@timestamp``, ``event.*`` and ``aws.cloudtrail.*``."""

    timestamp: str = msgspec.field(default="", name="@timestamp")
    event: _EcsEvent | None = None
    aws: _EcsAws | None = None


_TRAIL_FILE = msgspec.json.Decoder(_TrailFile)
_EVENT = msgspec.json.Decoder(Event)
_EVENTS = msgspec.json.Decoder(list[Event])
_PROBE = msgspec.json.Decoder(_Probe)
_RAWS = msgspec.json.Decoder(list[msgspec.Raw])
_KEYS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_STRING = msgspec.json.Decoder(str)
_ECS = msgspec.json.Decoder(_EcsDocument)
_ROWS = msgspec.json.Decoder(list[list[dict[str, Any]]])

#: CloudTrail Lake column (lower-cased) -> record field, identity field, or the session issuer's ARN.
_LAKE_FIELDS = {name.lower(): name for name in Event.__struct_fields__ if name not in ("userIdentity", "resources")}
_LAKE_IDENTITY = {
    "arn": "arn",
    "useridentity.arn": "arn",
    "accountid": "accountId",
    "useridentity.accountid": "accountId",
    "useridentity.type": "type",
    "invokedby": "invokedBy",
    "useridentity.invokedby": "invokedBy",
}
_LAKE_ISSUER = {"sessionissuer.arn", "useridentity.sessioncontext.sessionissuer.arn", "sessionissuerarn"}
_IDENTITY_NAMES = {name.lower(): name for name in ("accountId", "invokedBy", "sessionContext", "sessionIssuer")}


def decode(raw: bytes, origin: str, sink: Sink) -> list[Event]:
    """The usable CloudTrail records of one file's text; ``ValueError`` if it holds none at all."""
    try:
        records = _TRAIL_FILE.decode(raw).Records
    except DECODE_ERRORS:
        records = None
    if records is not None:
        return records
    return _Reader(origin, sink).read(raw)


def looks_like_cloudtrail(path: Path) -> bool:
    """Whether a file holds CloudTrail records, judged from the head of its text only (a gzip head is
    inflated): digest files, S3 event notifications and snapshot metadata are not. ``InputError``
    for a path that cannot be read."""
    return is_cloudtrail_head(fileio.read_head(path))


def is_cloudtrail_head(head: bytes) -> bool:
    """Whether the start of a text shows a CloudTrail record or a shape that carries them."""
    return fileio.first_byte(head) in (_OPEN_OBJECT, _OPEN_ARRAY) and _HEAD_MARKERS.search(head) is not None


class _Reader(RecordReader[Event]):
    """The slow path: finds the records in any supported shape, value by value."""

    kind = "CloudTrail log"
    none_found = "no CloudTrail records found"

    def batch(self, text: bytes) -> list[Event] | None:
        records = _EVENTS.decode(text)
        return records if _all_records(records) else None

    def truncated(self, text: bytes, where: str, exc: Exception) -> None:
        """A container the text ends inside, or one too deep to decode (``exc``): its items, as far as
        they can be found; anything else is one bad record."""
        first = fileio.first_byte(text)
        start = len(text) - len(text.lstrip())
        if first == _OPEN_ARRAY:
            return self.items(fileio.array_items(text, start), where, self.value)
        if first == _OPEN_OBJECT:
            handlers = {
                "Records": self.value,
                "Events": self.value,
                "logEvents": self.value,
                "QueryResultRows": self.lake_row_text,
            }
            for key, value_start in fileio.object_members(text, start):
                if key in handlers and text[value_start : value_start + 1] == b"[":
                    self.recognize()
                    return self.items(fileio.array_items(text, value_start), at(where, key), handlers[key])
        return self.bad(where, exc)

    def items(self, items: Iterable[tuple[int, memoryview | None]], where: str, handle: _Handler) -> None:
        for index, item in items:
            if item is None:
                self.bad(f"{where}[{index}]", ValueError("the text ends before this item does"))
            else:
                handle(item, f"{where}[{index}]", 0)

    # -- value level

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
        """A record, or a shape carrying them, serialised into a JSON string."""
        try:
            inner = _STRING.decode(value).encode()
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        if fileio.first_byte(inner) not in (_OPEN_OBJECT, _OPEN_ARRAY):
            return self.bad(where, ValueError("a string that is not JSON"))
        self.value(inner, where, depth + 1)

    def array(self, value: bytes | memoryview, where: str, depth: int) -> None:
        try:
            events = _EVENTS.decode(value)
        except DECODE_ERRORS:
            events = None
        if events is not None and _all_records(events):
            return self.add(events)
        try:
            items = _RAWS.decode(value)
        except DECODE_ERRORS:
            return self.truncated(bytes(value), where, ValueError("truncated or nested too deeply"))
        if not items:
            return self.recognize()  # an empty export
        label = where or "record"
        for index, item in enumerate(items):
            self.value(item, f"{label}[{index}]", depth)

    def object(self, value: bytes | memoryview, where: str, depth: int) -> None:
        try:
            probe = _PROBE.decode(value)
        except DECODE_ERRORS as exc:
            return self.undecodable(value, where, depth, exc)
        for key in ("Records", "Events", "logEvents"):
            items = getattr(probe, key)
            if items:
                if key != "logEvents" or b"CONTROL" not in bytes(probe.messageType):
                    self.recognize()
                    self.value(items, at(where, key), depth + 1)
                return None
        if probe.QueryResultRows:
            return self.lake_rows(probe.QueryResultRows, at(where, "QueryResultRows"))
        if probe.CloudTrailEvent:
            self.recognize()
            return self.value(probe.CloudTrailEvent, at(where, "CloudTrailEvent"), depth + 1)
        if probe.detail and probe.detail_type:
            if b"CloudTrail" in bytes(probe.detail_type):  # other EventBridge events are not records
                self.recognize()
                self.value(probe.detail, at(where, "detail"), depth + 1)
            return None
        for key, inner in (("result", probe.result), ("_raw", probe.splunk_raw)):
            if inner:
                return self.value(inner, at(where, key), depth + 1)
        if probe.eventSource or probe.eventName:
            return self.record(value, where, probe)
        return self.envelope(value, probe, where, depth)

    def envelope(self, value: bytes | memoryview, probe: _Probe, where: str, depth: int) -> None:
        """The rarer wrappers, metadata lines to pass over, and what is not CloudTrail."""
        if probe.message:
            return self.value(probe.message, at(where, "message"), depth + 1)
        if probe.event:
            return self.ecs(value, where, depth)
        for key, inner in (("_source", probe.source), ("hits", probe.hits)):  # Elasticsearch exports
            if inner:
                return self.value(inner, at(where, key), depth + 1)
        if probe.preview or probe.lastrow:
            return None  # a Splunk export's progress line
        if probe.digestStartTime:
            return self.bad(where, ValueError("a CloudTrail digest file, not events"))
        keys = ", ".join(sorted(_KEYS.decode(value))[:8])
        return self.bad(where, ValueError(f"not a CloudTrail record (keys: {keys})"))

    def ecs(self, value: bytes | memoryview, where: str, depth: int) -> None:
        try:
            document = _ECS.decode(value)
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        if document.event is not None and document.event.original:
            return self.value(document.event.original.encode(), at(where, "event.original"), depth + 1)
        event = _from_ecs(document)
        if event is None:
            return self.bad(where, ValueError("an Elastic document without a CloudTrail record"))
        return self.one(event, where)

    def record(self, value: bytes | memoryview, where: str, probe: _Probe) -> None:
        self.recognize()
        try:
            event = _EVENT.decode(value)
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        if not event.eventTime and probe.timestamp:  # Logstash moves eventTime to @timestamp
            with contextlib.suppress(*DECODE_ERRORS):
                event.eventTime = _STRING.decode(probe.timestamp)
        return self.one(event, where)

    def one(self, event: Event, where: str) -> None:
        """A record decoded on its own: kept if it has the fields every record has."""
        if not (event.eventTime and event.eventSource and event.eventName):
            return self.bad(where, ValueError("a CloudTrail record needs eventTime, eventSource and eventName"))
        return self.add([event])

    # -- CloudTrail Lake

    def lake_rows(self, rows_value: msgspec.Raw, where: str) -> None:
        self.recognize()
        try:
            rows = _ROWS.decode(rows_value)
        except DECODE_ERRORS as exc:
            return self.truncated(bytes(rows_value), where, exc)
        for index, row in enumerate(rows):
            self.lake_row(row, f"{where}[{index}]")
        return None

    def lake_row_text(self, value: bytes | memoryview, where: str, _depth: int = 0) -> None:
        try:
            row = msgspec.json.decode(value, type=list[dict[str, Any]])
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        return self.lake_row(row, where)

    def lake_row(self, row: list[dict[str, Any]], where: str) -> None:
        try:
            event = _EVENT.decode(msgspec.json.encode(_lake_record(row)))
        except DECODE_ERRORS as exc:
            return self.bad(where, exc)
        return self.one(event, where)


def _all_records(events: list[Event]) -> bool:
    """Whether a typed decode found records (not envelopes, whose fields all stay empty)."""
    return bool(events) and all(event.eventTime and event.eventSource and event.eventName for event in events)


def _from_ecs(document: _EcsDocument) -> Event | None:
    """The record an Elastic document was made from, as far as its ECS fields keep it."""
    trail = document.aws.cloudtrail if document.aws is not None else None
    if document.event is None or trail is None:
        return None
    user = trail.user_identity
    issuer = user.session_context.session_issuer if user is not None and user.session_context else None
    return Event(
        eventTime=document.timestamp,
        eventSource=document.event.provider or "",
        eventName=document.event.action or "",
        eventType=trail.event_type,
        errorCode=trail.error_code,
        readOnly=trail.read_only,
        recipientAccountId=trail.recipient_account_id,
        sessionCredentialFromConsole=trail.session_credential_from_console,
        userIdentity=None
        if user is None
        else _UserIdentity(
            type=user.type,
            arn=user.arn,
            invokedBy=user.invoked_by,
            sessionContext=_SessionContext(_SessionIssuer(issuer.arn)) if issuer is not None else None,
        ),
        resources=[Resource(ARN=resource.arn) for resource in trail.resources] if trail.resources else None,
        requestParameters=trail.flattened.request_parameters if trail.flattened else msgspec.Raw(b"null"),
        eventID=document.event.id,
    )


def _lake_record(row: list[dict[str, Any]]) -> dict[str, Any]:
    """A CloudTrail Lake result row (one single-key object per column) as record fields."""
    record: dict[str, Any] = {}
    identity: dict[str, Any] = {}
    for column in row:
        for name, value in column.items():
            key = name.lower()
            if key in _LAKE_FIELDS:
                record[_LAKE_FIELDS[key]] = value
            elif key in _LAKE_IDENTITY:
                identity[_LAKE_IDENTITY[key]] = value
            elif key in _LAKE_ISSUER:
                identity["sessionContext"] = {"sessionIssuer": {"arn": value}}
            elif key == "useridentity":
                identity = {**_as_object(value), **identity}
    if identity:
        record["userIdentity"] = _recase(identity)
    if "requestParameters" in record:
        record["requestParameters"] = _as_object(record["requestParameters"]) or None
    return record


def _as_object(value: Any) -> dict[str, Any]:
    """A column holding a JSON object, or its JSON text; anything else (Trino map text) is dropped."""
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
    return value if isinstance(value, dict) else {}


def _recase(value: Any) -> Any:
    """Lake lower-cases struct keys (``accountid``); give the identity fields their record names."""
    if isinstance(value, dict):
        return {_IDENTITY_NAMES.get(key.lower(), key): _recase(item) for key, item in value.items()}
    return value
