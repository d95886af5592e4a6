"""The agents' tool layer on the command line: the ``auditor audit`` options of provider ``tools``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option
from auditor.connectors.base import Progress, Source

PROVIDER = "tools"
PANEL = "Agent tool layer"

AUDIT_OPTIONS = [
    Option(
        "tools_manifest",
        Annotated[
            list[Path],
            typer.Option(
                help="Agent manifest (YAML, auditor/schemas/agents.schema.json): agents, their function tools, MCP "
                "client configurations and servers, the cloud identity each runs as; tools-list/ and traces/ "
                "next to it are read.",
                metavar="FILE",
                rich_help_panel=PANEL,
            ),
        ],
        [],
    ),
    Option(
        "tool_traces",
        Annotated[
            list[Path],
            typer.Option(
                help="More trace files or folders (OTLP JSON / JSONL, OpenTelemetry SDK JSON spans).",
                metavar="PATH",
                rich_help_panel=PANEL,
            ),
        ],
        [],
    ),
]


def sources(values: Mapping[str, Any], common: Any, progress: Progress) -> list[Source]:
    """One tool-layer source per manifest."""
    manifests, extra = values["tools_manifest"], values["tool_traces"]
    if not manifests and not extra:
        return []
    if extra and not manifests:
        from auditor.errors import InputError

        raise InputError("--tool-traces needs --tools-manifest", "the manifest says which agents the traces are of")
    from auditor.connectors.tools.source import ToolSource  # imported only when tools are audited

    return [ToolSource(path, tuple(extra), values["max_file_mib"] << 20) for path in manifests]


def register(app: typer.Typer, collect: typer.Typer) -> None:
    """No extra commands yet."""
