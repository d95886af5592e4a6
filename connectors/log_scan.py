"""What every log reader shares: the counters besides usage, and the parallel fold over files.

Readers (CloudTrail, Cloud Audit Logs) fold each file into a :class:`ScanCounters` subclass; only
those counters cross process boundaries, so memory does not grow with the number of events.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

import msgspec


@dataclass
class ScanCounters:
    """Coverage, skips and gaps of a scan; subclasses add their usage counters and merge them."""

    record_noun: ClassVar[tuple[str, str]] = ("record", "records")

    unmapped: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    days: dict[str, set[str]] = field(default_factory=dict)  # account/project -> days with events
    first: dict[str, str] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)
    events_read: int = 0
    events_in_window: int = 0
    files_read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    bad_records: dict[str, list[Any]] = field(default_factory=dict)

    def merge(self, other: Self) -> None:
        for key, count in other.unmapped.items():
            self.unmapped[key] = self.unmapped.get(key, 0) + count
        for scope, days in other.days.items():
            self.days.setdefault(scope, set()).update(days)
        for scope, first in other.first.items():
            self.saw(scope, first, other.last[scope])
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.events_read += other.events_read
        self.events_in_window += other.events_in_window
        self.files_read += other.files_read
        self.gaps += other.gaps
        singular, plural = self.record_noun
        for origin, (count, first) in other.bad_records.items():
            self.gaps.append(
                {
                    "scope": origin,
                    "reason": f"{count} malformed {singular if count == 1 else plural} skipped, first {first}",
                    "severity": "error",
                    "count": count,
                }
            )

    @property
    def newest(self) -> str:
        """The newest event time seen in any account/project ("" before any)."""
        return max(self.last.values(), default="")

    def saw(self, scope: str, first: str, last: str, days: Iterable[str] = ()) -> None:
        """Record that ``scope`` has events from ``first`` to ``last`` (on ``days``)."""
        self.days.setdefault(scope, set()).update(days)
        self.first[scope] = min(self.first.get(scope, first), first)
        self.last[scope] = max(self.last.get(scope, last), last)

    def bad_record(self, origin: str, where: str, exc: Exception) -> None:
        """Count a malformed record; the file's gap row names the first one and the count."""
        reason = f"malformed {self.record_noun[0]}"
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.bad_records.setdefault(origin, [0, f"{where}: {exc}"])[0] += 1

    def decode_each(self, decoder: Any, items: Sequence[Any], origin: str, label: str) -> list[Any]:
        """Decode items one by one with ``decoder``, counting (not raising on) the malformed ones."""
        decoded = []
        for index, item in enumerate(items):
            try:
                decoded.append(decoder.decode(item))
            except msgspec.ValidationError as exc:
                self.bad_record(origin, f"{label}[{index}]", exc)
        return decoded

    def decode_lines(self, raw: bytes, origin: str, decode: Callable[[bytes], Any]) -> list[Any]:
        """Decode newline-delimited records one line at a time, counting the malformed ones."""
        decoded = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                decoded.append(decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self.bad_record(origin, f"line {number}", exc)
        return decoded

    def unreadable(self, origin: str, exc: Exception) -> Self:
        self.gaps.append({"scope": origin, "reason": f"file skipped: {exc}", "severity": "error", "count": 1})
        self.skipped["unreadable file"] = self.skipped.get("unreadable file", 0) + 1
        return self


T = TypeVar("T", bound=ScanCounters)


def fold_files(
    files: Sequence[Path],
    read_batch: Callable[[list[Path]], T],
    total: T,
    workers: int | None,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 32,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> T:
    """Fold ``files`` batch by batch into ``total``, in worker processes when there are enough
    files to pay for them. ``read_batch`` must be picklable (a module-level function or a partial of
    one). ``initializer`` builds per-process state; it runs in this process first, so forked workers
    inherit what it built instead of building it again."""
    if initializer is not None:
        initializer(*initargs)
    workers = workers or os.cpu_count() or 1
    batches = [list(files[i : i + batch_size]) for i in range(0, len(files), batch_size)]
    done = 0
    if workers <= 1 or len(batches) < 2:
        results: Any = map(read_batch, batches)
        for batch, partial in zip(batches, results, strict=True):
            total.merge(partial)
            done += len(batch)
            if progress:
                progress(done, len(files))
        return total
    gc.freeze()  # forked workers must not copy-on-write the parent's heap through GC/refcount traffic
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs) as pool:
            for batch, partial in zip(batches, pool.map(read_batch, batches), strict=True):
                total.merge(partial)
                done += len(batch)
                if progress:
                    progress(done, len(files))
    finally:
        gc.unfreeze()
    return total
