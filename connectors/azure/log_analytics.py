"""Log Analytics pushdown: count the window's ``AzureActivity`` rows in the workspace, not here.

Subscriptions whose diagnostic settings send the Activity Log to a Log Analytics workspace can be
audited from one KQL query (:data:`AGGREGATION_KQL`) run by ``LogsQueryClient``: rows are folded
per request first (a write logs Started, Accepted and Succeeded; each request counts once), then per
(subscription, category, caller object id, app id, operation, outcome signals) with call counts,
first/last seen and up to 64 scopes; a second part of the same query counts every row per
subscription and day, so days without records are told apart from unused permissions. Only those
rows leave the workspace: ``auditor collect azure --workspace`` writes them to
``log-analytics-usage.json`` and the offline connector folds them like counters from log files.

The outcome stays the reader's: a row says whether the request had records that did not fail
(``Ok``) and which ``subStatus``/``statusCode`` its failed records carried (``Signals``), and
``rules/azure/operations.yaml`` decides which of those are authorization failures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from auditor.connectors.azure.activity_logs import MAX_RESOURCES, UNKNOWN_OPERATION, Partial, ScanOptions
from auditor.errors import InputError
from auditor.timefmt import iso_utc

FORMAT = "auditor.azure-log-analytics-usage/v1"
EVIDENCE_LA = "log-analytics"
_WORKSPACE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

#: The one query. ``{start}``/``{end}`` are ISO-8601 UTC instants (validated before formatting);
#: JSON columns exist as strings (``Claims``) and, in newer workspaces, as dynamic (``Claims_d``).
AGGREGATION_KQL = """\
let records = AzureActivity
| where TimeGenerated between (datetime({start}) .. datetime({end}));
let calls = records
| extend ClaimsJson = tostring(column_ifexists("Claims_d", "")),
         AuthJson = tostring(column_ifexists("Authorization_d", "")),
         PropsJson = tostring(column_ifexists("Properties_d", ""))
| extend claims = parse_json(iff(isnotempty(ClaimsJson), ClaimsJson, tostring(column_ifexists("Claims", "")))),
         authz = parse_json(iff(isnotempty(AuthJson), AuthJson, tostring(column_ifexists("Authorization", "")))),
         props = parse_json(iff(isnotempty(PropsJson), PropsJson, tostring(column_ifexists("Properties", ""))))
| extend Principal = tolower(coalesce(
             tostring(claims["http://schemas.microsoft.com/identity/claims/objectidentifier"]), tostring(claims.oid))),
         AppId = tolower(coalesce(tostring(claims.appid), tostring(claims.azp))),
         Operation = coalesce(tostring(authz.action), OperationNameValue),
         Scope = coalesce(tostring(authz.scope), _ResourceId),
         Request = coalesce(tostring(column_ifexists("OperationId", "")), CorrelationId, EventDataId),
         Failed = ActivityStatusValue in~ ("Failed", "Failure"),
         Signal = strcat(ActivitySubstatusValue, " ", tostring(props.statusCode))
| summarize Ok = countif(not(Failed)) > 0, Signals = make_set_if(Signal, Failed), First = min(TimeGenerated),
            Last = max(TimeGenerated), Scope = take_any(Scope)
    by SubscriptionId = tolower(SubscriptionId), Category = CategoryValue, Principal, AppId, Operation, Request
| extend Signals = strcat_array(array_sort_asc(Signals), "|")
| summarize Calls = count(), FirstSeen = min(First), LastSeen = max(Last), Scopes = make_set(Scope, 64)
    by SubscriptionId, Category, Principal, AppId, Operation, Ok, Signals
| extend Kind = "calls";
let days = records
| summarize Records = count(), FirstSeen = min(TimeGenerated), LastSeen = max(TimeGenerated)
    by SubscriptionId = tolower(SubscriptionId), Day = format_datetime(TimeGenerated, "yyyy-MM-dd")
| extend Kind = "day";
union calls, days
| project Kind, SubscriptionId, Day, Records, Category, Principal, AppId, Operation, Ok, Signals, Calls,
          FirstSeen, LastSeen, Scopes
"""

_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def aggregation_query(start: str, end: str) -> str:
    """The KQL for the window ``start .. end`` (both ``YYYY-MM-DDTHH:MM:SSZ``, inclusive)."""
    for value in (start, end):
        if not _INSTANT.match(value):
            raise ValueError(f"not an ISO-8601 UTC instant: {value!r}")
    return AGGREGATION_KQL.format(start=start, end=end)


def check_workspace(workspace: str) -> str:
    """A workspace is named by its workspace (customer) id, a GUID."""
    if not _WORKSPACE.match(workspace):
        raise InputError(
            f"--workspace {workspace!r} is not a Log Analytics workspace id",
            "pass the workspace's GUID (`az monitor log-analytics workspace show --query customerId`)",
        )
    return workspace.lower()


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value)
    return "" if value is None else str(value)


def rows_of(tables: Iterable[Any]) -> list[dict[str, Any]]:
    """The rows of a ``LogsQueryResult``'s tables as JSON-ready dicts (times as ISO-8601 UTC)."""
    found = []
    for table in tables:
        columns = list(table.columns)
        for row in table.rows:
            item = {}
            for name, value in zip(columns, row, strict=False):
                item[name] = _text(value) if isinstance(value, datetime) else value
            found.append(item)
    return found


def _scopes(value: Any) -> set[str]:
    if isinstance(value, str) and value.startswith("["):
        import orjson

        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return set()
    return {s for s in value if isinstance(s, str) and s} if isinstance(value, list) else set()


def _instant(value: Any) -> str:
    text = _text(value)
    return text[:19] + "Z" if len(text) >= 19 else ""


def fold_rows(rows: Iterable[Mapping[str, Any]], options: ScanOptions, out: Partial) -> None:
    """Fold aggregated rows (as :data:`AGGREGATION_KQL` returns them) into ``out``, as the log
    reader folds records: same principals (object id, else app id), same operations, same outcomes."""
    for row in rows:
        subscription = str(row.get("SubscriptionId") or "?").lower()
        first, last = _instant(row.get("FirstSeen")), _instant(row.get("LastSeen"))
        if row.get("Kind") == "day":
            records = int(row.get("Records") or 0)
            if first and last and first <= options.cap:
                out.saw(subscription, first, min(last, options.cap), {str(row.get("Day")): records}, records)
            continue
        calls = int(row.get("Calls") or 0)
        if not (first and last) or calls <= 0:
            continue
        category = str(row.get("Category") or "")
        if category and category.lower() != "administrative":
            out.skip(f"{category} record (not a call)", calls, subscription)
            continue
        principal = str(row.get("Principal") or "") or options.app_ids.get(str(row.get("AppId") or ""))
        if not principal:
            out.skip("no caller object id or app id", calls, subscription)
            continue
        if options.identities is not None and principal not in options.identities:
            continue
        name = str(row.get("Operation") or "")
        operation = options.operations.get(name.lower())
        if operation is None:
            key4 = (subscription, principal, name, UNKNOWN_OPERATION)
            out.unmapped[key4] = out.unmapped.get(key4, 0) + calls
            continue
        signals = [s for s in str(row.get("Signals") or "").split("|") if s.strip()]
        refused = [options.rules.is_authorization_failure(s) for s in signals]
        outcomes = ["denied"] if any(refused) else []
        if row.get("Ok") is True or not all(refused) or not signals:  # the check passed (or nothing says no)
            outcomes.append("used")
        for outcome in outcomes:
            key = (subscription, principal, operation, outcome, EVIDENCE_LA)
            _add(out, key, calls, first, last, _scopes(row.get("Scopes")))


def _add(
    out: Partial, key: tuple[str, str, str, str, str], calls: int, first: str, last: str, scopes: set[str]
) -> None:
    counter = out.usage.get(key)
    if counter is None:
        out.usage[key] = [calls, first, last, set(list(scopes)[:MAX_RESOURCES])]
        return
    counter[0] += calls
    counter[1], counter[2] = min(counter[1], first), max(counter[2], last)
    if len(counter[3]) < MAX_RESOURCES:
        counter[3] |= scopes


def run_aggregation(client: Any, workspace: str, start: datetime, end: datetime) -> tuple[list[dict[str, Any]], str]:
    """Run the query with ``client`` (an ``azure.monitor.query.LogsQueryClient``): (rows, partial
    error message or "")."""
    from azure.monitor.query import LogsQueryStatus

    query = aggregation_query(iso_utc(start), iso_utc(end))
    result = client.query_workspace(workspace, query, timespan=(start, end), server_timeout=600)
    if result.status == LogsQueryStatus.PARTIAL:
        error = result.partial_error
        message = f"{getattr(error, 'code', '')}: {getattr(error, 'message', '')}".strip(": ")
        return rows_of(result.partial_data), message or "partial result"
    return rows_of(result.tables), ""
