"""BigQuery pushdown: aggregate Cloud Audit Logs routed to BigQuery by a log sink, in BigQuery.

One query groups the window's entries by (project, principal, service, permission, granted) with
call counts, first/last seen and the days with entries; only those aggregated rows leave BigQuery.
``auditor collect gcp --bigquery-table`` writes them to ``bigquery-usage.json`` in the snapshot and
the offline connector folds them exactly like counters from log files.

The table is the sink's: ``PROJECT.DATASET.cloudaudit_googleapis_com_activity`` (or ``..._data_access``,
or the wildcard ``PROJECT.DATASET.cloudaudit_googleapis_com_*`` for both), with the BigQuery log
schema (``protopayload_auditlog.authorizationInfo`` ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from auditor.connectors.gcp.audit_logs import EVIDENCE, K8S_SERVICE, Partial
from auditor.errors import InputError

FORMAT = "auditor.gcp-bigquery-usage/v1"
_TABLE = re.compile(r"^[A-Za-z0-9_.:-]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_$*-]+$")

AGGREGATION_SQL = """\
WITH checked_operations AS (
  SELECT DISTINCT operation.id AS id
  FROM `{table}`, UNNEST(protopayload_auditlog.authorizationInfo) AS checked
  WHERE timestamp >= @start AND timestamp <= @end AND operation.id IS NOT NULL
)
SELECT
  REGEXP_EXTRACT(logName, r'^projects/([^/]+)/') AS project,
  protopayload_auditlog.authenticationInfo.principalEmail AS principal,
  protopayload_auditlog.serviceName AS service,
  IF(auth.permission IS NULL, protopayload_auditlog.methodName, NULL) AS method,
  auth.permission AS permission,
  IFNULL(auth.granted, FALSE) AS granted,
  IF(auth.permission IS NULL, COUNT(DISTINCT IFNULL(operation.id, insertId)), COUNT(*)) AS calls,
  FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%SZ', MIN(timestamp)) AS first_seen,
  FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%SZ', MAX(timestamp)) AS last_seen,
  ARRAY_AGG(DISTINCT FORMAT_DATE('%F', DATE(timestamp))) AS days
FROM `{table}`
LEFT JOIN UNNEST(protopayload_auditlog.authorizationInfo) AS auth
WHERE timestamp >= @start AND timestamp <= @end
  AND logName LIKE '%cloudaudit.googleapis.com%'
  -- the closing entries of an operation whose first entry carried the check are not calls of their own
  AND NOT (auth.permission IS NULL AND operation.id IN (SELECT id FROM checked_operations))
GROUP BY project, principal, service, method, permission, granted
"""


def aggregation_query(table: str) -> str:
    """The SQL for ``table`` (``PROJECT.DATASET.TABLE``, wildcard suffix allowed); validated, since
    a table name cannot be a query parameter."""
    if not _TABLE.match(table):
        raise InputError(
            f"--bigquery-table {table!r} is not PROJECT.DATASET.TABLE",
            "e.g. my-logs-project.audit_logs.cloudaudit_googleapis_com_*",
        )
    return AGGREGATION_SQL.format(table=table)


def fold_rows(rows: Iterable[Mapping[str, Any]], keep: frozenset[str] | None, out: Partial) -> None:
    """Fold aggregated rows (as :func:`aggregation_query` returns them) into ``out``, as the log
    reader folds entries: calls without a check go to ``unchecked`` (operations counted once by the
    query), and every permission checked in the window is one the logs demonstrably record."""
    for row in rows:
        calls = int(row.get("calls") or 0)
        first, last = str(row.get("first_seen") or ""), str(row.get("last_seen") or "")
        project = str(row.get("project") or "?")
        days = dict.fromkeys(sorted(str(d) for d in row.get("days") or ()), 0)
        if days:  # the calls are counted on the first day: what matters per day is that it has events
            days[next(iter(days))] = calls
        if first and last:
            out.saw(project, first, last, days, in_window=calls)
        service, permission = str(row.get("service") or "?"), row.get("permission")
        if permission and service != K8S_SERVICE:
            out.seen_permissions.add(str(permission))
        principal = row.get("principal")
        if not principal:
            out.skip("no principal (system event)", calls, project)
            continue
        if keep is not None and principal not in keep:
            continue
        if service == K8S_SERVICE:
            key = (
                project,
                principal,
                f"{service}:{row.get('method') or permission}",
                "GKE pseudo-permission, not an IAM permission",
            )
            out.unmapped[key] = out.unmapped.get(key, 0) + calls
            continue
        if not permission:
            ukey = (project, principal, service, str(row.get("method") or "?"))
            mine = out.unchecked.get(ukey)
            if mine is None:
                out.unchecked[ukey] = [calls, first, last]
            else:
                mine[0] += calls
                mine[1], mine[2] = min(mine[1], first), max(mine[2], last)
            continue
        outcome = "used" if row.get("granted") is True else "denied"
        key5 = (project, principal, str(permission), outcome, EVIDENCE)
        counter = out.usage.get(key5)
        if counter is None:
            out.usage[key5] = [calls, first, last, set()]
        else:
            counter[0] += calls
            counter[1] = min(counter[1], first)
            counter[2] = max(counter[2], last)


def run_aggregation(client: Any, table: str, start: str, end: str, page_size: int = 10_000) -> list[dict[str, Any]]:
    """Run the aggregation with ``client`` (a ``google.cloud.bigquery.Client``) and return its rows."""
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
            bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
        ]
    )
    job = client.query(aggregation_query(table), job_config=config)
    return [dict(row.items()) for row in job.result(page_size=page_size)]
