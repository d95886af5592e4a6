"""Athena pushdown: the aggregation runs in Athena over the CloudTrail table, auditor reads only rows.

One aggregate query (identity ARN, event source, event name, error code, count, first/last seen) plus
one per-day event count (so days missing from the logs are still told apart from unused permissions).
The table is the one AWS documents for CloudTrail logs; when its partitions are the documented
``timestamp`` (``yyyy/MM/dd``) or ``year/month/day`` projection, the window becomes a partition
filter and Athena reads only the window's files.

Athena writes each query's result file to its output location (``--athena-output`` or the
workgroup's setting): that is Athena's behaviour and the only write a collection causes.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from auditor.errors import ConnectorError, InputError
from auditor.timefmt import iso_utc

_NAME = re.compile(r"^[A-Za-z0-9_]+$")
EVENT_TYPES = "('AwsApiCall', 'AwsConsoleAction')"
POLL_START, POLL_MAX, TIMEOUT = 0.2, 5.0, 1800.0

USAGE_SQL = """SELECT
  coalesce(useridentity.sessioncontext.sessionissuer.arn, useridentity.arn) AS identity,
  recipientaccountid AS account,
  eventsource AS event_source,
  eventname AS event_name,
  errorcode AS error_code,
  count(*) AS calls,
  min(eventtime) AS first_seen,
  max(eventtime) AS last_seen
FROM {table}
WHERE {where}
  AND (eventtype IS NULL OR eventtype IN {event_types})
GROUP BY 1, 2, 3, 4, 5"""

DAYS_SQL = """SELECT
  recipientaccountid AS account,
  substr(eventtime, 1, 10) AS day,
  count(*) AS events,
  min(eventtime) AS first_seen,
  max(eventtime) AS last_seen
FROM {table}
WHERE {where}
GROUP BY 1, 2"""


@dataclass(frozen=True)
class AthenaTable:
    database: str
    table: str

    @classmethod
    def parse(cls, text: str) -> AthenaTable:
        database, _, table = text.partition(".")
        if not (_NAME.match(database) and _NAME.match(table)):
            raise InputError(
                f"--athena-table {text!r}: expected DATABASE.TABLE", "e.g. --athena-table default.cloudtrail"
            )
        return cls(database, table)

    @property
    def sql(self) -> str:
        return f'"{self.database}"."{self.table}"'

    def __str__(self) -> str:
        return f"{self.database}.{self.table}"


def partition_filter(keys: list[str], first: date, last: date) -> str | None:
    """A predicate on the documented date partitions (delivery day, so one day past the window)."""
    last = last + timedelta(days=1)
    names = {k.lower() for k in keys}
    for name in ("timestamp", "date", "dt"):
        if name in names:
            return f"\"{name}\" BETWEEN '{first:%Y/%m/%d}' AND '{last:%Y/%m/%d}'"
    if {"year", "month", "day"} <= names:
        return f"concat(year, '/', month, '/', day) BETWEEN '{first:%Y/%m/%d}' AND '{last:%Y/%m/%d}'"
    return None


def queries(table: AthenaTable, start: datetime, end: datetime, partition: str | None) -> dict[str, str]:
    where = f"eventtime BETWEEN '{iso_utc(start)}' AND '{iso_utc(end)}'" + (f"\n  AND {partition}" if partition else "")
    return {
        "usage": USAGE_SQL.format(table=table.sql, where=where, event_types=EVENT_TYPES),
        "day": DAYS_SQL.format(table=table.sql, where=where),
    }


def partition_keys(client: Any, table: AthenaTable) -> list[str]:
    metadata = client.get_table_metadata(
        CatalogName="AwsDataCatalog", DatabaseName=table.database, TableName=table.table
    )
    return [k["Name"] for k in metadata["TableMetadata"].get("PartitionKeys") or []]


def _wait(client: Any, query_id: str) -> dict[str, Any]:
    delay, waited = POLL_START, 0.0
    while True:
        execution = client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        state = execution["Status"]["State"]
        if state == "SUCCEEDED":
            return execution
        if state in ("FAILED", "CANCELLED"):
            reason = execution["Status"].get("StateChangeReason", "no reason given")
            raise ConnectorError(
                f"Athena query {query_id} {state.lower()}: {reason}", "check --athena-table / --athena-output"
            )
        if waited > TIMEOUT:
            raise ConnectorError(f"Athena query {query_id} still {state.lower()} after {TIMEOUT:.0f} s")
        time.sleep(delay)
        waited += delay
        delay = min(delay * 1.5, POLL_MAX)


def _rows(client: Any, query_id: str) -> list[dict[str, str | None]]:
    rows: list[dict[str, str | None]] = []
    columns: list[str] = []
    for page in client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
        result = page["ResultSet"]
        if not columns:
            columns = [c["Name"] for c in result["ResultSetMetadata"]["ColumnInfo"]]
        for row in result.get("Rows") or []:
            values = [d.get("VarCharValue") for d in row.get("Data") or []]
            if not rows and values == columns:  # the header row Athena puts first
                continue
            rows.append(dict(zip(columns, values, strict=False)))
    return rows


def run(
    client: Any,
    table: AthenaTable,
    workgroup: str,
    output: str | None,
    start: datetime,
    end: datetime,
    partition: str | None,
) -> dict[str, Any]:
    """Start both queries, wait, and return the document written as ``athena-usage.json``."""
    params: dict[str, Any] = {"WorkGroup": workgroup, "QueryExecutionContext": {"Database": table.database}}
    if output:
        params["ResultConfiguration"] = {"OutputLocation": output}
    texts = queries(table, start, end, partition)
    started = {
        kind: client.start_query_execution(QueryString=sql, **params)["QueryExecutionId"] for kind, sql in texts.items()
    }
    doc: dict[str, Any] = {
        "table": str(table),
        "workgroup": workgroup,
        "output": output,
        "partition_filter": partition,
        "window": {"start": iso_utc(start), "end": iso_utc(end)},
        "queries": [],
    }
    for kind, query_id in started.items():
        execution = _wait(client, query_id)
        rows = _rows(client, query_id)
        doc[f"{kind}_rows"] = rows
        doc["queries"].append(
            {
                "kind": kind,
                "id": query_id,
                "sql": texts[kind],
                "rows": len(rows),
                "scanned_bytes": (execution.get("Statistics") or {}).get("DataScannedInBytes"),
                "output": (execution.get("ResultConfiguration") or {}).get("OutputLocation"),
            }
        )
    return doc
