"""Activity Log records out of any file an export leaves behind, normalized (no file I/O here).

Shapes read, told apart by content:

* ``az monitor activity-log list -o json`` / REST ``eventtypes/management/values`` (``EventData``:
  ``operationName``/``status`` as ``{value, localizedValue}``, ``authorization {action, scope}``,
  ``caller``, ``claims``), as an array, an ARM page ``{"value": [...]}`` or NDJSON; also the Python
  SDK's ``EventData.as_dict()`` (snake_case);
* the diagnostic-settings export (storage account / Event Hub): ``{"records": [...]}`` per blob or
  NDJSON, upper-case ``operationName``, ``resultType``, ``identity.authorization.evidence``,
  ``identity.claims``;
* an ``AzureActivity`` table exported from Log Analytics (``OperationNameValue``,
  ``ActivityStatusValue``, ``Authorization_d``/``Claims_d``, JSON-in-a-string columns), as rows or
  as a query response ``{"tables": [{"columns", "rows"}]}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from auditor import fileio

OID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
MAX_NESTING = 4


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of one Activity Log record the audit reads."""

    time: str  # as written
    operation: str
    status: str  # succeeded | started | failed | other
    signals: tuple[str, ...]  # subStatus, statusCode, resultSignature, error code: authorization failure?
    principal: str | None  # Entra object id (claims oid or evidence principalId), lower-case
    app_id: str | None
    caller: str | None
    scope: str | None
    subscription: str | None
    operation_id: str | None  # what Started/Succeeded of one request share
    event_id: str | None
    category: str | None


class NotActivityLog(ValueError):
    """A file whose content is not Activity Log records at all."""


def _value(raw: Any) -> str | None:
    """``{"value": x, "localizedValue": y}`` or a plain string -> x."""
    if isinstance(raw, dict):
        raw = raw.get("value")
    return raw if isinstance(raw, str) and raw else None


def _object(raw: Any) -> Mapping[str, Any]:
    """A JSON object, or one serialised into a string (Log Analytics ``Claims``, ``Authorization``)."""
    if isinstance(raw, str) and raw.startswith("{"):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}
    return raw if isinstance(raw, dict) else {}


def _first(record: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = record.get(key)
        if value not in (None, ""):
            return value
    return None


_STATUS = {
    "succeeded": "succeeded",
    "success": "succeeded",
    "started": "started",
    "start": "started",
    "accepted": "started",
    "failed": "failed",
    "failure": "failed",
}


def _subscription(record: Mapping[str, Any], scope: str | None) -> str | None:
    found = _first(record, "subscriptionId", "subscription_id", "SubscriptionId")
    if isinstance(found, str):
        return found.lower()
    text = scope or _first(record, "resourceId", "resource_id", "ResourceId", "_ResourceId") or ""
    parts = text.split("/") if isinstance(text, str) else []
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("subscriptions") + 1].lower() if "subscriptions" in lowered[:-1] else None


def looks_like_record(record: Any) -> bool:
    return isinstance(record, dict) and any(
        k in record
        for k in ("operationName", "operation_name", "OperationNameValue", "OperationName", "authorization", "identity")
    )


def normalize(record: Mapping[str, Any]) -> Record:
    """One record of any supported shape; ``ValueError`` when it lacks a time or an operation."""
    identity = _object(record.get("identity"))
    authorization = _object(
        _first(record, "authorization", "Authorization_d", "Authorization") or identity.get("authorization")
    )
    claims = _object(_first(record, "claims", "Claims_d", "Claims") or identity.get("claims"))
    evidence = _object(authorization.get("evidence"))
    when = _first(record, "eventTimestamp", "event_timestamp", "time", "TimeGenerated", "timeGenerated")
    operation = _value(authorization.get("action")) or _value(
        _first(record, "operationName", "operation_name", "OperationNameValue", "OperationName")
    )
    if not isinstance(when, str) or not when:
        raise ValueError("no event time (eventTimestamp / time / TimeGenerated)")
    if not operation:
        raise ValueError("no operation (authorization.action / operationName)")
    status = _value(_first(record, "status", "resultType", "ActivityStatusValue", "ActivityStatus")) or ""
    properties = _object(_first(record, "properties", "Properties_d", "Properties"))
    signals = tuple(
        s
        for s in (
            _value(_first(record, "subStatus", "sub_status", "ActivitySubstatusValue", "ActivitySubstatus")),
            _value(record.get("resultSignature")),
            _value(properties.get("statusCode")),
            _error_code(properties),
        )
        if s
    )
    principal = _value(claims.get(OID_CLAIM)) or _value(claims.get("oid")) or _guid(_value(evidence.get("principalId")))
    app_id = _value(claims.get("appid")) or _value(claims.get("azp"))
    scope = _value(authorization.get("scope")) or _value(
        _first(record, "resourceId", "resource_id", "ResourceId", "_ResourceId")
    )
    operation_id = _value(_first(record, "operationId", "operation_id", "OperationId")) or _value(
        _first(record, "correlationId", "correlation_id", "CorrelationId")
    )
    return Record(
        when,
        operation,
        _STATUS.get(status.lower(), "other"),
        signals,
        principal.lower() if principal else None,
        app_id.lower() if app_id else None,
        _value(_first(record, "caller", "Caller")),
        scope,
        _subscription(record, scope),
        operation_id,
        _value(_first(record, "eventDataId", "event_data_id", "EventDataId", "id")),
        _category(record, properties),
    )


#: What diagnostic-settings exports write as ``category``: the operation type of an Administrative
#: record (its category proper is ``properties.eventCategory``, "Administrative" when absent).
_OPERATION_TYPES = frozenset({"write", "delete", "action"})


def _category(record: Mapping[str, Any], properties: Mapping[str, Any]) -> str | None:
    category = _value(properties.get("eventCategory")) or _value(
        _first(record, "category", "CategoryValue", "Category")
    )
    return "Administrative" if category and category.lower() in _OPERATION_TYPES else category


def _guid(text: str | None) -> str | None:
    """Diagnostic exports write ``evidence.principalId`` as 32 hex digits without dashes."""
    if text and len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    return text


def _error_code(properties: Mapping[str, Any]) -> str | None:
    """The ARM error code of a failed request (``properties.statusMessage`` is JSON in a string)."""
    error = _object(properties.get("statusMessage")).get("error")
    return _value(error.get("code")) if isinstance(error, dict) else None


def _table_rows(table: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Rows of a Log Analytics query table as dicts."""
    columns = [c.get("name") if isinstance(c, dict) else None for c in table.get("columns") or []]
    for row in table.get("rows") or []:
        if isinstance(row, list):
            yield dict(zip(columns, row, strict=False))


BadRecord = Callable[[str, Exception], None]


def records_of(value: Any, where: str, bad: BadRecord, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """The raw records inside one decoded JSON value (a record, a list, a page or a table export)."""
    if depth > MAX_NESTING:
        bad(where, ValueError("wrapped in too many envelopes"))
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from records_of(item, f"{where}[{index}]", bad, depth + 1)
        return
    if not isinstance(value, dict):
        bad(where, ValueError(f"not a JSON object (a {type(value).__name__})"))
        return
    for key in ("records", "value", "Records"):
        if isinstance(value.get(key), list):
            yield from records_of(value[key], f"{where}.{key}" if where else key, bad, depth + 1)
            return
    if isinstance(value.get("tables"), list):
        for number, table in enumerate(value["tables"]):
            if isinstance(table, dict):
                for index, row in enumerate(_table_rows(table)):
                    yield from records_of(row, f"tables[{number}].rows[{index}]", bad, depth + 1)
        return
    if looks_like_record(value):
        yield value
        return
    keys = sorted(value)
    if not keys or keys == ["nextLink"]:
        return  # an empty page
    bad(where, ValueError(f"not an Activity Log record (keys: {', '.join(map(str, keys[:8]))})"))


def decode(raw: bytes, bad: BadRecord) -> list[Mapping[str, Any]]:
    """The raw records of one file's text: one JSON document, NDJSON, or a truncated array (its
    complete items); ``NotActivityLog`` when no record is found at all."""
    text = raw.removeprefix(fileio.UTF8_BOM)
    if fileio.first_byte(text) < 0:
        return []
    problems: list[tuple[str, Exception]] = []

    def hold(where: str, exc: Exception) -> None:
        problems.append((where, exc))

    found: list[Mapping[str, Any]] = []
    try:
        found = list(records_of(orjson.loads(text), "", hold))
    except orjson.JSONDecodeError as whole:
        for line, value, ended in fileio.json_values(text):
            where = f"line {line}"
            if not ended:
                found += _truncated(bytes(value), where, hold)
                continue
            try:
                found += records_of(orjson.loads(bytes(value)), where, hold)
            except orjson.JSONDecodeError as exc:
                hold(where, exc if "recursion" not in str(exc) else ValueError("nested too deeply"))
        if not found and not problems:
            hold("", whole)
    if not found and problems:
        where, exc = problems[0]
        raise NotActivityLog(f"not an Activity Log export ({where + ': ' if where else ''}{exc})")
    for where, exc in problems:
        bad(where, exc)
    return found


def _truncated(text: bytes, where: str, bad: BadRecord) -> list[Mapping[str, Any]]:
    """The complete items of an array (or a ``{"records": [...]}``/``{"value": [...]}`` page) the text
    ends inside; the cut item is one bad record."""
    start = len(text) - len(text.lstrip())
    items_at = start if fileio.first_byte(text) == 0x5B else None
    if items_at is None and fileio.first_byte(text) == 0x7B:
        for key, value_start in fileio.object_members(text, start):
            if key in ("records", "value") and text[value_start : value_start + 1] == b"[":
                items_at, where = value_start, f"{where}.{key}"
                break
    if items_at is None:
        bad(where, ValueError("the text ends inside this value"))
        return []
    found: list[Mapping[str, Any]] = []
    for index, item in fileio.array_items(text, items_at):
        if item is None:
            bad(f"{where}[{index}]", ValueError("the text ends before this record does"))
            continue
        try:
            found += records_of(orjson.loads(bytes(item)), f"{where}[{index}]", bad)
        except orjson.JSONDecodeError as exc:
            bad(f"{where}[{index}]", exc)
    return found
