"""Rules for narrowing a permission's Resource to what was seen (``rules/aws/narrowing.yaml``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from auditor.ruleset import Rules

_GROUP_REF = re.compile(r"\\(\d+)")


def _template(replacement: str) -> tuple[int | str, ...]:
    """``"\\1/*"`` -> ``(1, "/*")``: group references and literals, so applying needs no re.sub."""
    parts: list[int | str] = []
    last = 0
    for match in _GROUP_REF.finditer(replacement):
        if match.start() > last:
            parts.append(replacement[last : match.start()])
        parts.append(int(match.group(1)))
        last = match.end()
    if last < len(replacement):
        parts.append(replacement[last:])
    return tuple(parts)


@dataclass(frozen=True)
class NarrowingRules:
    """How seen ARNs are generalized before narrowing (first matching rule wins)."""

    max_resources: int
    generalize: tuple[tuple[re.Pattern[str], tuple[int | str, ...]], ...]
    _unchanged: dict[str, None] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, rules: Rules) -> NarrowingRules:
        return rules.view("aws.narrowing", cls._build)

    @classmethod
    def _build(cls, rules: Rules) -> NarrowingRules:
        max_resources, rewrites = 20, []
        for _path, doc in rules.layers("aws/narrowing.yaml"):
            max_resources = int(doc.get("max_resources", max_resources))
            rewrites += [(re.compile(r["pattern"]), _template(r["replace"])) for r in doc.get("generalize") or []]
        return cls(max_resources, tuple(rewrites))

    def apply(self, arn: str) -> str:
        if arn in self._unchanged:  # bucket and table ARNs repeat; object keys do not
            return arn
        for pattern, template in self.generalize:
            match = pattern.match(arn)
            if match:
                return "".join(match.group(p) if isinstance(p, int) else p for p in template)
        if len(self._unchanged) > 100_000:
            self._unchanged.clear()
        self._unchanged[arn] = None
        return arn
