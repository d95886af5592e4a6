"""The log-scan engine every reader shares: counters, event times, and the parallel fold over files.

A reader is find + decode + fold: it lists its files, decodes each into records and folds them into
a :class:`ScanCounters` subclass (adding its own usage counters). Only counters cross process
boundaries, so memory does not grow with the number of events. The counters keep, per account /
project, the events of each day, the first and last event, the events inside the window and the
files; records dated after the cap (collection time / now) are counted as input problems and
otherwise ignored, so one future-dated record can never move the window.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import multiprocessing
import operator
import os
import signal
import threading
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar

import msgspec

from auditor.connectors.base import LogStats, ScopeStats
from auditor.timefmt import event_time


@dataclass
class ScanCounters:
    """Coverage, skips and gaps of a scan; subclasses add their usage counters and merge them."""

    record_noun: ClassVar[tuple[str, str]] = ("record", "records")

    unmapped: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    days: dict[str, dict[str, int]] = field(default_factory=dict)  # scope -> day -> events
    first: dict[str, str] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)
    in_window: dict[str, int] = field(default_factory=dict)
    files_by_scope: dict[str, int] = field(default_factory=dict)
    files_read: int = 0
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)  # (scope or "", reason) -> records
    gaps: list[dict[str, Any]] = field(default_factory=list)
    bad_records: dict[str, list[Any]] = field(default_factory=dict)
    beyond_cap: int = 0
    beyond_example: str = ""
    # per usage key: a hash of each counted record's identity (event id, time, call), so a record
    # read twice (a file and an export of it) counts once; resolved by :meth:`drop_duplicates`
    record_ids: dict[tuple[str, ...], array[int]] = field(default_factory=dict)

    def merge(self, other: Self) -> None:
        for key, count in other.unmapped.items():
            self.unmapped[key] = self.unmapped.get(key, 0) + count
        for scope, days in other.days.items():
            mine = self.days.setdefault(scope, {})
            for day, count in days.items():
                mine[day] = mine.get(day, 0) + count
        for scope, first in other.first.items():
            self._span(scope, first, other.last[scope])
        for scope, count in other.in_window.items():
            self.in_window[scope] = self.in_window.get(scope, 0) + count
        for scope, count in other.files_by_scope.items():
            self.files_by_scope[scope] = self.files_by_scope.get(scope, 0) + count
        for reason, count in other.skipped.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count
        self.files_read += other.files_read
        self.gaps += other.gaps
        for key, ids in other.record_ids.items():
            mine = self.record_ids.get(key)
            if mine is None:
                self.record_ids[key] = ids
            else:
                mine.extend(ids)
        if other.beyond_cap:
            self.beyond_example = self.beyond_example or other.beyond_example
            self.beyond_cap += other.beyond_cap
        self.gaps += other._malformed_rows()

    def list_malformed(self) -> None:
        """Add a gap row per file for the malformed records counted so far, and count afresh: a reader
        that folds several files into one counter calls it after each file, so that the rows keep the
        order that merging one counter per file gives them."""
        self.gaps += self._malformed_rows()
        self.bad_records = {}

    def _malformed_rows(self) -> list[dict[str, Any]]:
        singular, plural = self.record_noun
        return [
            {
                "scope": origin,
                "reason": f"{count} malformed {singular if count == 1 else plural} skipped, first {first}",
                "severity": "error",
                "count": count,
            }
            for origin, (count, first) in self.bad_records.items()
        ]

    @property
    def newest(self) -> str:
        """The newest event time seen in any scope, no later than the cap ("" before any)."""
        return max(self.last.values(), default="")

    def _span(self, scope: str, first: str, last: str) -> None:
        if scope not in self.first or first < self.first[scope]:
            self.first[scope] = first
        if scope not in self.last or last > self.last[scope]:
            self.last[scope] = last

    def saw(self, scope: str, first: str, last: str, days: Mapping[str, int] | None = None, in_window: int = 0) -> None:
        """Record that ``scope`` has events from ``first`` to ``last`` (``days``: events per day),
        for evidence that is not read event by event (aggregates)."""
        self._span(scope, first, last)
        mine = self.days.setdefault(scope, {})
        for day, count in (days or {}).items():
            mine[day] = mine.get(day, 0) + count
        self.in_window[scope] = self.in_window.get(scope, 0) + in_window

    def saw_times(self, scope: str, times: list[str], in_window: int) -> None:
        """Events of ``scope`` at ``times`` (canonical, in any order), ``in_window`` of them in the window:
        what a hot loop gathers per event, counted per day and spanned here, at C speed."""
        if not times:
            return
        earliest, latest = min(times), max(times)
        self._span(scope, earliest, latest)
        mine = self.days.setdefault(scope, {})
        per_day = {earliest[:10]: len(times)} if earliest[:10] == latest[:10] else Counter(map(_DAY, times))
        for day, count in per_day.items():
            mine[day] = mine.get(day, 0) + count
        if in_window:
            self.in_window[scope] = self.in_window.get(scope, 0) + in_window

    def seen(self, key: tuple[str, ...], record: int) -> None:
        ids = self.record_ids.get(key)
        if ids is None:
            ids = self.record_ids[key] = array("q")
        ids.append(record)

    def drop_duplicates(self, usage: dict[Any, list[Any]]) -> int:
        """Count every record once: subtract, per usage key, the records seen more than once."""
        dropped = 0
        for key, ids in self.record_ids.items():
            extra = len(ids) - len(set(ids))
            if extra:
                usage[key][0] -= extra
                dropped += extra
        self.record_ids.clear()
        return dropped

    def skip(self, reason: str, count: int = 1, scope: str = "") -> None:
        key = (scope, reason)
        self.skipped[key] = self.skipped.get(key, 0) + count

    def after_cap(self, origin: str, when: str) -> None:
        """A record dated after the cap: an input problem, never part of any window."""
        if not self.beyond_cap:
            self.beyond_example = f"{origin} ({when})"
        self.beyond_cap += 1

    def file_done(self, scopes: Iterable[str] | None = None) -> None:
        """Called once per file after its fold: count the file for ``scopes``, the scopes it held
        (default: every scope seen, which is what counters of that one file hold)."""
        self.files_read += 1
        for scope in self.first if scopes is None else scopes:
            self.files_by_scope[scope] = self.files_by_scope.get(scope, 0) + 1

    def bad_record(self, origin: str, where: str, exc: BaseException) -> None:
        """Count a malformed record; the file's gap row names the first one and the count."""
        self.skip(f"malformed {self.record_noun[0]}")
        self.bad_records.setdefault(origin, [0, f"{where}: {_message(exc)}"])[0] += 1

    def decode_each(self, decoder: Any, items: Sequence[Any], origin: str, label: str) -> list[Any]:
        """Decode items one by one with ``decoder``, counting (not raising on) the malformed ones."""
        decoded = []
        for index, item in enumerate(items):
            try:
                decoded.append(decoder.decode(item))
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
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
            except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError) as exc:
                self.bad_record(origin, f"line {number}", exc)
        return decoded

    def unreadable(self, origin: str, exc: BaseException) -> Self:
        self.gaps.append({"scope": origin, "reason": f"file skipped: {_message(exc)}", "severity": "error", "count": 1})
        self.skip("unreadable file")
        return self

    def stats(self, provider: str, origin: str, duplicates: int = 0) -> LogStats:
        scopes = {
            scope: ScopeStats(
                days=dict(self.days.get(scope, {})),
                first=self.first[scope],
                last=self.last[scope],
                events_in_window=self.in_window.get(scope, 0),
                files=self.files_by_scope.get(scope, 0),
            )
            for scope in self.first
        }
        return LogStats(
            provider=provider,
            origin=origin,
            scopes=scopes,
            files_read=self.files_read,
            skipped=dict(self.skipped),
            newest=self.newest,
            beyond_cap=self.beyond_cap,
            beyond_example=self.beyond_example,
            duplicates=duplicates,
        )


def problem_row(path: Path, reason: str) -> dict[str, Any]:
    """A GAPS row (without provider and account) for a path a reader could not look at."""
    return {"scope": str(path), "reason": f"not read: {reason}", "severity": "error", "count": 1}


def _message(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


_DAY = operator.itemgetter(slice(0, 10))  # "YYYY-MM-DD" of a canonical time
#: What follows a valid minute in the exact form: ``:SS`` and the ``Z``.
SECOND_TAILS = frozenset(f":{n:02d}Z" for n in range(60))


class EventClock:
    """Event times as ``YYYY-MM-DDTHH:MM:SSZ`` strings, checked against the cap.

    The common exact form is validated with a per-minute cache and a set of valid second tails (two
    look-ups per event, inlined by the hot loops through :attr:`minutes`); anything else goes
    through :func:`auditor.timefmt.event_time`. ``None``: impossible or unparseable, counted by the
    caller.
    """

    def __init__(self, cap: str) -> None:
        self.cap = cap
        self.minutes: dict[str, bool] = {}

    def canonical(self, when: str) -> str | None:
        if len(when) == 20 and when[16:] in SECOND_TAILS:
            minute = when[:16]
            valid = self.minutes.get(minute)
            if valid is None:
                valid = self.minutes[minute] = event_time(minute + ":00Z") == minute + ":00Z"
            return when if valid else None
        return event_time(when)


T = TypeVar("T", bound=ScanCounters)


def dated_records(
    raws: Iterable[Any], normalize: Callable[[Any], Any], cap: str, out: ScanCounters, origin: str
) -> Iterator[tuple[Any, str]]:
    """Each raw record normalized (an object with a ``time``) with its canonical time, no later than
    ``cap``; records that do not normalize, cannot be dated or are dated beyond the cap are counted
    in ``out`` as input problems instead."""
    clock = EventClock(cap)
    for index, raw in enumerate(raws):
        try:
            record = normalize(raw)
        except (ValueError, TypeError, AttributeError) as exc:
            out.bad_record(origin, f"record {index}", exc)
            continue
        when = clock.canonical(record.time) if isinstance(record.time, str) else None
        if when is None:
            out.bad_record(origin, f"record {index}", ValueError(f"impossible time {str(record.time)[:40]!r}"))
            continue
        if when > cap:
            out.after_cap(origin, when)
            continue
        yield record, when


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the audit (process ``parent``, read before forking: a parent killed
    before the worker asks would be the init process by then): ask Linux to kill it when the parent
    dies, and watch the parent elsewhere (a killed parent leaves its pool workers blocked on a queue
    forever)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="auditor-parent-watch").start()


#: Allocations between young-generation collections while folding logs (CPython's default is 700).
#: A fold allocates millions of short-lived, acyclic objects; collecting every 700 of them costs about
#: a quarter of the scan, and the cycles a fold can leave are few and bounded per file.
SCAN_GC_THRESHOLD = 50_000


#: Free memory glibc keeps at the top of the heap when it trims (``M_TOP_PAD``) while folding logs.
#: Each file is inflated into a buffer of a few MiB and freed again: with glibc's default (128 KiB)
#: the heap is trimmed after every file and the next one faults its pages in afresh, a sixth of the
#: scan's time in the kernel.
SCAN_TOP_PAD = 64 << 20
GLIBC_TOP_PAD = 128 << 10
_M_TOP_PAD = -2


def _heap_top_pad(size: int) -> None:
    """``mallopt(M_TOP_PAD, size)`` where the C library is glibc; other libraries are left alone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_TOP_PAD, size)


@contextlib.contextmanager
def _tuned_for_scan() -> Iterator[None]:
    """Young-generation collections rarely and the heap kept, for the fold in this process."""
    before = gc.get_threshold()
    gc.set_threshold(SCAN_GC_THRESHOLD, *before[1:])
    _heap_top_pad(SCAN_TOP_PAD)
    try:
        yield
    finally:
        _heap_top_pad(GLIBC_TOP_PAD)
        gc.set_threshold(*before)


def _worker_init(parent: int, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    _die_with_parent(parent)
    gc.set_threshold(SCAN_GC_THRESHOLD, *gc.get_threshold()[1:])
    _heap_top_pad(SCAN_TOP_PAD)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if initializer is not None:
        initializer(*initargs)


def _each(paths: list[Path], read_file: Callable[[Path], T], empty: Callable[[], T]) -> T:
    total = empty()
    for path in paths:
        total.merge(read_file(path))
    return total


def batches_of(read_file: Callable[[Path], T], empty: Callable[[], T]) -> Callable[[list[Path]], T]:
    """A batch reader for :func:`fold_files` from a one-file reader (picklable when ``read_file`` is a
    module-level function or a partial of one)."""
    return functools.partial(_each, read_file=read_file, empty=empty)


def guided_batches(files: Sequence[Path], workers: int, largest: int) -> list[list[Path]]:
    """``files`` in order, cut into batches of at most ``largest`` that shrink as the files run out:
    each holds a share of what is left, so the workers finish together instead of one folding the
    last large batch alone while the others wait."""
    batches, start = [], 0
    while start < len(files):
        size = max(1, min(largest, (len(files) - start) // (workers * 2)))
        batches.append(list(files[start : start + size]))
        start += size
    return batches


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
    return FoldInFlight(files, read_batch, workers, batch_size, initializer, initargs).finish(total, progress)


class FoldInFlight(Generic[T]):
    """A fold over files started now and collected later (:meth:`finish`), so the workers read while
    this process does other work. The batches no worker has begun by then can be read by another
    reader, one that knows more than the first did (the scan starts before the agents are known).

    Serial folds (one worker, or too few files for two) do all their work in :meth:`finish`."""

    def __init__(
        self,
        files: Sequence[Path],
        read_batch: Callable[[list[Path]], T],
        workers: int | None,
        batch_size: int = 32,
        initializer: Callable[..., None] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        workers = workers or os.cpu_count() or 1
        self.setup = (initializer, initargs)
        self.files = files
        self.batches = guided_batches(files, workers, batch_size)
        self.read_batch = read_batch
        self.pool: ProcessPoolExecutor | None = None
        self.futures: list[Future[T]] = []
        if workers <= 1 or len(self.batches) < 2:
            return
        self._set_up()  # here first: forked workers inherit what it built instead of building it again
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        gc.freeze()  # forked workers must not copy-on-write the parent's heap through GC/refcount traffic
        try:
            self.pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(), initializer, initargs)
            )
            self.futures = [self.pool.submit(read_batch, batch) for batch in self.batches]  # forks every worker
        except BaseException:
            self.cancel()
            raise
        finally:
            gc.unfreeze()

    def finish(
        self,
        total: T,
        progress: Callable[[int, int], None] | None = None,
        read_rest: Callable[[list[Path]], T] | None = None,
    ) -> T:
        """Merge every batch into ``total``, in file order. ``read_rest`` reads the batches not begun
        yet (default: the first reader); a batch the first reader failed on is read again by
        ``read_rest``."""
        rest = read_rest or self.read_batch
        done = 0
        if self.pool is None:
            self._set_up()  # read here, now: another fold begun since may have set this process up for itself
            with _tuned_for_scan():
                for batch in self.batches:
                    total.merge(rest(batch))
                    done += len(batch)
                    if progress:
                        progress(done, len(self.files))
            return total
        try:
            if read_rest is not None:
                self.futures = [
                    self.pool.submit(read_rest, batch) if future.cancel() else future
                    for batch, future in zip(self.batches, self.futures, strict=True)
                ]
            pending, self.futures = deque(zip(self.batches, self.futures, strict=True)), []
            with _tuned_for_scan():
                while pending:  # each future is let go once merged: its result is freed with it
                    batch, future = pending.popleft()
                    total.merge(self._result(future, batch, rest))
                    done += len(batch)
                    if progress:
                        progress(done, len(self.files))
        except BaseException:
            self.cancel()
            raise
        self.pool.shutdown(wait=True)
        self.pool = None
        return total

    def _set_up(self) -> None:
        initializer, initargs = self.setup
        if initializer is not None:
            initializer(*initargs)

    def _result(self, future: Future[T], batch: list[Path], rest: Callable[[list[Path]], T]) -> T:
        try:
            return future.result()
        except BrokenProcessPool:
            raise
        except Exception:
            if rest is self.read_batch or self.pool is None:
                raise
            return self.pool.submit(rest, batch).result()  # what the first reader tripped on, the last decides

    def cancel(self) -> None:
        """Stop now (a no-op once finished): the batches not begun are dropped and the workers still reading
        are killed, so that an error or Ctrl-C before the scan is collected does not wait for them."""
        if self.pool is not None:
            pool, self.pool = self.pool, None
            _kill(pool)


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's workers and shut it down (public only from Python 3.14, as ``terminate_workers``)."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list(getattr(pool, "_processes", None) or ()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process, signal.SIGKILL)
    pool.shutdown(wait=True, cancel_futures=True)


def _newest_batch(paths: list[Path], newest_in: Callable[[Path], str]) -> NewestByFile:
    out = NewestByFile()
    for path in paths:
        out.per_file[str(path)] = newest_in(path)
    return out


@dataclass
class NewestByFile(ScanCounters):
    """The newest datable event (no later than the cap) of each file, for the window probe."""

    per_file: dict[str, str] = field(default_factory=dict)

    def merge(self, other: NewestByFile) -> None:
        super().merge(other)
        self.per_file.update(other.per_file)


def newest_event(
    files: Sequence[Path],
    newest_in: Callable[[Path], str],
    cap: str,
    workers: int | None,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> str:
    """The newest event time no later than ``cap`` (``newest_in(path)`` applies the cap to one file).

    Where files sit in ``.../YYYY/MM/DD/`` folders (logs are delivered after the events they hold),
    only each location's newest folder is read, then the next older one for a location whose folder
    held nothing datable; folders dated after the cap's next day cannot hold the newest event before
    the cap and are passed over (the full scan still reads them and counts what is beyond the cap).
    Other files are all read."""
    by_base: dict[Path, dict[str, list[Path]]] = {}
    picked: list[Path] = []
    latest_day = _next_day(cap[:10]).replace("-", "/")
    for path in files:
        parts = path.parts
        if len(parts) >= 5 and all(p.isdigit() for p in parts[-4:-1]):
            day = "/".join(parts[-4:-1])
            if day <= latest_day:
                by_base.setdefault(Path(*parts[:-4]), {}).setdefault(day, []).append(path)
        else:
            picked.append(path)
    pending = {base: sorted(days, reverse=True) for base, days in by_base.items()}
    newest = ""
    while picked or pending:
        picked += [p for base, days in pending.items() for p in by_base[base][days[0]]]
        found = fold_files(
            picked,
            functools.partial(_newest_batch, newest_in=newest_in),
            NewestByFile(),
            workers,
            initializer=initializer,
            initargs=initargs,
        ).per_file
        newest = max([newest, *found.values()])
        pending = {
            base: days[1:]
            for base, days in pending.items()
            if len(days) > 1 and not any(found.get(str(p)) for p in by_base[base][days[0]])
        }
        picked = []
    return newest


def _next_day(day: str) -> str:
    try:
        return (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    except (ValueError, OverflowError):
        return day
