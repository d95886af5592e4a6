"""A whole organization: accounts in parallel, one whose audit role is missing, an organization trail,
a corrupt and an undecryptable log object; and the auditor passes its own audit.

Organization (moto): the management account (the caller) and three members. ``alpha`` and ``beta``
have the ``auditor-readonly`` role and an agent role ``worker``; ``gamma`` lacks the audit role, so
STS refuses it (the test edge answers as AWS does). The organization trail in the management
account delivers ``AWSLogs/<o-id>/<account>/CloudTrail/...`` to one bucket.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_live_support import (
    Edge,
    aws_environment,
    client,
    member_session,
    moto_url,
    reset_moto,
    set_athena_results,
    start_edge,
)
from conftest import RULES, audit

from auditor import aws_policy
from auditor.catalog import aws_catalog
from auditor.connectors.aws.actions import EventActionMapper
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.aws.live import AdvisorScope, CollectRequest, LiveOptions, UsageSource, collect_snapshot
from auditor.selection import AgentSelector
from builders import allow, event, policy

pytestmark = pytest.mark.slow  # every test here talks to moto

UNTIL = datetime(2026, 11, 21, tzinfo=UTC)
DAYS = 5
BUCKET = "org-trail-logs"
AUDIT_ROLE = "auditor-readonly"
POLICY = json.loads((Path(__file__).parents[1] / "auditor" / "aws-auditor-policy.json").read_text())
TRUST = json.dumps(
    policy({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"})
)


def _member_event(account: str, name: str, when: str) -> dict[str, Any]:
    record = event(f"arn:aws:iam::{account}:role/worker", "dynamodb.amazonaws.com", name, when)
    identity = record["userIdentity"]
    identity["accountId"] = identity["sessionContext"]["sessionIssuer"]["accountId"] = account
    identity["arn"] = f"arn:aws:sts::{account}:assumed-role/worker/session"
    record["recipientAccountId"] = account
    return record


def _log_key(org: str, account: str, day: datetime, suffix: str) -> str:
    return (
        f"AWSLogs/{org}/{account}/CloudTrail/us-east-1/{day:%Y/%m/%d}/"
        f"{account}_CloudTrail_us-east-1_{day:%Y%m%d}T1205Z_{suffix.ljust(16, 'x')[:16]}.json.gz"
    )


@pytest.fixture(scope="module")
def org() -> Any:
    with aws_environment(managed_policies=False):  # no AWS managed policy is attached here
        reset_moto()
        organizations = client("organizations")
        org_id = organizations.create_organization(FeatureSet="ALL")["Organization"]["Id"]
        members = {
            name: organizations.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"][
                "AccountId"
            ]
            for name in ("alpha", "beta", "gamma")
        }
        for name, account in members.items():
            iam = member_session(account).client("iam", endpoint_url=moto_url())
            if name != "gamma":
                iam.create_role(RoleName=AUDIT_ROLE, AssumeRolePolicyDocument=TRUST)
            iam.create_role(RoleName="worker", AssumeRolePolicyDocument=TRUST, Tags=[{"Key": "agent", "Value": "1"}])
            iam.put_role_policy(
                RoleName="worker", PolicyName="p", PolicyDocument=json.dumps(policy(allow("dynamodb:*")))
            )
        s3 = client("s3")
        s3.create_bucket(Bucket=BUCKET)
        corrupt = locked = ""
        for name in ("alpha", "beta"):
            account = members[name]
            for offset in range(DAYS + 1):
                day = UNTIL - timedelta(days=offset, hours=6)
                records = [_member_event(account, "DescribeTable", day.strftime("%Y-%m-%dT%H:%M:%SZ"))]
                body = gzip.compress(json.dumps({"Records": records}).encode())
                s3.put_object(Bucket=BUCKET, Key=_log_key(org_id, account, day, "ok"), Body=body)
            day = UNTIL - timedelta(days=1, hours=6)
            if name == "alpha":
                corrupt = _log_key(org_id, account, day, "corrupt")
                s3.put_object(Bucket=BUCKET, Key=corrupt, Body=b"\x1f\x8b\x08\x00 not really gzip")
            else:
                locked = _log_key(org_id, account, day, "kms")
                s3.put_object(Bucket=BUCKET, Key=locked, Body=gzip.compress(b'{"Records": []}'))
        trail = client("cloudtrail")
        trail.create_trail(Name="org-trail", S3BucketName=BUCKET, IsMultiRegionTrail=True, IsOrganizationTrail=True)
        trail.put_event_selectors(
            TrailName="org-trail", EventSelectors=[{"ReadWriteType": "All", "IncludeManagementEvents": True}]
        )
        edge = start_edge(Edge(kms_locked={locked}, regions=["eu-west-1", "us-east-1"]))
        worker = f"arn:aws:iam::{members['alpha']}:role/worker"
        edge.advisor[worker] = [
            {"ServiceName": "Amazon DynamoDB", "ServiceNamespace": "dynamodb", "TotalAuthenticatedEntities": 0}
        ]
        yield SimpleNamespace(org_id=org_id, members=members, edge=edge, corrupt=corrupt, locked=locked)


def _options(edge: Edge, **kw: Any) -> LiveOptions:
    services = ("iam", "sts", "s3", "cloudtrail", "athena", "ec2")
    return LiveOptions(
        endpoints=(moto_url(), *(f"{s}={edge.url}" for s in services)),
        org=True,
        assume_role=AUDIT_ROLE,
        **({"regions": ("us-east-1",)} | kw),
    )


def _request() -> CollectRequest:
    return CollectRequest(days=DAYS, until=UNTIL, selector=AgentSelector())


@pytest.fixture(scope="module")
def collected(org: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One organization collection, recording every API call the connector makes."""
    calls: list[tuple[str, str, dict[str, Any]]] = []
    folder = tmp_path_factory.mktemp("org")
    manifest = collect_snapshot(_options(org.edge, session_hook=_recorder(calls)), folder, _request())
    return SimpleNamespace(folder=folder, manifest=manifest, calls=calls)


def test_organization_collects_every_account_and_reports_the_one_that_failed(org: Any, collected: Any) -> None:
    manifest, tmp_path = collected.manifest, collected.folder
    status = {a["account"]: a for a in manifest["accounts"]}
    alpha, beta, gamma = (org.members[n] for n in ("alpha", "beta", "gamma"))
    assert set(status) == {"123456789012", alpha, beta, gamma}
    assert status[gamma]["status"] == "failed"
    assert status[gamma]["error"] == (
        f"sts:AssumeRole denied for arn:aws:sts::123456789012:user/moto "
        f"(assuming arn:aws:iam::{gamma}:role/{AUDIT_ROLE})"
    )
    assert status[alpha]["status"] == "complete" and status[beta]["status"] == "partial"  # beta: the KMS object
    assert status[alpha]["principal"] == f"arn:aws:sts::{alpha}:assumed-role/{AUDIT_ROLE}/auditor"
    assert status[alpha]["usage"]["prefix"] == f"AWSLogs/{org.org_id}/{alpha}/"
    assert status["123456789012"]["usage"]["source"] == "lookup-events"  # no logs of its own under the org trail
    reasons = {g["reason"] for g in manifest["gaps"]}
    assert any(r.startswith("1 object(s) not downloaded: AccessDenied") and "kms:Decrypt" in r for r in reasons)
    assert any("not collected: sts:AssumeRole denied" in r and "aws-auditor-policy.json" in r for r in reasons)
    assert (tmp_path / f"authorization-details-{alpha}.json").is_file()
    assert not (tmp_path / f"authorization-details-{gamma}.json").exists()

    result = audit(AwsFiles.from_dir(tmp_path), days=DAYS, until=UNTIL, now=UNTIL)
    used = {
        (r["account"], r["action"])
        for r in result.permissions.filter(result.permissions["state"] == "used").iter_rows(named=True)
    }
    assert {(alpha, "dynamodb:DescribeTable"), (beta, "dynamodb:DescribeTable")} <= used
    gaps = result.data.gaps.to_dicts()
    assert any(org.corrupt.rsplit("/", 1)[-1] in g["scope"] and "corrupt" in g["reason"] for g in gaps)
    assert any(g["account"] == gamma and g["severity"] == "error" for g in gaps)
    assert sorted(result.data.identities.filter(result.data.identities["is_agent"])["account"].to_list()) == sorted(
        [alpha, beta]
    )


def _recorder(calls: list[tuple[str, str, dict[str, Any]]]) -> Any:
    def hook(session: Any) -> None:
        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            calls.append((model.service_model.endpoint_prefix, model.name, params))

        session.events.register("before-parameter-build", record)

    return hook


def _resource(service: str, params: dict[str, Any]) -> str:
    if service == "s3" and "Key" in params:
        return f"arn:aws:s3:::{params['Bucket']}/{params['Key']}"
    if service == "s3":
        return f"arn:aws:s3:::{params['Bucket']}"
    if service == "sts" and "RoleArn" in params:
        return params["RoleArn"]
    return "*"


def test_the_auditor_passes_its_own_audit(org: Any, collected: Any, tmp_path: Path) -> None:
    """Every API call the connector makes, in every usage mode, is allowed by the shipped policy."""
    calls = list(collected.calls)  # the trail-bucket mode
    hook = _recorder(calls)
    alpha = (org.members["alpha"],)
    # every region here, so LookupEvents lists them (ec2:DescribeRegions)
    lookup = _options(org.edge, session_hook=hook, usage=UsageSource.lookup_events, accounts=alpha, regions=())
    collect_snapshot(lookup, tmp_path / "lookup", _request())
    set_athena_results([])
    athena = _options(
        org.edge,
        session_hook=hook,
        accounts=alpha,
        athena_table="cloudtrail_db.cloudtrail_logs",
        athena_output="s3://aws-athena-query-results-123456789012-us-east-1/",
        access_advisor=AdvisorScope.all,
    )
    collect_snapshot(athena, tmp_path / "athena", _request())
    mapper = EventActionMapper.from_rules(RULES, aws_catalog())
    checked: set[str] = set()
    for service, operation, params in calls:
        source = f"{service}.amazonaws.com"
        mapping = (
            mapper.map_with_request(source, operation, params)
            if mapper.needs_request(source, operation)
            else mapper.map(source, operation)
        )
        assert mapping.status != "unmapped", (service, operation, mapping.reason)
        for action in mapping.actions:
            assert aws_policy.allows([POLICY], action, _resource(service, params)), (action, params)
            checked.add(action)
    assert checked >= {
        "iam:GetAccountAuthorizationDetails",
        "iam:GenerateServiceLastAccessedDetails",
        "iam:GetServiceLastAccessedDetails",
        "organizations:ListAccounts",
        "sts:AssumeRole",
        "cloudtrail:DescribeTrails",
        "cloudtrail:GetEventSelectors",
        "cloudtrail:LookupEvents",
        "s3:GetBucketLocation",
        "s3:ListBucket",
        "s3:GetObject",
        "athena:GetTableMetadata",
        "athena:StartQueryExecution",
        "athena:GetQueryExecution",
        "athena:GetQueryResults",
        "ec2:DescribeRegions",
    }
    # Read-only: nothing but reads, plus Athena's query start (Athena then writes its own result file) and
    # sts:AssumeRole (the catalog calls it Write: it mints temporary credentials, it changes no resource).
    writes = {a for a in checked if not aws_catalog().is_read(a)} - {"athena:StartQueryExecution", "sts:AssumeRole"}
    assert writes == set(), writes
    # Minimal: every action the policy names is used, except what Athena does with the caller's rights.
    granted = {
        action
        for statement in POLICY["Statement"]
        if "OnYourBehalf" not in statement["Sid"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert granted == checked
