"""What a source of grants and activity is, and what it answers.

A source (one cloud's exported files, a snapshot, an agent's tool layer) answers narrow questions;
the core (:func:`auditor.audit.run_audit`) asks them in order and owns everything shared: agent
selection, the window, coverage and missing days, the rescan when the window moved, strictness.

1. :meth:`Source.grants`: every identity with its grants (normalized frames);
2. :meth:`Source.catalog`: the permission catalog those grants expand against;
3. :meth:`Source.window_end`: the newest event the source holds, no later than ``cap``;
4. :meth:`Source.usage`: what the agents did within the window, and what the logs cannot show.

A source that reads logs may also offer :meth:`ReadsAhead.read_ahead`. When every source of its
provider does, the core asks them :meth:`Source.collected_at` and :meth:`Source.window_end` first,
before any grants are read, begins their scans for every identity (the agents are not known yet),
and later asks each scan in flight for the evidence of the full request.

This module imports no polars (the frames' default factories load :mod:`auditor.model` when they
run): it is on the path that begins the log scan while the data-frame engine loads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from auditor.catalog import Catalog
from auditor.errors import InputError
from auditor.ruleset import Rules
from auditor.selection import AgentSelector
from auditor.timefmt import iso_utc

if TYPE_CHECKING:
    import polars as pl

    from auditor.window import Window

#: Progress callback: (what, done, total). Sources call it; the CLI draws it on a TTY.
Progress = Callable[[str, int, int], None]


def _empty(schema: str) -> Callable[[], pl.DataFrame]:
    """A default factory: an empty frame of ``auditor.model.<schema>``."""

    def empty() -> pl.DataFrame:
        from auditor import model

        return model.empty(getattr(model, schema))

    return empty


def no_progress(what: str, done: int, total: int) -> None:
    """Default progress callback: draws nothing."""


@dataclass(frozen=True)
class GrantSet:
    """Who exists and what they are granted (frames of :mod:`auditor.model`)."""

    identities: pl.DataFrame = field(default_factory=_empty("IDENTITIES"))
    grants: pl.DataFrame = field(default_factory=_empty("GRANTS"))
    trusts: pl.DataFrame = field(default_factory=_empty("TRUSTS"))
    managed: pl.DataFrame = field(default_factory=_empty("MANAGED"))
    gaps: pl.DataFrame = field(default_factory=_empty("GAPS"))


@dataclass
class ScopeStats:
    """What one log source holds for one account / project."""

    days: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD" -> events that day
    first: str = ""
    last: str = ""
    events_in_window: int = 0
    files: int = 0

    @property
    def events(self) -> int:
        return sum(self.days.values())


@dataclass
class LogStats:
    """What a scan of one source's logs saw, for coverage, missing days and input problems."""

    provider: str
    origin: str  # shown as the coverage source, e.g. "CloudTrail fixtures/aws"
    scopes: dict[str, ScopeStats] = field(default_factory=dict)
    files_read: int = 0
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)  # (scope or "", reason) -> records
    newest: str = ""  # newest event time no later than the cap ("" if none)
    beyond_cap: int = 0  # records dated after the cap: input problems, never the window
    beyond_example: str = ""
    duplicates: int = 0  # records seen twice (same event id), counted once


@dataclass(frozen=True)
class UsageRequest:
    """What the core asks a source for: the agents' activity in ``window``."""

    window: Window
    cap: datetime  # nothing can have happened after this (collection time / now)
    agents: frozenset[str]
    catalog: Catalog
    rules: Rules
    workers: int | None = None
    max_file_bytes: int | None = None


@dataclass(frozen=True)
class Evidence:
    """A source's answer to :class:`UsageRequest`."""

    usage: pl.DataFrame = field(default_factory=_empty("USAGE"))
    unmapped: pl.DataFrame = field(default_factory=_empty("UNMAPPED"))
    observability: pl.DataFrame = field(default_factory=_empty("OBSERVABILITY"))
    coverage: pl.DataFrame = field(default_factory=_empty("COVERAGE"))
    gaps: pl.DataFrame = field(default_factory=_empty("GAPS"))
    logs: tuple[LogStats, ...] = ()
    notes: dict[str, list[str]] = field(default_factory=dict)  # identity -> facts for the report
    findings: pl.DataFrame = field(default_factory=_empty("SOURCE_FINDINGS"))


@dataclass(frozen=True)
class WindowEnd:
    """Where a source's evidence ends: the newest event (no later than the cap), or a fixed end
    (a snapshot collected for a window, an aggregate computed over one)."""

    end: datetime | None
    basis: str
    fixed: bool = False


@dataclass(frozen=True)
class EarlyRequest:
    """What the core knows of its :class:`UsageRequest` before the grants are read: all but the
    agents and the catalog."""

    window: Window
    cap: datetime
    rules: Rules
    workers: int | None = None
    max_file_bytes: int | None = None


class UsageInFlight(Protocol):
    """A usage scan begun before the agents were known (:meth:`ReadsAhead.read_ahead`)."""

    def evidence(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        """The answer to ``request``, exactly what :meth:`Source.usage` would give: the scan is read
        again when the one begun does not fit the request."""
        ...

    def cancel(self) -> None:
        """Stop reading (a no-op once :meth:`evidence` has answered)."""
        ...


@runtime_checkable
class ReadsAhead(Protocol):
    def read_ahead(self, early: EarlyRequest) -> UsageInFlight:
        """Begin the usage scan for every identity."""
        ...


class Source(Protocol):
    provider: str
    name: str

    def grants(self, selector: AgentSelector, rules: Rules) -> GrantSet: ...

    def catalog(self, grants: GrantSet, rules: Rules) -> Catalog: ...

    def collected_at(self) -> datetime | None:
        """When the source's data was collected (the latest moment anything in it can be from)."""
        ...

    def window_end(self, cap: datetime, rules: Rules, workers: int | None) -> WindowEnd: ...

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence: ...

    def inputs(self) -> tuple[str, ...]:
        """The files and APIs read, for the report."""
        ...


def aggregate_window_gaps(
    provider: str, engine: str, docs: Sequence[dict[str, Any]], request: UsageRequest
) -> list[dict[str, Any]]:
    """A warning when the audit window is not the one an engine's aggregation was computed over."""
    if not docs:
        return []
    window = docs[0].get("window") or {}
    start, end = str(window.get("start", "")), str(window.get("end", ""))
    if (start, end) == (iso_utc(request.window.start), iso_utc(request.window.end)):
        return []
    reason = (
        f"{engine} usage was aggregated over {start} .. {end}, not the audit window: --days/--until do not re-window it"
    )
    from auditor import model

    return [model.gap(provider, None, "window", reason, "warning")]


def require_complete(manifest: dict[str, Any], path: Path, command: str) -> None:
    """Refuse a snapshot whose collection started but never finished (``complete: false``)."""
    if manifest.get("complete") is False:
        raise InputError(f"{path}: the collection into this folder did not finish", f"rerun `{command}`")
