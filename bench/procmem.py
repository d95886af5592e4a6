"""Timing and peak resident memory of a process tree (main process plus its workers), from /proc."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any


def tree_rss(pid: int, exclude: int | None = None) -> int:
    """Resident bytes of ``pid`` and all its descendants (the subtree of ``exclude`` left out)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        if current == exclude:
            continue
        try:
            with open(f"/proc/{current}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{current}/task/{current}/children") as handle:
                stack += [int(c) for c in handle.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def _sampled(
    pid: int, exclude: int | None, running: Callable[[], bool], interval: float
) -> tuple[threading.Thread, list[int]]:
    peak = [0]

    def sample() -> None:
        while running():
            peak[0] = max(peak[0], tree_rss(pid, exclude))
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return thread, peak


def run_command(command: list[str], interval: float = 0.05) -> tuple[float, int]:
    """Run ``command`` to completion; (seconds, peak RSS of its process tree). Exits on failure."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    thread, peak = _sampled(process.pid, None, lambda: process.poll() is None, interval)
    code = process.wait()
    elapsed = time.perf_counter() - start
    thread.join()
    if code != 0:
        raise SystemExit(f"{' '.join(command[:4])} exited with {code}")
    return elapsed, peak[0]


def measured(work: Callable[[], Any], exclude: int | None = None, interval: float = 0.05) -> tuple[Any, float, int]:
    """Run ``work`` here; (its result, seconds, peak RSS of this process tree, ``exclude`` left out)."""
    running = [True]
    thread, peak = _sampled(os.getpid(), exclude, lambda: running[0], interval)
    start = time.perf_counter()
    result = work()
    elapsed = time.perf_counter() - start
    running[0] = False
    thread.join()
    return result, elapsed, peak[0]
