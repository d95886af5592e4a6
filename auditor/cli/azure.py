"""Azure on the command line: the ``auditor audit`` Azure options and ``auditor collect azure``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option, interruptible, parse_until, tty_progress
from auditor.connectors.base import Progress, Source
from auditor.errors import InputError

PROVIDER = "azure"
PANEL = "Azure"


def _paths(name: str, help_text: str, metavar: str = "FILE") -> Option:
    return Option(name, Annotated[list[Path], typer.Option(help=help_text, metavar=metavar, rich_help_panel=PANEL)], [])


AUDIT_OPTIONS = [
    _paths(
        "azure_dir",
        "Azure snapshot folder: role-assignments.json, role-definitions.json, provider-operations.json, "
        "activity-log/ (what `auditor collect azure` writes).",
        "DIR",
    ),
    _paths("azure_assignments", "`az role assignment list --all --include-inherited --include-groups -o json` output."),
    _paths("azure_definitions", "`az role definition list -o json` output."),
    _paths("azure_operations", "`az provider operation list -o json` output."),
    _paths(
        "azure_logs", "Activity Log exports (az monitor activity-log list, diagnostic settings, AzureActivity).", "PATH"
    ),
    _paths(
        "azure_storage_logs",
        "Storage resource logs (insights-logs-storageread|write|delete, Event Hub records) or StorageBlobLogs "
        "(Queue/Table/File) exports: the data-plane evidence.",
        "PATH",
    ),
    _paths("azure_principals", "Optional `az ad sp list --all -o json` output (names, tags, managed identities)."),
    Option(
        "azure_subscription",
        Annotated[
            str | None,
            typer.Option(
                help="The subscription the Azure files describe (default: the one they name).", rich_help_panel=PANEL
            ),
        ],
        None,
    ),
]

_SINGLE = ("azure_assignments", "azure_definitions", "azure_operations", "azure_logs")


def sources(values: Mapping[str, Any], common: Any, progress: Progress) -> list[Source]:
    """Offline Azure sources for the options given."""
    given = [values[k] for k in _SINGLE]
    if not (values["azure_dir"] or any(given) or values["azure_principals"] or values["azure_storage_logs"]):
        return []
    from auditor.connectors.azure.files import AzureFiles  # imported only when Azure is audited

    found: list[Source] = []
    for folder in values["azure_dir"]:
        source = AzureFiles.from_dir(folder)
        source.subscription = values["azure_subscription"]
        source.storage_log_paths += tuple(values["azure_storage_logs"])
        found.append(source)
    if any(given) or values["azure_principals"]:
        if not all(given):
            raise InputError(
                "--azure-assignments, --azure-definitions, --azure-operations and --azure-logs go together",
                "pass all four, or --azure-dir DIR",
            )
        assignments, definitions, operations, logs = (tuple(v) for v in given)
        found.append(
            AzureFiles(
                assignments,
                definitions,
                operations,
                logs,
                tuple(values["azure_principals"]),
                subscription=values["azure_subscription"],
                storage_log_paths=tuple(values["azure_storage_logs"]),
            )
        )
    elif values["azure_storage_logs"] and not values["azure_dir"]:
        raise InputError(
            "--azure-storage-logs needs the Azure grants", "pass --azure-dir DIR (or the four file options)"
        )
    return found


def collect_snapshot(
    subscription: str,
    out: Path,
    days: int,
    until: datetime | None,
    workspace: str | None,
    progress: Progress,
    endpoint: str | None = None,
    ca_bundle: Path | None = None,
    credential: Any = None,
    management_group: str | None = None,
) -> Path:
    """Collect one subscription into ``out`` (``endpoint``: every call to a test server, with a
    placeholder token)."""
    from auditor.connectors.azure.arm import Endpoints, StaticToken, Transport, default_credential
    from auditor.connectors.azure.live import AzureCollector, CollectOptions

    if credential is None:
        credential = StaticToken() if endpoint else default_credential()
    transport = Transport(credential, Endpoints.single(endpoint) if endpoint else Endpoints(), ca_bundle)
    options = CollectOptions(subscription.lower(), days, until, workspace, management_group)
    return AzureCollector(options, transport, progress).collect(out)


def collect_azure(
    subscription: Annotated[
        str, typer.Option(help="Subscription ID to collect from (read-only calls, DefaultAzureCredential).")
    ],
    out: Annotated[Path, typer.Option(help="New folder for the snapshot (audit it with --azure-dir).")],
    days: Annotated[int, typer.Option(min=1, max=400, help="Days of Activity Log to collect (at most 90).")] = 30,
    until: Annotated[str | None, typer.Option(help="Window end (ISO-8601). Default: now.")] = None,
    workspace: Annotated[
        str | None,
        typer.Option(
            help="Aggregate the AzureActivity table of this Log Analytics workspace (its id) instead of "
            "listing the Activity Log."
        ),
    ] = None,
    management_group: Annotated[
        str | None,
        typer.Option(help="Also read the role assignments and custom roles made at this management group (its id)."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(hidden=True, help="Send every Azure call here with a placeholder token (test servers)."),
    ] = None,
    ca_bundle: Annotated[
        Path | None, typer.Option(hidden=True, help="Trust this CA bundle (PEM) for --endpoint.")
    ] = None,
) -> None:
    """Collect an Azure subscription's role assignments, definitions and Activity Log into a snapshot folder."""
    folder = collect_snapshot(
        subscription,
        out,
        days,
        parse_until(until),
        workspace,
        tty_progress(),
        endpoint,
        ca_bundle,
        management_group=management_group,
    )
    typer.echo(
        f"wrote snapshot of /subscriptions/{subscription.lower()} to {folder} (audit it with --azure-dir {folder})"
    )


def register(app: typer.Typer, collect: typer.Typer) -> None:
    collect.command("azure")(interruptible(collect_azure))
