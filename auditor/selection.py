"""Which identities are audited as agents: by tag, by name/ARN glob, or by an explicit list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auditor.errors import InputError
from auditor.matching import matches

FALSE_TAG_VALUES = frozenset({"false", "no", "0", "off"})


@dataclass(frozen=True)
class AgentSelector:
    tag_key: str | None = "agent"
    globs: Sequence[str] = ()
    names: frozenset[str] = field(default_factory=frozenset)
    everyone: bool = False

    @classmethod
    def from_options(
        cls,
        tag_key: str | None,
        globs: Sequence[str],
        agents_file: Path | None,
        everyone: bool,
    ) -> AgentSelector:
        names: set[str] = set()
        if agents_file is not None:
            try:
                lines = agents_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise InputError(f"{agents_file}: cannot read agents list ({exc.strerror})") from None
            names = {line.split("#", 1)[0].strip() for line in lines} - {""}
        return cls(tag_key=tag_key or None, globs=tuple(globs), names=frozenset(names), everyone=everyone)

    def reason(self, identity: str, name: str, tags: Mapping[str, str]) -> str | None:
        """Why this identity is an agent, or None if it is not one."""
        if self.everyone:
            return "--all-identities"
        if identity in self.names or name in self.names:
            return "agents list"
        for glob in self.globs:
            if matches(glob, name) or matches(glob, identity):
                return f"name matches {glob}"
        if self.tag_key:
            for key, value in tags.items():
                if key.lower() == self.tag_key.lower() and value.strip().lower() not in FALSE_TAG_VALUES:
                    return f"tag {key}={value}"
        return None
