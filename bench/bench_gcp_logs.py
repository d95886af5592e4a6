"""Benchmark: parsing Cloud Audit Log NDJSON (the files a Cloud Storage log sink writes).

Generates N realistic LogEntry records in the sink layout (``cloudaudit.googleapis.com/
{activity,data_access}/YYYY/MM/DD/HH:00:00_HH:59:59_S0.json``, 30 days, 40 agent service accounts,
impersonation chains, denied checks, entries without authorizationInfo), then times, each in a
fresh process, the parse-and-fold of every file (``auditor.connectors.gcp.audit_logs.scan``) with one
worker and with all of them, and the whole ``auditor audit --gcp-dir``. Peak memory is the resident
memory of the process tree (main process + parallel readers), sampled from /proc. Usage::

    python bench/bench_gcp_logs.py 1000000 [--workdir bench/data]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from procmem import run_command

PROJECT = "bench-project"
AGENTS = [f"agent-{i:02d}@{PROJECT}.iam.gserviceaccount.com" for i in range(40)]
CALLS = [  # (service, method, permission, log)
    ("compute.googleapis.com", "v1.compute.instances.stop", "compute.instances.stop", "activity"),
    ("compute.googleapis.com", "v1.compute.instances.start", "compute.instances.start", "activity"),
    ("compute.googleapis.com", "v1.compute.disks.createSnapshot", "compute.disks.createSnapshot", "activity"),
    ("storage.googleapis.com", "storage.objects.get", "storage.objects.get", "data_access"),
    ("storage.googleapis.com", "storage.objects.create", "storage.objects.create", "data_access"),
    ("storage.googleapis.com", "storage.objects.list", "storage.objects.list", "data_access"),
    ("bigquery.googleapis.com", "google.cloud.bigquery.v2.JobService.InsertJob", "bigquery.jobs.create", "data_access"),
    (
        "bigquery.googleapis.com",
        "google.cloud.bigquery.v2.JobService.InsertJob",
        "bigquery.tables.getData",
        "data_access",
    ),
    ("run.googleapis.com", "google.cloud.run.v1.Services.ReplaceService", "run.services.update", "activity"),
    ("pubsub.googleapis.com", "google.pubsub.v1.Publisher.Publish", "pubsub.topics.publish", "data_access"),
    (
        "secretmanager.googleapis.com",
        "google.cloud.secretmanager.v1.SecretManagerService.AccessSecretVersion",
        "secretmanager.versions.access",
        "data_access",
    ),
]
DAYS = 30
END = datetime(2026, 11, 20, tzinfo=UTC)


def _entry(rng: random.Random, when: datetime) -> tuple[str, bytes]:
    principal = rng.choice(AGENTS)
    service, method, permission, log = rng.choice(CALLS)
    resource = f"projects/{PROJECT}/resources/r{rng.randrange(50)}"
    payload: dict = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "status": {},
        "authenticationInfo": {"principalEmail": principal},
        "requestMetadata": {
            "callerIp": f"10.0.{rng.randrange(256)}.{rng.randrange(256)}",
            "callerSuppliedUserAgent": "google-api-python-client/2.150.0 gl-python/3.12.3",
            "requestAttributes": {"time": when.isoformat().replace("+00:00", "Z"), "auth": {}},
            "destinationAttributes": {},
        },
        "serviceName": service,
        "methodName": method,
        "resourceName": resource,
    }
    roll = rng.random()
    if roll < 0.03:  # the last entry of a long-running operation: no authorizationInfo
        pass
    else:
        check = {
            "resource": resource,
            "permission": permission,
            "resourceAttributes": {"service": service, "name": resource},
        }
        if roll > 0.02 * 2:
            check["granted"] = True
        else:
            payload["status"] = {"code": 7, "message": "PERMISSION_DENIED"}
        payload["authorizationInfo"] = [check]
    if roll > 0.95:
        payload["authenticationInfo"]["serviceAccountDelegationInfo"] = [
            {"firstPartyPrincipal": {"principalEmail": f"ci@{PROJECT}-ci.iam.gserviceaccount.com"}}
        ]
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{rng.randrange(10**9):09d}Z"
    return log, orjson.dumps(
        {
            "insertId": f"{rng.getrandbits(48):x}",
            "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2F{log}",
            "protoPayload": payload,
            "receiveTimestamp": stamp,
            "resource": {
                "type": "audited_resource",
                "labels": {"project_id": PROJECT, "service": service, "method": method},
            },
            "severity": "NOTICE" if log == "activity" else "INFO",
            "timestamp": stamp,
        }
    )


def generate(root: Path, entries: int, seed: int = 11) -> Path:
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(entries):
        return root
    rng = random.Random(seed)
    hours = DAYS * 24
    per_hour = entries // hours
    written = 0
    for hour in range(hours):
        start = END - timedelta(hours=hours - hour)
        count = per_hour + (1 if hour < entries - per_hour * hours else 0)
        lines: dict[str, list[bytes]] = {"activity": [], "data_access": []}
        for i in range(count):
            log, line = _entry(rng, start + timedelta(seconds=3600 * i / max(count, 1)))
            lines[log].append(line)
        for log, chunk in lines.items():
            folder = root / "cloudaudit.googleapis.com" / log / f"{start:%Y}" / f"{start:%m}" / f"{start:%d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{start:%H}:00:00_{start:%H}:59:59_S0.json").write_bytes(b"\n".join(chunk) + b"\n")
        written += count
        if hour % 120 == 0:
            print(f"  generated {written:,}/{entries:,} entries", file=sys.stderr, flush=True)
    (root / "policies" / "projects").mkdir(parents=True, exist_ok=True)
    (root / "policies" / "projects" / f"{PROJECT}.json").write_text(
        json.dumps(
            {
                "bindings": [{"role": "roles/bench.agent", "members": [f"serviceAccount:{a}" for a in AGENTS]}],
                "auditConfigs": [
                    {
                        "service": "allServices",
                        "auditLogConfigs": [{"logType": t} for t in ("ADMIN_READ", "DATA_READ", "DATA_WRITE")],
                    }
                ],
                "etag": "BwBench=",
                "version": 3,
            }
        )
    )
    (root / "roles").mkdir(exist_ok=True)
    (root / "roles" / "bench.json").write_text(
        json.dumps(
            {
                "name": "roles/bench.agent",
                "title": "Bench",
                "stage": "GA",
                "includedPermissions": sorted(
                    {c[2] for c in CALLS} | {"compute.instances.delete", "storage.objects.delete"}
                ),
            }
        )
    )
    marker.write_text(str(entries))
    return root


PARSE = """
import sys
from pathlib import Path
from auditor.connectors.gcp import audit_logs as gcp_logs
files, _ = gcp_logs.find_log_files([Path(sys.argv[1])])
partial = gcp_logs.scan(files, gcp_logs.ScanOptions("", "~", None), int(sys.argv[2]))
read = sum(scope.events for scope in partial.stats("gcp", "bench").scopes.values())
assert read == int(sys.argv[3]), read
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", type=int, nargs="+", help="entry counts, e.g. 1000000")
    parser.add_argument("--workdir", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    print(f"cpu count: {workers}, python {sys.version.split()[0]}")
    print(f"{'entries':>10} {'run':<28} {'seconds':>8} {'entries/s':>10} {'peak RSS (tree)':>16}")
    for entries in args.entries:
        root = generate(args.workdir / f"gcp-entries-{entries}", entries)
        logs = root / "cloudaudit.googleapis.com"
        size = sum(p.stat().st_size for p in logs.rglob("*.json"))
        runs = [
            ("parse, 1 worker", [sys.executable, "-c", PARSE, str(logs), "1", str(entries)]),
            (f"parse, {workers} workers", [sys.executable, "-c", PARSE, str(logs), str(workers), str(entries)]),
            (
                "auditor audit --gcp-dir",
                [
                    sys.executable,
                    "-m",
                    "auditor",
                    "audit",
                    "--gcp-dir",
                    str(root),
                    "--all-identities",
                    "--out",
                    str(root.parent / f"{root.name}-out"),
                    "-q",
                ],
            ),
        ]
        for label, command in runs:
            elapsed, peak = run_command(command)
            print(f"{entries:>10,} {label:<28} {elapsed:>8.1f} {entries / elapsed:>10,.0f} {peak / 2**20:>13,.0f} MiB")
        print(f"({size / 2**20:,.0f} MiB of NDJSON in {sum(1 for _ in logs.rglob('*.json')):,} files)")


if __name__ == "__main__":
    main()
