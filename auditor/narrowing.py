"""Rules for narrowing a permission's Resource to what was seen (``rules/aws/narrowing.yaml``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from auditor.ruleset import Rules

_GROUP_REF = re.compile(r"\\(\d+)")


def _expander(replacement: str) -> Callable[[re.Match[str]], str]:
    """``"\\1/*"`` -> what it makes of a match, without re's template engine (slower by far) or a
    join per ARN: one concatenation for the usual group-then-literal form. A group that took part in no
    match is empty."""
    parts: list[int | str] = []
    last = 0
    for match in _GROUP_REF.finditer(replacement):
        if match.start() > last:
            parts.append(replacement[last : match.start()])
        parts.append(int(match.group(1)))
        last = match.end()
    if last < len(replacement):
        parts.append(replacement[last:])
    if len(parts) == 2 and isinstance(parts[0], int) and isinstance(parts[1], str):
        group, tail = parts
        return lambda found: (found.group(group) or "") + tail
    return lambda found: "".join((found.group(p) or "") if isinstance(p, int) else p for p in parts)


@dataclass(frozen=True)
class NarrowingRules:
    """How seen ARNs are generalized before narrowing (first matching rule wins)."""

    max_resources: int
    generalize: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...]
    _unchanged: dict[str, None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, rules: Rules) -> NarrowingRules:
        return rules.view("aws.narrowing", cls._build)

    @classmethod
    def _build(cls, rules: Rules) -> NarrowingRules:
        max_resources, rewrites = 20, []
        for _path, doc in rules.layers("aws/narrowing.yaml"):
            max_resources = int(doc.get("max_resources", max_resources))
            rewrites += [(re.compile(r["pattern"]), _expander(r["replace"])) for r in doc.get("generalize") or []]
        return cls(max_resources, tuple(rewrites))

    def apply(self, arn: str) -> str:
        if arn in self._unchanged:  # bucket and table ARNs repeat; object keys do not
            return arn
        for pattern, expand in self.generalize:
            match = pattern.match(arn)
            if match:
                return expand(match)
        if len(self._unchanged) > 100_000:
            self._unchanged.clear()
        self._unchanged[arn] = None
        return arn
