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


def any_glob_search(patterns: Iterable[str]) -> str:
    """A regex that *finds* a match in a name exactly when one of ``patterns`` matches the whole name
    (case-insensitive flags are the caller's, e.g. polars' ``(?is)``): a glob's leading and trailing
    ``*`` become an unanchored search instead of ``.*`` to match, which regex engines run many
    times faster (``*:Delete*`` is a search for ``:Delete``). None: matches nothing (without a
    look-ahead, which polars' engine lacks)."""
    alternatives = set()
    for pattern in patterns:
        core = pattern.strip("*")
        head = "" if pattern.startswith("*") else "^"
        tail = "" if pattern.endswith("*") else "$"
        alternatives.add(f"{head}{_glob_source(core)}{tail}")
    return "(?:" + "|".join(sorted(alternatives)) + ")" if alternatives else r"[^\s\S]"


def any_glob_regex(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any of ``patterns`` (use ``fullmatch``; none: matches nothing)."""
    alternatives = sorted({_glob_source(p) for p in patterns})
    return re.compile("(?:" + "|".join(alternatives) + ")" if alternatives else "(?!)", re.IGNORECASE | re.DOTALL)


def matches(pattern: str, value: str) -> bool:
    return glob_regex(pattern).fullmatch(value) is not None


def has_wildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _intersect_steps(a: str, b: str, i: int, j: int) -> list[tuple[int, int]]:
    """Moves of the product automaton of globs ``a`` and ``b`` from positions (i, j)."""
    x = a[i] if i < len(a) else None
    y = b[j] if j < len(b) else None
    steps = [(i + 1, j)] if x == "*" else []
    if y == "*":
        steps.append((i, j + 1))
    if x is None or y is None or (x == "*" and y == "*"):
        return steps
    if x == "*":
        steps.append((i, j + 1))
    elif y == "*":
        steps.append((i + 1, j))
    elif x == "?" or y == "?" or x == y:
        steps.append((i + 1, j + 1))
    return steps


def globs_intersect(a: str, b: str, case_sensitive: bool) -> bool:
    """Whether some string matches both IAM-style globs (``*`` any run, empty included; ``?`` one character).

    Decides whether a grant on resource pattern ``a`` can touch a target pattern ``b``.
    """
    if not case_sensitive:
        a, b = a.lower(), b.lower()
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        if state == (len(a), len(b)):
            return True
        seen.add(state)
        todo += _intersect_steps(a, b, *state)
    return False


@lru_cache(maxsize=65536)
def _cover_regex(outer: str, case_sensitive: bool) -> re.Pattern[str]:
    source = "".join(".*" if ch == "*" else "[^*]" if ch == "?" else re.escape(ch) for ch in outer)
    return re.compile(source, re.DOTALL | (0 if case_sensitive else re.IGNORECASE))


def glob_covers(outer: str, inner: str, case_sensitive: bool) -> bool:
    """Whether every string matching glob ``inner`` provably matches glob ``outer``.

    Reads ``inner`` as text whose ``*`` only an ``*`` of ``outer`` can absorb: sound (True means
    covered), but it may answer False for exotic pairs such as ``?*`` over ``*?``.
    """
    return _cover_regex(outer, case_sensitive).fullmatch(inner) is not None
