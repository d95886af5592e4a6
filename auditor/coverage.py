"""What the logs cover, computed once for every source from its scan statistics.

Per account / project of the audited agents: one coverage row per log source (its own counts, not
the source's totals), the calendar days of the window with no event at all (everything is
unobservable on those days, never unused), and the records dated after the cap, which are input
problems.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from auditor import model
from auditor.connectors.base import LogStats
from auditor.timefmt import iso_utc, parse_iso


def missing_days(days_seen: Iterable[str], start: str, end: str) -> list[str]:
    """Calendar days lying wholly inside the window [start, end] (ISO times) with no event at all.

    The partial days at either edge are not required: a window starting at 23:59 would otherwise
    call a whole audit unobservable for the minute before midnight."""
    seen = set(days_seen)
    first = date.fromisoformat(start[:10])
    if start[11:] not in ("", "00:00:00Z"):
        first += timedelta(days=1)
    last = date.fromisoformat(end[:10]) - timedelta(days=1)
    if end[11:] == "23:59:59Z":
        last += timedelta(days=1)
    span = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    return [d for d in span if d not in seen]


def summarize_days(days: Sequence[str]) -> str:
    return ", ".join(days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")


def coverage_rows(
    logs: Sequence[LogStats], windows: Mapping[str, model.Window], accounts: Mapping[str, set[str]]
) -> list[dict[str, Any]]:
    """COVERAGE rows: one per (log source, audited account), with that account's own counts."""
    rows: list[dict[str, Any]] = []
    for stats in logs:
        window = windows[stats.provider]
        start, end = iso_utc(window.start)[:10], iso_utc(window.end)[:10]
        for account in sorted(accounts.get(stats.provider, ())):
            scope = stats.scopes.get(account)
            skipped = {r: n for (s, r), n in stats.skipped.items() if s == account}
            if stats.duplicates:
                skipped[f"duplicate of a record read from another file (source-wide, {stats.duplicates:,})"] = 0
            rows.append(
                {
                    "provider": stats.provider,
                    "account": account,
                    "source": stats.origin,
                    "first_event": _time(scope.first) if scope else None,
                    "last_event": _time(scope.last) if scope else None,
                    "days_with_events": len([d for d in scope.days if start <= d <= end]) if scope else 0,
                    "events_read": scope.events if scope else 0,
                    "events_in_window": scope.events_in_window if scope else 0,
                    "files_read": scope.files if scope else 0,
                    "detail": "; ".join(f"{n:,} skipped: {r}" if n else r for r, n in sorted(skipped.items()))
                    or (None if scope else "no events of this account"),
                }
            )
    return rows


def missing_day_rows(
    logs: Sequence[LogStats], windows: Mapping[str, model.Window], accounts: Mapping[str, set[str]]
) -> list[dict[str, Any]]:
    """OBSERVABILITY rows making everything unobservable for accounts with days missing from the logs."""
    rows = []
    for provider, window in sorted(windows.items()):
        start, end = iso_utc(window.start), iso_utc(window.end)
        sources = [s for s in logs if s.provider == provider]
        origins = ", ".join(sorted({s.origin for s in sources})) or "no log source"
        total = len(missing_days((), start, end))
        for account in sorted(accounts.get(provider, ())):
            seen = {d for s in sources if account in s.scopes for d in s.scopes[account].days}
            missing = missing_days(seen, start, end)
            if missing:
                rows.append(
                    {
                        "provider": provider,
                        "account": account,
                        "identity": None,
                        "actions": ["*"],
                        "reason": f"the logs ({origins}) have no events for {len(missing)} of {total} days of "
                        f"the window ({summarize_days(missing)})",
                    }
                )
    return rows


def input_problem_rows(logs: Sequence[LogStats], caps: Mapping[str, str]) -> list[dict[str, Any]]:
    """GAPS rows for records dated after the cap (never counted, never moving the window)."""
    rows = []
    for stats in logs:
        if stats.beyond_cap:
            rows.append(
                model.gap(
                    stats.provider,
                    None,
                    stats.beyond_example,
                    f"{stats.beyond_cap:,} record(s) dated after {caps.get(stats.origin, 'now')} (the collection "
                    "time, or now) were not counted: check the clock of whatever wrote them",
                    count=stats.beyond_cap,
                )
            )
    return rows


def _time(value: str) -> datetime | None:
    return parse_iso(value) if value else None
