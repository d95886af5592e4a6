"""Command-line glue for GCP: the ``--gcp-*`` inputs of ``auditor audit`` and ``auditor collect gcp``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.connectors.base import Connector, Progress
from auditor.connectors.gcp.files import GcpFiles
from auditor.errors import InputError

#: Temporary snapshot folders of ``audit --gcp-project`` without ``--gcp-snapshot``, removed at exit.
_TEMPORARY: list[tempfile.TemporaryDirectory[str]] = []


def _explicit_files(policy: list[Path], roles: list[Path], logs: list[Path], insights: list[Path]) -> GcpFiles:
    if not (policy and roles and logs):
        raise InputError("--gcp-policy, --gcp-roles and --gcp-logs go together", "pass all three, or --gcp-dir DIR")
    return GcpFiles(tuple(policy), tuple(roles), tuple(logs), insight_files=tuple(insights))


def gcp_connectors(
    gcp_dir: list[Path],
    policy: list[Path],
    roles: list[Path],
    logs: list[Path],
    insights: list[Path],
    project: list[str],
    bigquery_table: str | None,
    snapshot: Path | None,
    days: int,
    until: datetime | None,
    progress: Progress,
    collect: Callable[..., Path] | None = None,
) -> list[Connector]:
    """Offline GCP connectors for the options given; ``--gcp-project`` collects a snapshot first."""
    connectors: list[Connector] = [GcpFiles.from_dir(d) for d in gcp_dir]
    if policy or roles or logs or insights:
        connectors.append(_explicit_files(policy, roles, logs, insights))
    if bigquery_table and not project:
        raise InputError("--bigquery-table needs --gcp-project", "the query runs against the live project")
    if snapshot and len(project) > 1:
        raise InputError("--gcp-snapshot takes one --gcp-project", "collect the projects one by one")
    for name in project:
        if snapshot is None:
            holder = tempfile.TemporaryDirectory(prefix="auditor-gcp-")
            _TEMPORARY.append(holder)
            folder = Path(holder.name) / name
        else:
            folder = snapshot
        (collect or collect_snapshot)(name, folder, days, until, bigquery_table, progress)
        connectors.append(GcpFiles.from_dir(folder))
    return connectors


def collect_snapshot(
    project: str,
    out: Path,
    days: int,
    until: datetime | None,
    bigquery_table: str | None,
    progress: Progress,
    endpoint: str | None = None,
    credentials: Any = None,
    predefined_roles: bool = True,
) -> Path:
    from auditor.connectors.gcp.live import CollectOptions, Endpoints, GcpCollector, default_credentials

    options = CollectOptions(project, days, until, bigquery_table, predefined_roles=predefined_roles)
    collector = GcpCollector(
        options,
        credentials if credentials is not None else default_credentials(),
        Endpoints.single(endpoint) if endpoint else Endpoints(),
        progress=progress,
    )
    return collector.collect(out)


def collect_gcp(
    project: Annotated[str, typer.Option(help="Project ID to collect from (read-only calls, ADC credentials).")],
    out: Annotated[Path, typer.Option(help="New folder for the snapshot (audit it with --gcp-dir).")],
    days: Annotated[int, typer.Option(min=1, max=400, help="Days of audit logs to collect.")] = 30,
    until: Annotated[str | None, typer.Option(help="Window end (ISO-8601). Default: now.")] = None,
    bigquery_table: Annotated[
        str | None,
        typer.Option(
            help="Aggregate the logs in BigQuery instead: the log sink's PROJECT.DATASET.TABLE (wildcard ok)."
        ),
    ] = None,
    predefined_roles: Annotated[
        bool, typer.Option(help="Also fetch every predefined role (for the smaller-role suggestion).")
    ] = True,
    endpoint: Annotated[
        str | None, typer.Option(hidden=True, help="Send every Google API call here, unauthenticated (test servers).")
    ] = None,
) -> None:
    """Collect a GCP project's IAM policies, roles and Cloud Audit Logs into a snapshot folder."""
    from auditor.cli import _tty_progress, _until

    credentials = None
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    folder = collect_snapshot(
        project, out, days, _until(until), bigquery_table, _tty_progress(), endpoint, credentials, predefined_roles
    )
    typer.echo(f"wrote snapshot of projects/{project} to {folder} (audit it with --gcp-dir {folder})")
