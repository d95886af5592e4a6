"""Benchmark: offline audit throughput and memory on N generated CloudTrail events.

Generates N events in the real layout (``AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/
*.json.gz`` files of ~1,000 records each, realistic record shapes, 50 agent roles) plus a matching
authorization-details export, then runs ``auditor audit`` end to end and prints events/s and the
peak resident memory of the whole process tree (main process + parallel readers), sampled from
/proc. Usage::

    python bench/bench_offline.py 1000000 5000000 [--workdir bench/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from workloads import generate

from procmem import run_command


def run(root: Path, workers: int | None) -> tuple[float, int]:
    out = root.parent / f"{root.name}-out"
    command = [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(root), "--out", str(out), "-q"]
    return run_command(command + (["--workers", str(workers)] if workers else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", type=int, nargs="+", help="event counts to benchmark, e.g. 1000000 5000000")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    print(f"cpu count: {os.cpu_count()}, python {sys.version.split()[0]}")
    print(f"{'events':>12} {'files':>7} {'seconds':>8} {'events/s':>10} {'peak RSS (tree)':>16}")
    for events in args.events:
        root = generate(args.workdir / f"events-{events}", events, identities=50)
        files = sum(1 for _ in (root / "AWSLogs").rglob("*.json.gz"))
        elapsed, peak = run(root, args.workers)
        print(f"{events:>12,} {files:>7,} {elapsed:>8.1f} {events / elapsed:>10,.0f} {peak / 2**20:>13,.0f} MiB")


if __name__ == "__main__":
    main()
