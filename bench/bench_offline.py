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
import gzip
import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from procmem import run_command

ACCOUNT = "210987654321"
ROLES = [f"bench-agent-{i:02d}" for i in range(50)]
CALLS = [
    ("dynamodb.amazonaws.com", "GetItem", True, "Data"),
    ("dynamodb.amazonaws.com", "Query", True, "Data"),
    ("dynamodb.amazonaws.com", "PutItem", False, "Data"),
    ("dynamodb.amazonaws.com", "DescribeTable", True, "Management"),
    ("s3.amazonaws.com", "GetObject", True, "Data"),
    ("s3.amazonaws.com", "PutObject", False, "Data"),
    ("s3.amazonaws.com", "ListObjects", True, "Data"),
    ("sqs.amazonaws.com", "GetQueueAttributes", True, "Management"),
    ("lambda.amazonaws.com", "GetFunction20150331v2", True, "Management"),
    ("ec2.amazonaws.com", "DescribeInstances", True, "Management"),
    ("sts.amazonaws.com", "GetCallerIdentity", True, "Management"),
    ("kms.amazonaws.com", "Decrypt", True, "Management"),
    ("cloudformation.amazonaws.com", "DescribeStacks", True, "Management"),
    ("logs.amazonaws.com", "PutLogEvents", False, "Management"),
]
EVENTS_PER_FILE = 1000
DAYS = 30


def _record(rng: random.Random, when: datetime) -> dict:
    role = rng.choice(ROLES)
    source, name, read_only, category = rng.choice(CALLS)
    resources = None
    if source.startswith("dynamodb") and category == "Data":
        table = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/T{rng.randrange(5)}"
        resources = [{"accountId": ACCOUNT, "type": "AWS::DynamoDB::Table", "ARN": table}]
    elif source.startswith("s3"):
        bucket = f"bench-bucket-{rng.randrange(5)}"
        resources = [
            {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/k/{rng.randrange(10**6)}.json"},
            {"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"},
        ]
    record = {
        "eventVersion": "1.10",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": f"AROABENCH{ROLES.index(role):08d}:s",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/session-{rng.randrange(10**6)}",
            "accountId": ACCOUNT,
            "accessKeyId": f"ASIABENCH{rng.randrange(10**8):08d}",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": f"AROABENCH{ROLES.index(role):08d}",
                    "arn": f"arn:aws:iam::{ACCOUNT}:role/agents/{role}",
                    "accountId": ACCOUNT,
                    "userName": role,
                },
                "attributes": {"creationDate": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "mfaAuthenticated": "false"},
            },
        },
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "10.1.2.3",
        "userAgent": "Boto3/1.34.120 md/Botocore#1.34.120 ua/2.0 os/linux#6.1 md/arch#x86_64 lang/python#3.11.7",
        "requestParameters": {"tableName": "T1", "key": {"id": {"S": "HIDDEN_DUE_TO_SECURITY_REASONS"}}},
        "responseElements": None,
        "requestID": f"{rng.getrandbits(128):032x}",
        "eventID": f"{rng.getrandbits(128):032x}",
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": category == "Management",
        "recipientAccountId": ACCOUNT,
        "eventCategory": category,
        "tlsDetails": {
            "tlsVersion": "TLSv1.3",
            "cipherSuite": "TLS_AES_128_GCM_SHA256",
            "clientProvidedHostHeader": f"{source.split('.')[0]}.us-east-1.amazonaws.com",
        },
    }
    if resources:
        record["resources"] = resources
    if rng.random() < 0.01:
        record["errorCode"] = "AccessDenied"
    return record


def _auth_details() -> dict:
    roles = [
        {
            "Path": "/agents/",
            "RoleName": role,
            "RoleId": f"AROABENCH{i:08d}",
            "Arn": f"arn:aws:iam::{ACCOUNT}:role/agents/{role}",
            "CreateDate": "2025-01-01T00:00:00+00:00",
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []},
            "InstanceProfileList": [],
            "RolePolicyList": [
                {
                    "PolicyName": "p",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Action": [
                                    "dynamodb:*",
                                    "s3:*",
                                    "sqs:*",
                                    "lambda:*",
                                    "ec2:Describe*",
                                    "kms:*",
                                    "cloudformation:*",
                                    "logs:*",
                                ],
                                "Resource": "*",
                            }
                        ],
                    },
                }
            ],
            "AttachedManagedPolicies": [],
            "Tags": [{"Key": "agent", "Value": "true"}],
            "RoleLastUsed": {},
        }
        for i, role in enumerate(ROLES)
    ]
    return {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": roles, "Policies": []}


def generate(root: Path, events: int, seed: int = 7) -> Path:
    """Write ``events`` events over 30 days into ``root`` (reused when already complete)."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == str(events):
        return root
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "authorization-details.json").write_text(json.dumps(_auth_details()))
    (root / "event-selectors.json").write_text(
        json.dumps(
            {
                "EventSelectors": [
                    {
                        "ReadWriteType": "All",
                        "IncludeManagementEvents": True,
                        "ExcludeManagementEventSources": [],
                        "DataResources": [
                            {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]},
                            {"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws:dynamodb"]},
                        ],
                    }
                ]
            }
        )
    )
    end = datetime(2026, 11, 20, tzinfo=UTC)
    files = max(1, events // EVENTS_PER_FILE)
    step = timedelta(days=DAYS) / files
    written = 0
    for index in range(files):
        delivered = end - timedelta(days=DAYS) + step * (index + 1)
        count = events // files + (1 if index < events % files else 0)
        records = [_record(rng, delivered - timedelta(seconds=rng.randrange(900))) for _ in range(count)]
        folder = root / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / delivered.strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{ACCOUNT}_CloudTrail_us-east-1_{delivered.strftime('%Y%m%dT%H%MZ')}_{index:016d}.json.gz"
        with gzip.open(folder / name, "wb", compresslevel=6) as handle:
            handle.write(json.dumps({"Records": records}, separators=(",", ":")).encode())
        written += count
        if index % 500 == 0:
            print(f"  generated {written:,}/{events:,} events", file=sys.stderr, flush=True)
    marker.write_text(str(events))
    return root


def run(root: Path, workers: int | None) -> tuple[float, int]:
    command = [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(root), "--out", str(root / "out"), "-q"]
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
        root = generate(args.workdir / f"events-{events}", events)
        files = sum(1 for _ in (root / "AWSLogs").rglob("*.json.gz"))
        elapsed, peak = run(root, args.workers)
        print(f"{events:>12,} {files:>7,} {elapsed:>8.1f} {events / elapsed:>10,.0f} {peak / 2**20:>13,.0f} MiB")


if __name__ == "__main__":
    main()
