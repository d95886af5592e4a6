"""``auditor collect mcp``: each MCP server's ``tools/list`` (with the tool annotations), captured
live from the servers an MCP client configuration names, with the official ``mcp`` SDK.

Only ``initialize`` and ``tools/list`` (every page, following ``nextCursor``) are sent: no tool is
ever called. A stdio server is spawned with the configuration's ``command``, ``args``, ``env`` and
``cwd``; a streamable-HTTP server is reached at its ``url`` with its ``headers`` (``${VAR}`` and
``${VAR:-default}`` in either are taken from the environment, as Claude Code does; VS Code's
``${env:VAR}`` too). Each server has its own timeout; one that fails is one line in the result,
never the end of the collection.

Output: ``<out>/<server>.json`` per server, ``{"server", "collected_at", "transport",
"server_info", "tools"}``, the shape :func:`auditor.connectors.tools.mcp_config.read_tools_list`
reads, each written atomically; a failed server's earlier capture is left as it was. Nothing
from ``env``, ``headers``, ``args`` or the URL is written, and every one of those values is
masked in the error messages.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor import fileio
from auditor.connectors.tools.inventory import server_key
from auditor.connectors.tools.mcp_config import CONFIG_HINT, load_document
from auditor.errors import ConnectorError, InputError
from auditor.timefmt import iso_utc

MAX_PAGES = 1000  # a server whose cursors never end is stopped here
MASK = "***"
_VARIABLE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_UNRESOLVABLE = re.compile(r"\$\{(input|command|workspaceFolder)[^}]*\}")


@dataclass(frozen=True)
class Launch:
    """How to reach one configured server (secrets included: never written anywhere)."""

    name: str
    transport: str  # stdio | http
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    def secrets(self) -> list[str]:
        """Every configured value an error message must not show, longest first."""
        values = [*self.env.values(), *self.headers.values(), *self.args, self.url]
        return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


@dataclass(frozen=True)
class Outcome:
    server: str
    tools: int = 0
    pages: int = 0
    file: Path | None = None
    error: str = ""


class _Unlaunchable(ValueError):
    pass


def _expand(value: str, environ: dict[str, str]) -> str:
    editor_only = _UNRESOLVABLE.search(value)
    if editor_only:
        raise _Unlaunchable(f"it uses {editor_only.group(0)}, which only its editor can resolve")

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise _Unlaunchable(f"environment variable {name} is not set")

    return _VARIABLE.sub(one, value)


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Unlaunchable(f"`{what}` is not a list of strings")
    return value


def _mapping(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Unlaunchable(f"`{what}` is not an object of strings")
    return value


def _launch(name: str, entry: dict[str, Any], base: Path, environ: dict[str, str]) -> Launch:
    kind = entry.get("type") or entry.get("transport") or ("stdio" if "command" in entry else "http")
    kind = {"streamable-http": "http", "streamableHttp": "http", "local": "stdio"}.get(kind, kind)
    if kind == "stdio":
        command = entry.get("command")
        if not isinstance(command, str) or not command:
            raise _Unlaunchable("a stdio server without `command`")
        cwd = entry.get("cwd")
        return Launch(
            name,
            "stdio",
            command=_expand(command, environ),
            args=tuple(_expand(a, environ) for a in _strings(entry.get("args"), "args")),
            env={k: _expand(v, environ) for k, v in _mapping(entry.get("env"), "env").items()},
            cwd=str(base / _expand(cwd, environ)) if isinstance(cwd, str) and cwd else None,
        )
    if kind == "http":
        url = entry.get("url")
        if not isinstance(url, str) or not url:
            raise _Unlaunchable("an HTTP server without `url`")
        headers = {k: _expand(v, environ) for k, v in _mapping(entry.get("headers"), "headers").items()}
        return Launch(name, "http", url=_expand(url, environ), headers=headers)
    raise _Unlaunchable(f"transport {kind!r} is not collected (only stdio and streamable HTTP)")


def launches(
    path: Path, only: Iterable[str] = (), environ: dict[str, str] | None = None
) -> tuple[list[Launch], list[Outcome]]:
    """The servers of a client configuration that can be reached, and one failed outcome per
    server that cannot (disabled ones are skipped); ``only`` limits them to those names."""
    doc = load_document(path, CONFIG_HINT)
    entries = doc.get("mcpServers", doc.get("servers")) if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise InputError(f"{path}: no `mcpServers` or `servers` object", f"expected {CONFIG_HINT}")
    wanted = set(only)
    unknown = sorted(wanted - set(entries))
    if unknown:
        raise InputError(f"{path}: no server {unknown[0]!r}", f"servers listed: {', '.join(sorted(entries))}")
    env = dict(os.environ if environ is None else environ)
    found, failed = [], []
    for name, entry in entries.items():
        if wanted and name not in wanted:
            continue
        if not isinstance(entry, dict):
            failed.append(Outcome(name, error=f"{path}: server {name!r} is not an object"))
            continue
        if entry.get("disabled") is True:
            continue
        try:
            found.append(_launch(name, entry, path.parent, env))
        except _Unlaunchable as exc:
            failed.append(Outcome(name, error=f"{path}: server {name}: {exc}"))
    return found, failed


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _message(exc: BaseException, launch: Launch, stderr: str) -> str:
    leaf = _leaf(exc)
    text = str(leaf).splitlines()[0] if str(leaf) else type(leaf).__name__
    if isinstance(leaf, TimeoutError):
        text = "no answer before the timeout"
    if stderr:
        text += f" (server stderr: {stderr})"
    for secret in launch.secrets():
        text = text.replace(secret, MASK)
    return text


async def _list_tools(session: Any) -> tuple[list[dict[str, Any]], int]:
    import mcp_types

    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for page in range(1, MAX_PAGES + 1):
        params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
        result = await session.list_tools(params=params)
        tools += [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in result.tools]
        cursor = result.next_cursor
        if not cursor:
            return tools, page
        if cursor in seen:
            raise RuntimeError(f"tools/list repeated the cursor {cursor!r}")
        seen.add(cursor)
    raise RuntimeError(f"tools/list still had a next page after {MAX_PAGES} pages")


async def _session(launch: Launch, errlog: Any) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    from mcp.client.session import ClientSession

    if launch.transport == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=launch.command, args=list(launch.args), env=launch.env, cwd=launch.cwd)
        transport = stdio_client(params, errlog=errlog)
    else:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        transport = streamable_http_client(launch.url, http_client=create_mcp_http_client(headers=launch.headers))
    async with transport as (read, write), ClientSession(read, write) as session:
        init = await session.initialize()
        tools, pages = await _list_tools(session)
    info = {"name": init.server_info.name, "version": init.server_info.version}
    return info, tools, pages


async def _capture(launch: Launch, out: Path, timeout: float) -> Outcome:
    import anyio

    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as errlog:
        try:
            with anyio.fail_after(timeout):
                info, tools, pages = await _session(launch, errlog)
        except Exception as exc:  # every failure of one server is one line; the others go on
            errlog.seek(0)
            lines = [line.strip() for line in errlog.read()[-4096:].splitlines() if line.strip()]
            return Outcome(launch.name, error=_message(exc, launch, lines[-1] if lines else ""))
    target = out / f"{server_key(launch.name)}.json"
    document = {
        "server": launch.name,
        "collected_at": iso_utc(datetime.now(UTC)),
        "transport": launch.transport,
        "server_info": info,
        "tools": tools,
    }
    fileio.write_json(target, document, indent=True)
    return Outcome(launch.name, len(tools), pages, target)


def collect(
    configs: Iterable[Path],
    out: Path,
    timeout: float = 30.0,
    only: Iterable[str] = (),
    workers: int = 8,
    environ: dict[str, str] | None = None,
) -> list[Outcome]:
    """Capture every reachable server of ``configs`` into ``out``; one outcome per server.
    ``${VAR}`` in the configurations come from ``environ`` (default: this process's)."""
    try:
        import anyio
        import mcp  # noqa: F401
    except ImportError:
        raise ConnectorError("auditor collect mcp needs the `mcp` package", "pip install 'auditor[mcp]'") from None

    planned: dict[str, Launch] = {}
    outcomes: list[Outcome] = []
    for path in configs:
        found, failed = launches(path, only, environ)
        outcomes += failed
        for launch in found:
            planned.setdefault(server_key(launch.name), launch)
    done: list[Outcome] = []

    async def run_all() -> None:
        limiter = anyio.CapacityLimiter(workers)

        async def one(launch: Launch) -> None:
            async with limiter:
                done.append(await _capture(launch, out, timeout))

        async with anyio.create_task_group() as group:
            for launch in planned.values():
                group.start_soon(one, launch)

    if planned:
        out.mkdir(parents=True, exist_ok=True)
        anyio.run(run_all)
    return sorted([*outcomes, *done], key=lambda o: o.server)
