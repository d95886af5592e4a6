"""What every connector is: something that turns one source into an :class:`AuditInput`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from auditor.model import AuditInput
from auditor.selection import AgentSelector

#: Progress callback: (what, done, total). Connectors call it; the CLI draws it on a TTY.
Progress = Callable[[str, int, int], None]


def no_progress(what: str, done: int, total: int) -> None:
    """Default progress callback: draws nothing."""


@dataclass(frozen=True)
class AuditRequest:
    """What every connector needs to know besides its own source."""

    days: int
    until: datetime | None
    selector: AgentSelector
    rule_dirs: tuple[Path, ...]
    workers: int | None = None


class Connector(Protocol):
    name: str

    def collect(self, request: AuditRequest, progress: Progress = no_progress) -> AuditInput: ...
