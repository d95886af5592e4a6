"""Azure on the command line: the ``auditor audit`` Azure options."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option
from auditor.connectors.azure.files import AzureFiles
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
    found: list[Source] = []
    for folder in values["azure_dir"]:
        source = AzureFiles.from_dir(folder)
        source.subscription = values["azure_subscription"]
        found.append(source)
    given = [values[k] for k in _SINGLE]
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
            )
        )
    return found


def register(app: typer.Typer, collect: typer.Typer) -> None:
    """Azure adds options to `auditor audit` only."""
