"""Benchmark: cost of canonicalising one event time (the scan pays it once per record).

Prints nanoseconds per call, best of five, for the ``...SSZ`` form of trail files and the
``...SS.ffffffZ`` form of Cloud Logging, each string new to the cache as in a real scan.
Goal: under 1 µs on the project machine.

Usage::

    python bench/bench_event_time.py
"""

from __future__ import annotations

import time

from auditor.timefmt import event_time


def _timed(values: list[str]) -> float:
    started = time.perf_counter()
    for value in values:
        event_time(value)
    return (time.perf_counter() - started) / len(values)


def main() -> None:
    for suffix in ("Z", ".382624Z"):
        times = [f"2026-11-20T10:{m:02d}:{s:02d}{suffix}" for m in range(60) for s in range(60)]
        event_time(times[0])
        best = min(_timed([t.encode().decode() for t in times]) for _ in range(5))
        print(f"event_time('...{suffix}'): {best * 1e9:,.0f} ns per call (goal < 1,000)")


if __name__ == "__main__":
    main()
