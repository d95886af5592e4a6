"""Generated benchmark inputs in the real layouts: an authorization-details export of N agent roles
holding a given policy, and CloudTrail files (``AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<mm>/
<dd>/*.json.gz`` of 1,000 records) with realistic record shapes. Deterministic for a seed; reused
when already complete."""

from __future__ import annotations

import gzip
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ACCOUNT = "210987654321"
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
WIDE = ["dynamodb:*", "s3:*", "sqs:*", "lambda:*", "ec2:Describe*", "kms:*", "cloudformation:*", "logs:*"]
EVENTS_PER_FILE = 1000
DAYS = 30
END = datetime(2026, 11, 20, tzinfo=UTC)


def roles(count: int) -> list[str]:
    return [f"bench-agent-{i:04d}" for i in range(count)]


def _record(rng: random.Random, when: datetime, names: list[str]) -> dict[str, Any]:
    index = rng.randrange(len(names))
    role = names[index]
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
    stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    record = {
        "eventVersion": "1.10",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": f"AROABENCH{index:08d}:s",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/session-{rng.randrange(10**6)}",
            "accountId": ACCOUNT,
            "accessKeyId": f"ASIABENCH{rng.randrange(10**8):08d}",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": f"AROABENCH{index:08d}",
                    "arn": f"arn:aws:iam::{ACCOUNT}:role/agents/{role}",
                    "accountId": ACCOUNT,
                    "userName": role,
                },
                "attributes": {"creationDate": stamp, "mfaAuthenticated": "false"},
            },
        },
        "eventTime": stamp,
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


def _auth_details(names: list[str], admin: bool) -> dict[str, Any]:
    administrator = "arn:aws:iam::aws:policy/AdministratorAccess"
    statement = {"Effect": "Allow", "Action": WIDE, "Resource": "*"}
    entries = [
        {
            "Path": "/agents/",
            "RoleName": role,
            "RoleId": f"AROABENCH{i:08d}",
            "Arn": f"arn:aws:iam::{ACCOUNT}:role/agents/{role}",
            "CreateDate": "2025-01-01T00:00:00+00:00",
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []},
            "InstanceProfileList": [],
            "RolePolicyList": [] if admin else [{"PolicyName": "p", "PolicyDocument": {"Statement": [statement]}}],
            "AttachedManagedPolicies": [{"PolicyName": "AdministratorAccess", "PolicyArn": administrator}]
            if admin
            else [],
            "Tags": [{"Key": "agent", "Value": "true"}],
            "RoleLastUsed": {},
        }
        for i, role in enumerate(names)
    ]
    policies = (
        [
            {
                "PolicyName": "AdministratorAccess",
                "Arn": administrator,
                "Path": "/",
                "DefaultVersionId": "v1",
                "PolicyVersionList": [
                    {
                        "Document": {
                            "Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                        },
                        "VersionId": "v1",
                        "IsDefaultVersion": True,
                    }
                ],
            }
        ]
        if admin
        else []
    )
    return {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": entries, "Policies": policies}


def _selectors() -> dict[str, Any]:
    return {
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


def generate(root: Path, events: int, identities: int = 50, admin: bool = False, seed: int = 7) -> Path:
    """Write ``events`` events of ``identities`` agent roles over 30 days into ``root``."""
    marker = root / ".complete"
    label = f"{events}/{identities}/{admin}"
    if marker.exists() and marker.read_text() == label:
        return root
    rng = random.Random(seed)
    names = roles(identities)
    root.mkdir(parents=True, exist_ok=True)
    (root / "authorization-details.json").write_text(json.dumps(_auth_details(names, admin)))
    (root / "event-selectors.json").write_text(json.dumps(_selectors()))
    files = max(1, events // EVENTS_PER_FILE)
    step = timedelta(days=DAYS) / files
    for index in range(files):
        delivered = END - timedelta(days=DAYS) + step * (index + 1)
        count = events // files + (1 if index < events % files else 0)
        records = [_record(rng, delivered - timedelta(seconds=rng.randrange(900)), names) for _ in range(count)]
        folder = root / "AWSLogs" / ACCOUNT / "CloudTrail" / "us-east-1" / delivered.strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{ACCOUNT}_CloudTrail_us-east-1_{delivered.strftime('%Y%m%dT%H%MZ')}_{index:016d}.json.gz"
        with gzip.open(folder / name, "wb", compresslevel=6) as handle:
            handle.write(json.dumps({"Records": records}, separators=(",", ":")).encode())
        if index % 500 == 0:
            print(f"  generated {index * EVENTS_PER_FILE:,}/{events:,} events", file=sys.stderr, flush=True)
    marker.write_text(label)
    return root
