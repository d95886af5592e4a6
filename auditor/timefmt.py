"""Time formatting shared by every output: ISO-8601 UTC with a Z."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from auditor.model import Window


def iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def window_dict(window: Window | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {"start": iso(window.start), "end": iso(window.end), "days": round(window.days, 2)}
