"""Deterministic file names for per-identity outputs."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+=,-]+")


def slug(name: str) -> str:
    """A file-name-safe form of an identity name (no path separators, no leading dots)."""
    cleaned = _UNSAFE.sub("_", name).strip("._")
    return cleaned or "identity"
