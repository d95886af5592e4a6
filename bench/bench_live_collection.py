"""Benchmark: live collection of a 30-day single-account trail from moto server, then the offline parse.

Starts moto in its own process (so the server does not share this process's GIL), uploads N log
objects in the real layout (``AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/<dd>/*.json.gz``,
30 days, 4 regions, E events each), then times ``collect_snapshot`` with the parallel download pool
and with one download worker, and the parse of the snapshot by the offline connector. Prints
objects/s, events/s, the peak resident memory of this process and its parser processes (moto
excluded, sampled from /proc) and the parallel speedup. Usage::

    python bench/bench_live_collection.py --objects 100000 [--events-per-object 20] [--workers 32]
        [--sequential-objects 2000] [--latency-ms 20]

The sequential run reads the first ``--sequential-objects`` objects' days only (a full sequential
100k-object run takes long); both rates are per object, so the speedup compares like with like.
moto answers in well under a millisecond, S3 in tens: ``--latency-ms`` adds that round trip to every
request on the client side (a sleep in a botocore ``before-send`` hook, which holds no lock), so the
speedup shows what the pool buys against real S3 rather than against a local server.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3

from auditor.audit import AuditConfig, run_audit
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.aws.live import AdvisorScope, CollectRequest, LiveOptions, collect_snapshot
from auditor.ruleset import load as load_rules
from auditor.selection import AgentSelector
from procmem import measured

ACCOUNT = "123456789012"  # moto's default account
BUCKET = "bench-cloudtrail"
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"]
DAYS = 30
END = datetime(2026, 11, 21, tzinfo=UTC)
ROLE = f"arn:aws:iam::{ACCOUNT}:role/agents/bench-agent"
CALLS = [
    ("dynamodb.amazonaws.com", "GetItem"),
    ("dynamodb.amazonaws.com", "DescribeTable"),
    ("s3.amazonaws.com", "GetObject"),
    ("sqs.amazonaws.com", "ReceiveMessage"),
    ("kms.amazonaws.com", "Decrypt"),
    ("sts.amazonaws.com", "GetCallerIdentity"),
]


def _record(when: datetime, index: int, region: str) -> dict[str, Any]:
    source, name = CALLS[index % len(CALLS)]
    return {
        "eventVersion": "1.10",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROABENCH00000000:s",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/bench-agent/s",
            "accountId": ACCOUNT,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "arn": ROLE, "accountId": ACCOUNT, "userName": "bench-agent"},
                "attributes": {"creationDate": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "mfaAuthenticated": "false"},
            },
        },
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": region,
        "sourceIPAddress": "10.1.2.3",
        "userAgent": "Boto3/1.34.120 md/Botocore#1.34.120 ua/2.0 os/linux#6.1 lang/python#3.11.7",
        "requestParameters": {"tableName": "T1", "key": {"id": {"S": "HIDDEN_DUE_TO_SECURITY_REASONS"}}},
        "responseElements": None,
        "requestID": f"{index:032x}",
        "eventID": f"{index:032x}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": source != "s3.amazonaws.com",
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "false"}
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return server, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise SystemExit("moto server did not start")


def seed(url: str, objects: int, events_per_object: int) -> int:
    """One agent role, a trail, and ``objects`` log objects spread over 30 days and 4 regions."""
    session = boto3.Session()
    iam = session.client("iam", endpoint_url=url)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.create_role(
        RoleName="bench-agent",
        Path="/agents/",
        AssumeRolePolicyDocument=json.dumps(policy),
        Tags=[{"Key": "agent", "Value": "true"}],
    )
    iam.put_role_policy(RoleName="bench-agent", PolicyName="p", PolicyDocument=json.dumps(policy))
    s3 = session.client("s3", endpoint_url=url)
    s3.create_bucket(Bucket=BUCKET)
    trail = session.client("cloudtrail", endpoint_url=url)
    trail.create_trail(Name="bench-trail", S3BucketName=BUCKET, IsMultiRegionTrail=True)
    trail.put_event_selectors(TrailName="bench-trail", EventSelectors=[{"ReadWriteType": "All"}])
    per_folder = max(1, objects // (DAYS * len(REGIONS)))
    bodies: dict[tuple[int, str], bytes] = {}
    keys: list[tuple[str, bytes]] = []
    for day in range(DAYS):
        date = END - timedelta(days=DAYS - day)
        for region in REGIONS:
            events = [
                _record(date + timedelta(seconds=86399 * i // events_per_object), i, region)
                for i in range(events_per_object)
            ]
            bodies[(day, region)] = gzip.compress(json.dumps({"Records": events}).encode(), compresslevel=6)
            for index in range(per_folder):
                stamp = (date + timedelta(seconds=86399 * index // per_folder)).strftime("%Y%m%dT%H%MZ")
                name = f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{index:016d}.json.gz"
                key = f"AWSLogs/{ACCOUNT}/CloudTrail/{region}/{date:%Y/%m/%d}/{name}"
                keys.append((key, bodies[(day, region)]))
    with ThreadPoolExecutor(32) as pool:
        for start in range(0, len(keys), 1000):
            list(
                pool.map(
                    lambda item: s3.put_object(Bucket=BUCKET, Key=item[0], Body=item[1]), keys[start : start + 1000]
                )
            )
    return len(keys)


def latency_hook(milliseconds: float) -> Callable[[boto3.Session], None] | None:
    if not milliseconds:
        return None

    def hook(session: boto3.Session) -> None:
        session.events.register("before-send", lambda **_: time.sleep(milliseconds / 1000))

    return hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=20_000)
    parser.add_argument("--events-per-object", type=int, default=20)
    parser.add_argument("--workers", type=int, default=32, help="parallel downloads")
    parser.add_argument("--sequential-objects", type=int, default=2_000, help="objects for the 1-worker run")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated S3 round trip per request")
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[name] = value
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    server, url = start_moto()
    try:
        started = time.perf_counter()
        with ProcessPoolExecutor(1) as uploader:  # its memory must not count as the collection's
            keys = uploader.submit(seed, url, args.objects, args.events_per_object).result()
        print(
            f"cpu count {os.cpu_count()}, python {sys.version.split()[0]}; moto server in its own process; "
            f"added latency {args.latency_ms:g} ms per request"
        )
        print(f"uploaded {keys:,} objects x {args.events_per_object} events in {time.perf_counter() - started:.0f} s")
        request = CollectRequest(days=DAYS, until=END, selector=AgentSelector())
        rules = load_rules()
        options = LiveOptions(
            endpoints=(url,), access_advisor=AdvisorScope.off, session_hook=latency_hook(args.latency_ms)
        )
        with tempfile.TemporaryDirectory(prefix="auditor-bench-") as folder:
            parallel = Path(folder) / "parallel"
            live = LiveOptions(**{**options.__dict__, "download_workers": args.workers})
            manifest, collect_s, collect_rss = measured(lambda: collect_snapshot(live, parallel, request), server.pid)
            objects = manifest["stats"]["objects_downloaded"]
            config = AuditConfig((AwsFiles.from_dir(parallel),), days=DAYS, until=END, rules=rules, now=END)
            result, parse_s, parse_rss = measured(lambda: run_audit(config), server.pid)
            events = int(result.data.coverage["events_read"].sum())
            # Sequential: the same code with one download worker, over the first days' objects only.
            days = max(1, round(DAYS * args.sequential_objects / keys))
            one = LiveOptions(**{**options.__dict__, "download_workers": 1})
            short = CollectRequest(days=days, until=END - timedelta(days=DAYS - days), selector=AgentSelector())
            sequential, seq_s, _ = measured(lambda: collect_snapshot(one, Path(folder) / "seq", short), server.pid)
            seq_objects = sequential["stats"]["objects_downloaded"]
        total = collect_s + parse_s
        rows = [
            (f"collect, {args.workers} download workers", collect_s, objects, events, collect_rss),
            ("parse the snapshot", parse_s, objects, events, parse_rss),
            ("collect + parse", total, objects, events, max(collect_rss, parse_rss)),
            (f"collect {seq_objects:,} objects, 1 worker", seq_s, seq_objects, None, None),
        ]
        print(f"{'step':<34} {'seconds':>8} {'objects/s':>10} {'events/s':>10} {'peak RSS':>9}")
        for step, seconds, count, evts, rss in rows:
            rate = f"{evts / seconds:>10,.0f}" if evts else f"{'':>10}"
            memory = f"{rss / 2**20:>5,.0f} MiB" if rss else ""
            print(f"{step:<34} {seconds:>8.1f} {count / seconds:>10,.0f} {rate} {memory}")
        speedup = (objects / collect_s) / (seq_objects / seq_s)
        size = manifest["stats"]["bytes_downloaded"] / 1e6
        print(f"parallel download speedup: {speedup:.1f}x ({objects:,} objects, {events:,} events, {size:,.0f} MB)")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
