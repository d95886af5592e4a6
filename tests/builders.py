"""Builders for small, real-shaped AWS inputs (authorization details, CloudTrail files) in tests."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(actions: str | list[str], resources: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}


def deny(actions: str | list[str], resources: str | list[str] = "*", **extra: Any) -> dict[str, Any]:
    return {"Effect": "Deny", "Action": actions, "Resource": resources, **extra}


def role_arn(name: str, path: str = "/") -> str:
    return f"arn:aws:iam::{ACCOUNT}:role{path}{name}"


def role(
    name: str,
    inline: dict[str, dict[str, Any]] | None = None,
    managed: Sequence[str] = (),
    boundary: str | None = None,
    tags: dict[str, str] | None = None,
    path: str = "/",
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "Path": path,
        "RoleName": name,
        "RoleId": "AROA" + name.upper().replace("-", "")[:17].ljust(17, "X"),
        "Arn": role_arn(name, path),
        "CreateDate": "2025-01-01T00:00:00+00:00",
        "AssumeRolePolicyDocument": policy(
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ),
        "InstanceProfileList": [],
        "RolePolicyList": [{"PolicyName": k, "PolicyDocument": v} for k, v in (inline or {}).items()],
        "AttachedManagedPolicies": [{"PolicyName": a.rsplit("/", 1)[-1], "PolicyArn": a} for a in managed],
        "Tags": [{"Key": k, "Value": v} for k, v in (tags if tags is not None else {"agent": "true"}).items()],
        "RoleLastUsed": {},
    }
    if boundary:
        entry["PermissionsBoundary"] = {"PermissionsBoundaryType": "Policy", "PermissionsBoundaryArn": boundary}
    return entry


def managed_policy(name: str, document: dict[str, Any], aws: bool = False) -> dict[str, Any]:
    arn = f"arn:aws:iam::aws:policy/{name}" if aws else f"arn:aws:iam::{ACCOUNT}:policy/{name}"
    return {
        "PolicyName": name,
        "PolicyId": "ANPA" + name.upper()[:17].ljust(17, "X"),
        "Arn": arn,
        "Path": "/",
        "DefaultVersionId": "v1",
        "AttachmentCount": 1,
        "PermissionsBoundaryUsageCount": 0,
        "IsAttachable": True,
        "CreateDate": "2025-01-01T00:00:00+00:00",
        "UpdateDate": "2025-01-01T00:00:00+00:00",
        "PolicyVersionList": [
            {
                "Document": document,
                "VersionId": "v1",
                "IsDefaultVersion": True,
                "CreateDate": "2025-01-01T00:00:00+00:00",
            }
        ],
    }


def auth_details(
    roles: Iterable[dict[str, Any]],
    policies: Iterable[dict[str, Any]] = (),
    users: Iterable[dict[str, Any]] = (),
    groups: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "UserDetailList": list(users),
        "GroupDetailList": list(groups),
        "RoleDetailList": list(roles),
        "Policies": list(policies),
    }


def event(
    identity_arn: str,
    source: str,
    name: str,
    when: str,
    error: str | None = None,
    resources: Sequence[str] = (),
    request: dict[str, Any] | None = None,
    read_only: bool = True,
    event_type: str = "AwsApiCall",
) -> dict[str, Any]:
    role_name = identity_arn.rsplit("/", 1)[-1]
    record: dict[str, Any] = {
        "eventVersion": "1.09",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:session",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/session",
            "accountId": ACCOUNT,
            "accessKeyId": "ASIAEXAMPLEEXAMPLE",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLE",
                    "arn": identity_arn,
                    "accountId": ACCOUNT,
                    "userName": role_name,
                },
                "attributes": {"creationDate": when, "mfaAuthenticated": "false"},
            },
        },
        "eventTime": when,
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "10.0.0.1",
        "userAgent": "Boto3/1.34.0",
        "requestParameters": request,
        "responseElements": None,
        "requestID": "req",
        "eventID": "evt",
        "readOnly": read_only,
        "eventType": event_type,
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    if error:
        record["errorCode"] = error
        record["errorMessage"] = "error"
    if resources:
        record["resources"] = [{"accountId": ACCOUNT, "type": "AWS::Unknown", "ARN": r} for r in resources]
    return record


def trail_file(
    root: Path, records: list[dict[str, Any]], day: str = "2026/11/20", name: str = "a", region: str = "us-east-1"
) -> Path:
    folder = root / "AWSLogs" / ACCOUNT / "CloudTrail" / region / day
    folder.mkdir(parents=True, exist_ok=True)
    stamp = day.replace("/", "") + "T0000Z"
    path = folder / f"{ACCOUNT}_CloudTrail_{region}_{stamp}_{name.ljust(16, 'x')[:16]}.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    return path


def snapshot(
    root: Path, auth: dict[str, Any], records_by_day: dict[str, list[dict[str, Any]]], data_events: bool = True
) -> Path:
    """A --aws-dir folder: authorization details, event selectors and one trail file per day."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "authorization-details.json").write_text(json.dumps(auth))
    resources = (
        [
            {"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]},
            {"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws:dynamodb"]},
            {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]},
        ]
        if data_events
        else []
    )
    (root / "event-selectors.json").write_text(
        json.dumps(
            {
                "TrailARN": f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/t",
                "EventSelectors": [
                    {
                        "ReadWriteType": "All",
                        "IncludeManagementEvents": True,
                        "DataResources": resources,
                        "ExcludeManagementEventSources": [],
                    }
                ],
            }
        )
    )
    for day, records in records_by_day.items():
        trail_file(root, records, day=day)
    return root
