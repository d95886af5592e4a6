"""GCP on the command line: the ``auditor audit`` GCP options, ``auditor collect gcp`` and
``auditor gcp-apply-plan``."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option, interruptible, parse_until, tty_progress
from auditor.connectors.base import Progress, Source
from auditor.errors import InputError
from auditor.fileio import load_json

PROVIDER = "gcp"
PANEL = "GCP"

#: Temporary snapshot folders of ``audit --gcp-project`` without ``--gcp-snapshot``, removed at exit.
_TEMPORARY: list[tempfile.TemporaryDirectory[str]] = []

AUDIT_OPTIONS = [
    Option(
        "gcp_dir",
        Annotated[
            list[Path],
            typer.Option(
                help="GCP snapshot folder: policies/projects/<P>.json, roles/, logs/ or a log sink's "
                "cloudaudit.googleapis.com/ tree (what `auditor collect gcp` writes).",
                metavar="DIR",
                rich_help_panel=PANEL,
            ),
        ],
        [],
    ),
    Option(
        "gcp_policy",
        Annotated[
            list[Path],
            typer.Option(
                help="`gcloud projects get-iam-policy P --format=json` output.", metavar="FILE", rich_help_panel=PANEL
            ),
        ],
        [],
    ),
    Option(
        "gcp_roles",
        Annotated[
            list[Path],
            typer.Option(
                help="`gcloud iam roles describe` outputs (files or folders).", metavar="PATH", rich_help_panel=PANEL
            ),
        ],
        [],
    ),
    Option(
        "gcp_logs",
        Annotated[
            list[Path],
            typer.Option(
                help="`gcloud logging read --format=json` output or sink NDJSON.", metavar="PATH", rich_help_panel=PANEL
            ),
        ],
        [],
    ),
    Option(
        "gcp_insights",
        Annotated[
            list[Path],
            typer.Option(
                help="IAM Recommender insights JSON (extra usage signal).", metavar="FILE", rich_help_panel=PANEL
            ),
        ],
        [],
    ),
    Option(
        "gcp_project",
        Annotated[
            list[str],
            typer.Option(help="Collect this project live first (ADC credentials).", metavar="P", rich_help_panel=PANEL),
        ],
        [],
    ),
    Option(
        "bigquery_table",
        Annotated[
            str | None,
            typer.Option(
                help="With --gcp-project: aggregate the logs in this BigQuery log-sink table.", rich_help_panel=PANEL
            ),
        ],
        None,
    ),
    Option(
        "gcp_snapshot",
        Annotated[
            Path | None,
            typer.Option(
                help="Keep the --gcp-project snapshot in DIR (default: a temporary folder).", rich_help_panel=PANEL
            ),
        ],
        None,
    ),
]


def sources(values: Mapping[str, Any], common: Any, progress: Progress) -> list[Source]:
    """Offline GCP sources for the options given; ``--gcp-project`` collects a snapshot first."""
    policy, roles, logs, insights = (values[k] for k in ("gcp_policy", "gcp_roles", "gcp_logs", "gcp_insights"))
    projects, table, snapshot = values["gcp_project"], values["bigquery_table"], values["gcp_snapshot"]
    if not (values["gcp_dir"] or policy or roles or logs or insights or projects or table or snapshot):
        return []
    from auditor.connectors.gcp.files import GcpFiles  # imported only when GCP is audited

    found: list[Source] = [GcpFiles.from_dir(d) for d in values["gcp_dir"]]
    if policy or roles or logs or insights:
        if not (policy and roles and logs):
            raise InputError("--gcp-policy, --gcp-roles and --gcp-logs go together", "pass all three, or --gcp-dir DIR")
        found.append(GcpFiles(tuple(policy), tuple(roles), tuple(logs), insight_files=tuple(insights)))
    if table and not projects:
        raise InputError("--bigquery-table needs --gcp-project", "the query runs against the live project")
    if snapshot and len(projects) > 1:
        raise InputError("--gcp-snapshot takes one --gcp-project", "collect the projects one by one")
    for name in projects:
        if snapshot is None:
            holder = tempfile.TemporaryDirectory(prefix="auditor-gcp-")
            _TEMPORARY.append(holder)
            folder = Path(holder.name) / name
        else:
            folder = snapshot
        collect_snapshot(name, folder, common.days, common.until, table, progress)
        found.append(GcpFiles.from_dir(folder))
    return found


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
    credentials = None
    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    folder = collect_snapshot(
        project, out, days, parse_until(until), bigquery_table, tty_progress(), endpoint, credentials, predefined_roles
    )
    typer.echo(f"wrote snapshot of projects/{project} to {folder} (audit it with --gcp-dir {folder})")


def apply_plan(
    policy: Annotated[
        Path, typer.Option(help="The exported policy: `gcloud projects get-iam-policy P --format=json`.")
    ],
    plan: Annotated[
        list[Path], typer.Option(help="bindings.json plan(s) of one audit, applied in the order given.", metavar="FILE")
    ],
) -> None:
    """Print the policy with the bindings plans applied, for `gcloud projects set-iam-policy P FILE`."""
    from auditor.emit.gcp_role import PLAN_SCHEMA, apply_bindings_plan

    document = load_json(policy, "the output of `gcloud projects get-iam-policy PROJECT --format=json`")
    if not isinstance(document, dict):
        raise InputError(f"{policy}: not an IAM policy")
    for path in plan:
        step = load_json(path, f"a bindings.json plan written by auditor ({PLAN_SCHEMA})")
        if not isinstance(step, dict) or step.get("schema") != PLAN_SCHEMA or not isinstance(step.get("member"), str):
            raise InputError(f"{path}: not an auditor bindings plan ({PLAN_SCHEMA})")
        document = apply_bindings_plan(document, step)
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


def register(app: typer.Typer, collect: typer.Typer) -> None:
    collect.command("gcp")(interruptible(collect_gcp))
    app.command("gcp-apply-plan")(interruptible(apply_plan))
