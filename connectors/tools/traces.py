"""Reading trace files: discovery, safe reads and the parallel fold of the shared scan engine.

Every regular file below the given paths is read (``.gz`` or not, at most ``max_file_bytes`` once
decompressed); a file holding no span at all is one unreadable file, a file with some bad spans
keeps the rest and counts them. Spans are kept in their compact form: the attribution of a call
needs its whole trace, which may be spread over several files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from auditor import fileio
from auditor.connectors import log_scan
from auditor.connectors.tools import otlp
from auditor.errors import InputError


@dataclass
class TraceScan(log_scan.ScanCounters):
    record_noun: ClassVar[tuple[str, str]] = ("span", "spans")
    spans: list[otlp.Span] = field(default_factory=list)

    def merge(self, other: TraceScan) -> None:  # type: ignore[override]
        super().merge(other)
        self.spans += other.spans


def find_files(paths: Sequence[Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    files, problems = fileio.walk_files(paths)
    return files, [log_scan.problem_row(path, reason) for path, reason in problems]


def read_file(path: Path, max_file_bytes: int) -> TraceScan:
    out = TraceScan()
    origin = str(path)
    try:
        raw = fileio.read_input(path, max_file_bytes)
    except InputError as exc:
        return out.unreadable(origin, exc)
    problems: list[tuple[str, Exception]] = []
    spans = otlp.decode(raw, lambda where, exc: problems.append((where, exc)))
    if not spans and problems:
        where, exc = problems[0]
        return out.unreadable(origin, ValueError(f"not a trace export ({where.strip()}: {exc})"))
    for where, exc in problems:
        out.bad_record(origin, where.strip() or "document", exc)
    out.spans = spans
    out.file_done()
    return out


def scan(files: Sequence[Path], workers: int | None, max_file_bytes: int) -> TraceScan:
    return log_scan.fold_files(
        files,
        log_scan.batches_of(functools.partial(read_file, max_file_bytes=max_file_bytes), TraceScan),
        TraceScan(),
        workers,
    )
