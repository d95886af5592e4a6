"""Benchmark: cost per identity and fixed cost, end to end, in fresh processes.

Two workloads (``bench/workloads.py``), each timed with the peak resident memory of the whole
process tree and the size of the outputs:

* ``identities``: N agent roles holding wide grants (~1,700 actions each), 1M events; run for
  several N to show time per identity staying flat (``--identities 250 1000 2000``);
* ``small``: 200k events, 8 agent roles holding AdministratorAccess (fixed costs dominate), next
  to trailscraper 0.10.0 on the same files when ``--trailscraper`` is given (installed into its own
  virtualenv under the work folder on first use).

Usage::

    python bench/bench_scale.py identities --identities 250 1000 2000 [--events 1000000]
    python bench/bench_scale.py small [--trailscraper]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path

from workloads import generate

from procmem import run_command

WORK = Path(__file__).parent / "data"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def audit(root: Path, workers: int | None = None) -> tuple[float, int, dict[str, int]]:
    out = root.parent / f"{root.name}-out"  # beside the input, as trailscraper gets only the logs to read
    command = [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(root), "--out", str(out), "-q"]
    elapsed, peak = run_command(command + (["--workers", str(workers)] if workers else []))
    real = out.resolve()
    sizes = {
        name: (real / name).stat().st_size
        for name in (
            "permissions.csv",
            "permissions.parquet",
            "report.json",
            "report.md",
            "report.html",
            "report.sarif",
            "blocklist.yaml",
        )
    }
    sizes["policies/"] = _size(real / "policies")
    return elapsed, peak, sizes


def _trailscraper(work: Path) -> Path:
    env = work / "trailscraper-venv"
    binary = env / "bin" / "trailscraper"
    if not binary.exists():
        venv.create(env, with_pip=True)
        subprocess.run([env / "bin" / "pip", "install", "--quiet", "trailscraper==0.10.0"], check=True)
    return binary


def trailscraper(root: Path, work: Path) -> tuple[float, int]:
    """``trailscraper select | trailscraper generate`` over the same log files, as its docs show."""
    binary = _trailscraper(work)
    logs = root / "AWSLogs"
    script = f"{binary} select --log-dir {logs} | {binary} generate > /dev/null"
    return run_command(["bash", "-c", script])


def identities(args: argparse.Namespace) -> None:
    print(f"{'identities':>10} {'events':>10} {'seconds':>8} {'ms/identity':>12} {'peak RSS':>10}  outputs")
    for count in args.identities:
        root = generate(args.workdir / f"identities-{count}-{args.events}", args.events, identities=count)
        elapsed, peak, sizes = audit(root, args.workers)
        shown = ", ".join(f"{k} {v / 2**20:,.1f} MiB" for k, v in sizes.items())
        print(
            f"{count:>10,} {args.events:>10,} {elapsed:>8.1f} {1000 * elapsed / count:>12.1f} "
            f"{peak / 2**20:>7,.0f} MiB  {shown}"
        )


def small(args: argparse.Namespace) -> None:
    root = generate(args.workdir / "small-200000-admin", 200_000, identities=8, admin=True)
    runs = [audit(root, args.workers) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r[0])
    median = statistics.median(r[0] for r in runs)
    print(
        f"auditor: {best[0]:.2f} s (best of {args.repeat}; median {median:.2f} s), peak RSS "
        f"{best[1] / 2**20:,.0f} MiB, {200_000 / best[0]:,.0f} events/s"
    )
    if args.trailscraper:
        seconds, peak = trailscraper(root, args.workdir)
        print(
            f"trailscraper 0.10.0: {seconds:.2f} s, peak RSS {peak / 2**20:,.0f} MiB; auditor is "
            f"{seconds / best[0]:.1f}x faster"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["identities", "small"])
    parser.add_argument("--identities", type=int, nargs="+", default=[250, 1000, 2000])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trailscraper", action="store_true")
    parser.add_argument("--workdir", type=Path, default=WORK)
    args = parser.parse_args()
    print(f"cpu count: {os.cpu_count()}, python {sys.version.split()[0]}")
    # An installed package is byte-compiled; an editable checkout under PYTHONDONTWRITEBYTECODE would
    # recompile the project's own modules on every run (~0.25 s) and time that instead.
    project = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(project / "auditor"), str(project / "connectors")])
    {"identities": identities, "small": small}[args.workload](args)


if __name__ == "__main__":
    main()
