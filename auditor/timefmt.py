"""Time formatting shared by every output: ISO-8601 UTC with a Z."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.model import Window

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_utc(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, the one time format of frames, snapshots and reports."""
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value is not None else None


def parse_iso(value: str) -> datetime:
    """``YYYY-MM-DDTHH:MM:SSZ`` as a UTC time. The form itself is read by ``fromisoformat``: strptime's
    first call imports a module and compiles a pattern, and the window is chosen with it before the
    log scan can begin. Anything else is strptime's to accept or reject, with its error."""
    if _is_canonical(value):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    return datetime.strptime(value, ISO_FORMAT).replace(tzinfo=UTC)


def normalize_iso(value: str) -> str | None:
    """Any ISO-8601 / RFC 3339 time (fraction, offset, space separator) as ``YYYY-MM-DDTHH:MM:SSZ``;
    None if it is not a time. The common ``...Z`` forms take a fast path."""
    if len(value) >= 20 and value[10] == "T" and value[-1] == "Z" and value[19] in ".Z":
        return value[:19] + "Z"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return iso_utc(parsed)


def window_dict(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"start": iso(window.start), "end": iso(window.end), "days": round(window.days, 2), "basis": window.basis}


#: Cap on the distinct strings each :func:`event_time` cache remembers before it starts over.
EVENT_TIME_CACHE = 1 << 16
_MINUTE = re.compile(r"\d{4}-\d\d-\d\d[T ]([01]\d|2[0-3]):[0-5]\d", re.ASCII)


def _is_canonical(value: str) -> bool:
    """Shaped like ``YYYY-MM-DDTHH:MM:SSZ`` (the digits are checked by the parser)."""
    return (
        len(value) == 20
        and value[10] == "T"
        and value[19] == "Z"
        and value[4] == value[7] == "-"
        and value[13] == value[16] == ":"
    )


def _canonical_utc(value: str) -> str | None:
    """``value`` parsed as ISO 8601 / RFC 3339 (naive means UTC), as ``YYYY-MM-DDTHH:MM:SSZ``, or None."""
    if len(value) <= 10:  # a date alone is not an event time
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        upper = value.upper()  # RFC 3339 allows a lower-case "t" and "z"
        if upper == value:
            return None
        try:
            moment = datetime.fromisoformat(upper)
        except ValueError:
            return None
    if _is_canonical(value):
        return value
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
            return None
    return moment.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def _is_minute(text: str) -> bool:
    """``YYYY-MM-DDTHH:MM`` (or with a space) naming a real date, hour and minute."""
    try:
        return _MINUTE.fullmatch(text) is not None and date.fromisoformat(text[:10]) is not None
    except ValueError:
        return False


class _Cache(dict[str, Any]):
    """An answer per string seen: a miss computes it, a full cache starts over."""

    def __init__(self, compute: Callable[[str], Any]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, value: str) -> Any:
        if len(self) >= EVENT_TIME_CACHE:
            self.clear()
        answer = self[value] = self.compute(value) if isinstance(value, str) else None
        return answer


_MINUTES = _Cache(_is_minute)
_OTHER_FORMS = _Cache(_canonical_utc)


def event_time(value: str) -> str | None:
    """An event's time as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC, fraction dropped), from any ISO 8601 / RFC 3339
    form; None for an impossible or unreadable time. Never raises for a string. The common
    ``...SSZ`` and ``...SS.fffZ`` forms are checked, not parsed: their minute against a small cache,
    their seconds by character; other forms are parsed once per distinct string (cached)."""
    if (
        len(value) >= 20
        and value[-1] == "Z"
        and value[16] == ":"
        and value[17] in "012345"
        and value[18] in "0123456789"
        and _MINUTES[value[:16]]
    ):
        if len(value) == 20:
            return value if value[10] == "T" else f"{value[:10]}T{value[11:]}"
        if value[19] == "." and value[10] == "T" and value[20:-1].isdigit() and value.isascii():
            return value[:19] + "Z"
    return _OTHER_FORMS[value]
