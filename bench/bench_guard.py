"""Benchmark: the guard's cost per call inside the agent, for blocklists of 10, 1,000 and 100,000 entries.

Prints microseconds per call, best of five: ``check()`` of an allowed permission with the decision
log on (one JSON line appended per call) and off; the boto3 hook alone (mapping + check + log
line); a whole client call, guarded and not, answered by a ``before-send`` handler (no network);
and a blocked call (the decision, the log line with redacted parameters, the raised
``ActionBlocked``). Goal: under 50 µs per allowed call, flat in the blocklist's size.

Usage::

    python bench/bench_guard.py
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from auditor.guard import ActionBlocked, DecisionLog, Guard, IdentityPolicy

CALLS = 20_000
PARAMS = {"Bucket": "reports", "Key": "2026/11/summary.csv"}


def _policy(size: int) -> IdentityPolicy:
    deny = [f"svc{i % 400}:Delete{i}" for i in range(size - 1)] + ["s3:DeleteBucket"]
    return IdentityPolicy.from_entry(
        {
            "provider": "aws",
            "identity": "arn:aws:iam::123456789012:role/bench",
            "name": "bench",
            "deny": [{"rule": "r", "severity": "high", "reason": "x", "permissions": deny}],
            "require_approval": [],
        }
    )


def _best(fn: Callable[[], Any], calls: int = CALLS) -> float:
    fn()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def _blocked(guard: Guard) -> None:
    with contextlib.suppress(ActionBlocked):
        guard.check("s3:DeleteBucket", params={"Bucket": "reports"})


def _offline_s3(guard: Guard | None) -> Any:
    """An S3 client whose requests are answered before they leave the process."""
    session = boto3.Session(region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    s3 = (guard.protect(session) if guard else session).client("s3")
    ok = AWSResponse("https://bench", 200, {}, None)
    ok.raw = type("Raw", (), {"stream": lambda self, **_: iter([b""])})()
    s3.meta.events.register("before-send", lambda **_: ok)
    return s3


def _figures(size: int, tmp: Path) -> dict[str, float]:
    policy = _policy(size)
    quiet = Guard(policy)
    logged = Guard(policy, log=DecisionLog(tmp / f"guard-{size}.jsonl"))
    hooked = Guard(policy, log=DecisionLog(tmp / f"hook-{size}.jsonl"))
    s3, bare = _offline_s3(hooked), _offline_s3(None)
    head = s3.meta.service_model.operation_model("HeadObject")
    return {
        "check, allowed, no log": _best(lambda: quiet.check("s3:GetObject", params=PARAMS)),
        "check, allowed, logged": _best(lambda: logged.check("s3:GetObject", params=PARAMS)),
        "check, blocked, logged": _best(lambda: _blocked(logged)),
        "boto3 hook, allowed, logged": _best(lambda: hooked._aws(params=dict(PARAMS), model=head)),
        "boto3 head_object, guarded": _best(lambda: s3.head_object(**PARAMS), 2_000),
        "boto3 head_object, bare": _best(lambda: bare.head_object(**PARAMS), 2_000),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for size in (10, 1_000, 100_000):
            print(f"blocklist of {size:,} entries:")
            for what, micros in _figures(size, Path(tmp)).items():
                print(f"  {what:<28} {micros:8.1f} µs per call")
    print("goal: < 50 µs per allowed call (check or boto3 hook, logged), flat in the blocklist's size")


if __name__ == "__main__":
    main()
