"""Tool names: one catalog name per tool, ``<server>.<tool>``, shared by grants, usage and outputs.

The server part is the MCP server's name as the client configuration spells it, with every character
outside ``[A-Za-z0-9_-]`` replaced by ``_`` (what Claude Code does for its ``mcp__<server>__<tool>``
names), so the first ``.`` always ends it. Function tools defined in an agent's code sit under
``function``, Claude Code's own tools (Bash, Read, ...) under ``builtin``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SEPARATOR = "."
FUNCTION = "function"
BUILTIN = "builtin"
#: The tool part of the catalog name standing for the tools of a server no ``tools/list`` enumerated.
UNLISTED = "(unlisted tools)"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: MCP annotation hints and the specification's value for an absent one.
HINT_DEFAULTS = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True}


def server_key(name: str) -> str:
    """The server part of a tool's catalog name."""
    return _UNSAFE.sub("_", name) or "_"


def tool_id(server: str, tool: str) -> str:
    return f"{server_key(server)}{SEPARATOR}{tool}"


def split_id(name: str) -> tuple[str, str]:
    server, _, tool = name.partition(SEPARATOR)
    return server, tool


@dataclass(frozen=True)
class Tool:
    """One tool an agent can be wired to: where it comes from and what it says about itself."""

    server: str  # server key (see :func:`server_key`), ``function`` or ``builtin``
    name: str
    annotations: dict[str, Any] | None = None  # MCP ToolAnnotations as listed ({}: listed without; None: not listed)
    description: str = ""
    origin: str = ""  # the file it was listed in

    @property
    def id(self) -> str:
        return f"{self.server}{SEPARATOR}{self.name}"

    def hints(self) -> dict[str, bool]:
        """The four MCP hints, the specification's defaults filling what the server left out."""
        given = self.annotations or {}
        return {k: given[k] if isinstance(given.get(k), bool) else v for k, v in HINT_DEFAULTS.items()}


@dataclass
class Server:
    """An MCP server granted to an agent: every tool it exposes, enumerated when a ``tools/list``
    result was captured (``tools`` is None otherwise: the grant is at server granularity)."""

    key: str
    name: str  # as the configuration spells it
    transport: str  # stdio | http | sse | gateway
    origin: str
    trusted: bool = False
    tools: list[Tool] | None = None
    target: str = field(default="")  # the target name an MCP gateway (AgentCore) exposes it under

    def __post_init__(self) -> None:
        self.target = self.target or self.key
