"""A small MCP server for the ``auditor collect mcp`` tests (the official SDK's ``MCPServer``,
formerly FastMCP): five annotated tools, listed two per ``tools/list`` page.

``python inventory_server.py stdio`` serves over stdio; ``python inventory_server.py http PORT``
over streamable HTTP on 127.0.0.1. Every tool call appends its name to ``$INVENTORY_CALLS`` (when
set), so a test can prove that collection never calls a tool. With ``$INVENTORY_REQUIRE_TOKEN`` set,
it exits unless ``$INVENTORY_TOKEN`` equals it (a secret passed through the client configuration).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ListToolsResult, ToolAnnotations

PAGE = 2


class PagedServer(MCPServer):
    """Lists its tools ``PAGE`` at a time, the cursor being the index of the next one."""

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        tools = await self.list_tools()
        start = int(params.cursor) if params is not None and params.cursor else 0
        following = start + PAGE
        return ListToolsResult(
            tools=tools[start:following], next_cursor=str(following) if following < len(tools) else None
        )


server = PagedServer("inventory")


def _called(name: str) -> None:
    log = os.environ.get("INVENTORY_CALLS")
    if log:
        with Path(log).open("a") as handle:
            handle.write(name + "\n")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False))
def get_item(sku: str) -> str:
    """Read one inventory item."""
    _called("get_item")
    return sku


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def list_items() -> list[str]:
    """List the inventory."""
    _called("list_items")
    return []


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False))
def add_item(sku: str) -> str:
    """Add an item."""
    _called("add_item")
    return sku


@server.tool(annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, idempotentHint=True))
def delete_item(sku: str) -> str:
    """Delete an item."""
    _called("delete_item")
    return sku


@server.tool()
def restock(sku: str, count: int) -> str:
    """Restock an item (no annotations: the specification's defaults apply)."""
    _called("restock")
    return sku


if __name__ == "__main__":
    required = os.environ.get("INVENTORY_REQUIRE_TOKEN")
    if required and os.environ.get("INVENTORY_TOKEN") != required:
        sys.stderr.write("inventory: INVENTORY_TOKEN missing or wrong\n")
        raise SystemExit(3)
    if sys.argv[1:2] == ["http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
