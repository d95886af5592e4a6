"""Rules for narrowing a permission's Resource to what was seen (``rules/aws/narrowing.yaml``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditor.ruleset_files import layers


@dataclass(frozen=True)
class NarrowingRules:
    max_resources: int
    generalize: tuple[tuple[re.Pattern[str], str], ...]

    @classmethod
    def load(cls, dirs: Sequence[Path]) -> NarrowingRules:
        max_resources, rewrites = 20, []
        for _path, doc in layers(dirs, "aws/narrowing.yaml"):
            max_resources = int(doc.get("max_resources", max_resources))
            rewrites += [(re.compile(r["pattern"]), r["replace"]) for r in doc.get("generalize") or []]
        return cls(max_resources, tuple(rewrites))

    def apply(self, arn: str) -> str:
        for pattern, replacement in self.generalize:
            if pattern.match(arn):
                return pattern.sub(replacement, arn)
        return arn
