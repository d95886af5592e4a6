"""Azure Storage resource log records, normalized (no file I/O here).

Shapes read (the envelopes are :mod:`~auditor.connectors.azure.activity_records`'s): what diagnostic
settings write to a storage account (``insights-logs-storageread/...PT1H.json``, one record per
line) or to an Event Hub (``{"records": [...]}``): ``time``, ``resourceId``
(``.../storageAccounts/A/blobServices/default``), ``category``, ``operationName``, ``statusCode``,
``statusText``, ``correlationId``, ``identity {type, authorization[], requester}``; and rows of the
Log Analytics ``StorageBlobLogs`` / ``StorageQueueLogs`` / ``StorageTableLogs`` /
``StorageFileLogs`` tables (``TimeGenerated``, ``_ResourceId``, ``Category``, ``AuthenticationType``,
``RequesterObjectId``, ``RequesterAppId``, ``AuthorizationDetails``...), as rows or a query response.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

#: The three categories a diagnostic setting can enable, each on its own.
CATEGORIES = ("StorageRead", "StorageWrite", "StorageDelete")
_CATEGORY = {c.lower(): c for c in CATEGORIES}
SERVICES = ("blob", "queue", "table", "file")
_TABLES = {f"storage{s}logs": s for s in SERVICES}
#: Authentication types whose requests are made by an Entra identity (RBAC-authorized).
IDENTITY_AUTH = frozenset({"oauth", "kerberos"})
_ACCOUNT = re.compile(
    r"^(/subscriptions/([^/]+)/resourcegroups/[^/]+/providers/microsoft\.storage/storageaccounts/[^/]+)"
    r"(?:/(blob|queue|table|file)services(?:/.*)?)?/?$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Authorization:
    action: str
    denied: bool  # the entry's result says the check refused it
    principal: str | None  # lower-case


@dataclass(frozen=True, slots=True)
class StorageRecord:
    """The fields of one storage request the audit reads."""

    time: str  # as written
    account: str  # the storage account resource id, as written
    subscription: str  # lower-case
    service: str  # blob | queue | table | file
    category: str  # StorageRead | StorageWrite | StorageDelete
    operation: str
    status_code: int | None
    status_text: str
    auth_type: str  # as written ("" when absent)
    principal: str | None  # requester object id, lower-case
    app_id: str | None
    authorization: tuple[Authorization, ...]
    request: str | None  # correlationId


def _object(raw: Any) -> Any:
    """A JSON value, or one serialised into a string (Log Analytics ``dynamic`` columns)."""
    if isinstance(raw, str) and raw[:1] in ("{", "["):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    return raw


def _text(record: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _status(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    return None


def _authorization(raw: Any) -> tuple[Authorization, ...]:
    entries = _object(raw)
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        return ()
    found = []
    for entry in entries:
        action = entry.get("action") if isinstance(entry, dict) else None
        if not isinstance(action, str) or not action:
            continue
        principals = entry.get("principals")
        first = principals[0] if isinstance(principals, list) and principals else None
        principal = first.get("id") if isinstance(first, dict) else None
        result = entry.get("result")
        found.append(
            Authorization(
                action,
                isinstance(result, str) and result.lower() in ("denied", "deny"),
                principal.lower() if isinstance(principal, str) and principal else None,
            )
        )
    return tuple(found)


def normalize(record: Mapping[str, Any]) -> StorageRecord:
    """One storage request record of either shape; ``ValueError`` when it is not one."""
    when = _text(record, "time", "TimeGenerated", "timeGenerated")
    if not when:
        raise ValueError("no time (time / TimeGenerated)")
    operation = _text(record, "operationName", "OperationName")
    if not operation:
        raise ValueError("no operationName")
    category = _CATEGORY.get((_text(record, "category", "Category") or "").lower())
    if category is None:
        raise ValueError(f"category {record.get('category', record.get('Category'))!r} is not {', '.join(CATEGORIES)}")
    resource = _text(record, "resourceId", "_ResourceId", "ResourceId") or ""
    match = _ACCOUNT.match(resource)
    if match is None:
        raise ValueError(f"resourceId {resource[:120]!r} is not a storage account (or one of its services)")
    identity = _object(record.get("identity"))
    identity = identity if isinstance(identity, dict) else {}
    properties = _object(record.get("properties"))
    properties = properties if isinstance(properties, dict) else {}
    service = (
        match.group(3)
        or _text(properties, "serviceType")
        or _text(record, "ServiceType")
        or _TABLES.get((_text(record, "Type") or "").lower())
        or ""
    ).lower()
    if service not in SERVICES:
        raise ValueError("cannot tell the storage service (resourceId .../blobServices/default, serviceType)")
    requester = _object(identity.get("requester"))
    requester = requester if isinstance(requester, dict) else {}
    principal = _text(requester, "objectId") or _text(record, "RequesterObjectId")
    app_id = _text(requester, "appId") or _text(record, "RequesterAppId")
    return StorageRecord(
        when,
        match.group(1),
        match.group(2).lower(),
        service,
        category,
        operation,
        _status(record.get("statusCode", record.get("StatusCode"))),
        _text(record, "statusText", "StatusText") or "",
        _text(identity, "type") or _text(record, "AuthenticationType") or "",
        principal.lower() if principal else None,
        app_id.lower() if app_id else None,
        _authorization(identity.get("authorization", record.get("AuthorizationDetails"))),
        _text(record, "correlationId", "CorrelationId"),
    )
