"""The guard around agent tools: plain functions (sync or async) and MCP ``call_tool`` handlers.

Tool names are the audit's catalog names, ``<server>.<tool>`` (:mod:`auditor.connectors.tools.inventory`):
a function tool ``refund_order`` is ``function.refund_order``, an MCP tool ``void_invoice`` of the
server ``billing`` is ``billing.void_invoice``. A name that already holds a ``.`` is taken as is.
The call's arguments, redacted, go with an approval request and into the decision log.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from auditor.guard.core import Guard

F = TypeVar("F", bound=Callable[..., Any])
FUNCTION = "function"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(name: str, server: str | None) -> str:
    """The catalog name of tool ``name`` of ``server`` (default: a function tool)."""
    if server is None and "." in name:
        return name
    return f"{_UNSAFE.sub('_', server or FUNCTION) or '_'}.{name}"


def _arguments(signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict:
    if signature is not None:
        try:
            bound = signature.bind_partial(*args, **kwargs)
            return dict(bound.arguments)
        except TypeError:
            pass
    return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}


def tool_decorator(guard: Guard, name: str | None, server: str | None) -> Callable[[F], F]:
    def wrap(fn: F) -> F:
        full = tool_name(name or fn.__name__, server)
        try:
            signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            signature = None
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                params = _arguments(signature, args, kwargs)
                await asyncio.to_thread(guard.check, full, params=params, kind="tool", via="tool")
                return await fn(*args, **kwargs)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            guard.check(full, params=_arguments(signature, args, kwargs), kind="tool", via="tool")
            return fn(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return wrap


def mcp_decorator(guard: Guard, server: str) -> Callable[[F], F]:
    """Wraps ``handler(name, arguments)`` (the MCP Python SDK's ``@server.call_tool()`` shape)."""

    def wrap(handler: F) -> F:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def guarded_async(
                name: str, arguments: Mapping[str, Any] | None = None, *rest: Any, **kw: Any
            ) -> Any:
                params = dict(arguments or {})
                await asyncio.to_thread(guard.check, tool_name(name, server), params=params, kind="tool", via="mcp")
                return await handler(name, arguments, *rest, **kw)

            return guarded_async  # type: ignore[return-value]

        @functools.wraps(handler)
        def guarded(name: str, arguments: Mapping[str, Any] | None = None, *rest: Any, **kw: Any) -> Any:
            guard.check(tool_name(name, server), params=dict(arguments or {}), kind="tool", via="mcp")
            return handler(name, arguments, *rest, **kw)

        return guarded  # type: ignore[return-value]

    return wrap
