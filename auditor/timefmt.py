"""Time formatting shared by every output: ISO-8601 UTC with a Z."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from auditor.model import Window

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_utc(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``, the one time format of frames, snapshots and reports."""
    return moment.astimezone(UTC).strftime(ISO_FORMAT)


def iso(value: datetime | None) -> str | None:
    return iso_utc(value) if value is not None else None


def parse_iso(value: str) -> datetime:
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
    return {"start": iso(window.start), "end": iso(window.end), "days": round(window.days, 2)}
