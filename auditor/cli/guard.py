"""The guard's decision log on the command line: ``auditor audit --guard-log FILE`` reads it as usage."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option
from auditor.connectors.base import Progress, Source
from auditor.errors import InputError

PROVIDER = "guard"
PANEL = "Guard"

AUDIT_OPTIONS = [
    Option(
        "guard_log",
        Annotated[
            list[Path],
            typer.Option(
                help="The guard's decision log (JSONL, auditor/schemas/guard-log.schema.json; repeatable): calls "
                "it allowed or had approved count as used, calls it refused as denied attempts.",
                metavar="FILE",
                rich_help_panel=PANEL,
            ),
        ],
        [],
    ),
]


def sources(values: Mapping[str, Any], common: Any, progress: Progress) -> list[Source]:
    """One evidence-only source per provider the logs hold decisions of."""
    if not values["guard_log"]:
        return []
    from auditor.connectors.guard.source import GuardLog, GuardLogSource

    log = GuardLog.read(values["guard_log"])
    if not log.decisions and log.skipped:
        (path, reason), _ = next(iter(log.skipped.items()))
        raise InputError(
            f"{path}: no guard decision could be read ({sum(log.skipped.values())} line(s); first: {reason})",
            "pass the file the guard's log= writes (auditor/schemas/guard-log.schema.json)",
        )
    return [GuardLogSource(provider, log) for provider in log.providers()]


def register(app: typer.Typer, collect: typer.Typer) -> None:
    """The guard adds an option to `auditor audit` only."""
