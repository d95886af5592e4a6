"""MCP client configurations and captured ``tools/list`` results.

Configurations: ``mcpServers`` (Claude Desktop ``claude_desktop_config.json``, Claude Code
``.mcp.json``, Cursor ``~/.cursor/mcp.json``) and VS Code's ``servers`` (``.vscode/mcp.json``). A
server entry grants every tool the server exposes; a ``disabled: true`` entry (Cursor, Cline) grants
nothing. ``tools/list`` captures enumerate those tools with their annotations: a ``ListToolsResult``
(``{"tools": [...]}``), the JSON-RPC response holding one (``{"result": {...}}``), a list of pages,
or what ``auditor collect mcp`` writes (``{"server": NAME, "tools": [...]}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from auditor import fileio
from auditor.connectors.tools.inventory import Server, Tool, server_key
from auditor.errors import InputError

CONFIG_HINT = (
    "an MCP client configuration with `mcpServers` (Claude Desktop, Claude Code, Cursor) or `servers` (VS Code)"
)
LIST_HINT = 'a captured tools/list result ({"tools": [...]}), e.g. written by `auditor collect mcp`'
MAX_CONFIG_BYTES = 16 << 20


def load_document(path: Path, what: str) -> Any:
    """A JSON file read safely (regular file, capped), or a one-line InputError naming ``what``."""
    raw = fileio.read_input(path, MAX_CONFIG_BYTES)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})", f"expected {what}") from None


def read_config(path: Path) -> tuple[list[Server], list[str]]:
    """The servers a client configuration grants, and notes about the entries that grant nothing."""
    doc = load_document(path, CONFIG_HINT)
    entries = doc.get("mcpServers", doc.get("servers")) if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise InputError(f"{path}: no `mcpServers` or `servers` object", f"expected {CONFIG_HINT}")
    servers: list[Server] = []
    notes: list[str] = []
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: server {name!r} is not an object", f"expected {CONFIG_HINT}")
        if entry.get("disabled") is True:
            notes.append(f"MCP server {name} is disabled in {path}: not granted")
            continue
        servers.append(Server(server_key(name), name, _transport(entry), str(path)))
    return servers, notes


def _transport(entry: dict[str, Any]) -> str:
    kind = entry.get("type") or entry.get("transport")
    if isinstance(kind, str) and kind:
        return {"streamable-http": "http", "streamableHttp": "http", "local": "stdio"}.get(kind, kind)
    return "stdio" if "command" in entry else "http" if "url" in entry else "unknown"


def read_tools_list(path: Path) -> tuple[str, list[Tool]]:
    """(server, its tools) from a captured ``tools/list`` result (every page). The server is the
    capture's ``server`` field, else the file name (``<server>.json``)."""
    doc = load_document(path, LIST_HINT)
    named = doc.get("server") if isinstance(doc, dict) else None
    server = named if isinstance(named, str) and named else path.name.removesuffix(".json")
    pages = doc if isinstance(doc, list) else [doc]
    tools: list[Tool] = []
    for index, page in enumerate(pages):
        if isinstance(page, dict) and isinstance(page.get("result"), dict):
            page = page["result"]
        listed = page.get("tools") if isinstance(page, dict) else None
        if not isinstance(listed, list):
            raise InputError(f"{path}: page {index} has no `tools` list", f"expected {LIST_HINT}")
        for number, item in enumerate(listed):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
                raise InputError(f"{path}: tools[{number}] has no name", f"expected {LIST_HINT}")
            annotations = item.get("annotations")
            description = item.get("description")
            tools.append(
                Tool(
                    server_key(server),
                    item["name"],
                    dict(annotations) if isinstance(annotations, dict) else {},
                    description if isinstance(description, str) else "",
                    str(path),
                )
            )
    return server, tools
