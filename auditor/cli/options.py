"""What every command-line module shares: options as data, commands built from them, progress.

A provider's CLI module declares its ``auditor audit`` options as :class:`Option` values; the audit
command's signature is assembled from every module's options, so adding a cloud adds a module and
touches no other command.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from auditor.connectors.base import Progress, no_progress
from auditor.errors import EXIT_INTERRUPTED, InputError


@dataclass(frozen=True)
class Option:
    """One command-line option: its parameter name, ``Annotated[type, typer.Option(...)]`` and default."""

    name: str
    annotation: Any
    default: Any = None


def command(options: Sequence[Option], body: Callable[[Mapping[str, Any]], None], doc: str) -> Callable[..., None]:
    """A function Typer reads as a command with exactly ``options``; calling it runs ``body(values)``."""

    @interruptible
    def run(**values: Any) -> None:
        body(values)

    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default, annotation=o.annotation)
            for o in options
        ]
    )
    run.__annotations__ = {o.name: o.annotation for o in options}
    run.__doc__ = doc
    return run


INTERRUPTED = "auditor: interrupted; no output was changed"


def interruptible(function: Callable[..., None]) -> Callable[..., None]:
    """Ctrl-C is one line and exit 130 (Typer would exit 130 silently); outputs are published only
    at the end, so nothing was changed."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            function(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write(INTERRUPTED + "\n")
            raise SystemExit(EXIT_INTERRUPTED) from None

    return run


class FailOn(StrEnum):
    critical = "critical"
    high = "high"
    medium = "medium"
    low = "low"
    none = "none"


def tty_progress() -> Progress:
    """Progress on stderr when it is a terminal; silent otherwise (CI logs stay clean)."""
    if not sys.stderr.isatty():
        return no_progress
    last = [0.0]

    def draw(what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.1:
            return
        last[0] = now
        percent = 100 * done // total if total else 100
        sys.stderr.write(f"\r{what}: {done:,}/{total:,} ({percent}%)" + ("\n" if done >= total else ""))
        sys.stderr.flush()

    return draw


def parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(f"--until {value!r} is not an ISO-8601 date or time", "e.g. 2026-11-20T23:59:59Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
