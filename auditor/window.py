"""The audit window, chosen in one place for every source.

``--until`` fixes the end for everyone. Otherwise each cloud's window ends at the newest event its
sources hold, never later than their collection time (or now): a record dated in the future is an
input problem, not the new end, so one such record cannot empty the window. A source that was
collected for a window (a snapshot, an aggregate) keeps that window.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from auditor.connectors.base import WindowEnd
from auditor.errors import InputError
from auditor.timefmt import iso_utc


@dataclass(frozen=True)
class Window:
    """The audit window [start, end] in UTC, and how its end was chosen."""

    start: datetime
    end: datetime
    basis: str = ""

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


def window_ending(end: datetime, days: int, basis: str) -> Window:
    try:
        return Window(end - timedelta(days=days), end, basis)
    except OverflowError:
        raise InputError(
            f"a {days}-day window cannot end at {end.date().isoformat()}", "pass a later --until or fewer --days"
        ) from None


def choose(
    ends: Iterable[tuple[str, WindowEnd]], days: int, until: datetime | None, now: datetime
) -> dict[str, Window]:
    """One window per provider from what each source says about where its evidence ends."""
    by_provider: dict[str, list[WindowEnd]] = {}
    for provider, end in ends:
        by_provider.setdefault(provider, []).append(end)
    if until is not None:
        return {p: window_ending(until, days, f"--until {iso_utc(until)}") for p in by_provider}
    return {provider: _provider_window(found, days, now) for provider, found in by_provider.items()}


def _provider_window(ends: list[WindowEnd], days: int, now: datetime) -> Window:
    known = [e for e in ends if e.end is not None]
    if not known:
        return window_ending(now, days, f"no events found: ends now ({iso_utc(now)})")
    latest = max(known, key=lambda e: e.end or now)
    assert latest.end is not None
    return window_ending(latest.end, days, f"{latest.basis} ({iso_utc(latest.end)})")
