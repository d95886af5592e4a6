"""Case-insensitive glob matching of permission names (``*`` and ``?``), as IAM and Azure RBAC do it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache


def _glob_source(pattern: str) -> str:
    return "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)


@lru_cache(maxsize=65536)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile one permission glob into a case-insensitive regex (use ``fullmatch``)."""
    return re.compile(_glob_source(pattern), re.IGNORECASE | re.DOTALL)


@lru_cache(maxsize=65536)
def resource_regex(pattern: str) -> re.Pattern[str]:
    """Compile one resource glob (ARNs are case-sensitive; ``*`` spans ``:`` and ``/``)."""
    return re.compile(_glob_source(pattern), re.DOTALL)


def resource_matches(pattern: str, resource: str) -> bool:
    return pattern == "*" or resource_regex(pattern).fullmatch(resource) is not None


def any_glob_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One anchored regex matching any of ``patterns``."""
    alternatives = sorted({glob_regex(p).pattern for p in patterns})
    if not alternatives:
        return re.compile(r"(?!)")
    return re.compile("(?:" + "|".join(alternatives) + ")", re.IGNORECASE | re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    return glob_regex(pattern).fullmatch(value) is not None


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern
