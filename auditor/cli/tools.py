"""The agents' tool layer on the command line: the ``auditor audit`` options of provider ``tools``
and ``auditor collect mcp``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from auditor.cli.options import Option, interruptible
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


def collect_mcp(
    configs: Annotated[
        list[Path] | None,
        typer.Argument(help="MCP client configurations (`mcpServers` or VS Code `servers`).", metavar="CONFIG"),
    ] = None,
    tools_manifest: Annotated[
        Path | None, typer.Option(help="Collect the servers of every agent's `mcp_configs` in this manifest.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for <server>.json (default with --tools-manifest: its tools-list/ folder)."),
    ] = None,
    server: Annotated[list[str], typer.Option(help="Only this server (repeatable).", metavar="NAME")] = [],  # noqa: B006
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds allowed per server.")] = 30.0,
    strict: Annotated[bool, typer.Option(help="Exit 2 when any server could not be collected.")] = False,
) -> None:
    """Capture each MCP server's tools/list (with annotations), never calling a tool."""
    from auditor.connectors.tools.collect import collect
    from auditor.errors import InputError

    paths = list(configs or [])
    if tools_manifest is not None:
        from auditor.connectors.tools.manifest import load_manifest

        manifest = load_manifest(tools_manifest)
        paths += [p for spec in manifest.agents for p in spec.mcp_configs]
        if out is None:
            out = manifest.tools_lists[0] if manifest.tools_lists else tools_manifest.parent / "tools-list"
    if not paths:
        raise InputError("no MCP client configuration given", "pass CONFIG files or --tools-manifest FILE")
    if out is None:
        raise InputError("--out is required without --tools-manifest", "e.g. --out tools-list")
    outcomes = collect(list(dict.fromkeys(paths)), out, timeout, server)
    failed = [o for o in outcomes if o.error]
    for outcome in outcomes:
        if not outcome.error:
            typer.echo(f"{outcome.server}: {outcome.tools} tool(s) in {outcome.pages} page(s) -> {outcome.file}")
    for outcome in failed:
        typer.echo(f"auditor: not collected: {outcome.server}: {outcome.error}", err=True)
    typer.echo(f"collected {len(outcomes) - len(failed)} of {len(outcomes)} server(s) into {out}; {len(failed)} failed")
    if failed and strict:
        raise InputError(f"{len(failed)} MCP server(s) not collected", "see the lines above; rerun without --strict")


def register(app: typer.Typer, collect: typer.Typer) -> None:
    collect.command("mcp")(interruptible(collect_mcp))
