"""Live collection of one account (the demo fixtures' account, seeded into moto): collect then audit.

The trail bucket lives in another region than the client's, holds the generated CloudTrail objects,
and the trail logs S3 object and DynamoDB data events but not Lambda's. Access Advisor answers come
from the test edge in IAM's XML protocol.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_live_support import (
    FIXTURES,
    Edge,
    aws_environment,
    aws_managed_names,
    client,
    moto_url,
    reset_moto,
    seed_iam,
    set_athena_results,
    start_edge,
    upload_logs,
)
from conftest import audit
from typer.testing import CliRunner

from auditor.cli import app
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.aws.live import AdvisorScope, CollectRequest, LiveOptions, collect_snapshot
from auditor.selection import AgentSelector

pytestmark = pytest.mark.slow  # every test here talks to moto

ACCOUNT = "123456789012"
BUCKET = "acme-org-cloudtrail"
UNTIL = datetime(2026, 11, 21, tzinfo=UTC)
DAYS = 7
FIRST_UPLOADED = "2026/11/10"  # older folders are not uploaded; 11/10 .. 11/13 lie outside the window
SUPPORT_BOT = f"arn:aws:iam::{ACCOUNT}:role/agents/support-bot"
ADVISOR = {
    SUPPORT_BOT: [
        {  # action-level data: proves ec2:DescribeInstances (which CloudTrail never shows for this role)
            "ServiceName": "Amazon EC2",
            "ServiceNamespace": "ec2",
            "LastAuthenticated": "2026-11-19T08:00:00Z",
            "LastAuthenticatedEntity": SUPPORT_BOT,
            "LastAuthenticatedRegion": "us-east-1",
            "TotalAuthenticatedEntities": 1,
            "TrackedActionsLastAccessed": [
                {
                    "ActionName": "DescribeInstances",
                    "LastAccessedEntity": SUPPORT_BOT,
                    "LastAccessedRegion": "us-east-1",
                    "LastAccessedTime": "2026-11-19T08:00:00Z",
                },
                {  # before the window: proves nothing
                    "ActionName": "TerminateInstances",
                    "LastAccessedEntity": SUPPORT_BOT,
                    "LastAccessedRegion": "us-east-1",
                    "LastAccessedTime": "2026-09-01T08:00:00Z",
                },
            ],
        },
        {  # service level only (AWS tracks no DynamoDB action): proves no action
            "ServiceName": "Amazon DynamoDB",
            "ServiceNamespace": "dynamodb",
            "LastAuthenticated": "2026-11-20T09:00:00Z",
            "LastAuthenticatedEntity": SUPPORT_BOT,
            "LastAuthenticatedRegion": "us-east-1",
            "TotalAuthenticatedEntities": 1,
        },
        {"ServiceName": "AWS Lambda", "ServiceNamespace": "lambda", "TotalAuthenticatedEntities": 0},
    ]
}


def _request() -> CollectRequest:
    return CollectRequest(days=DAYS, until=UNTIL, selector=AgentSelector())


def _audit(folder: Path) -> Any:
    return audit(AwsFiles.from_dir(folder), days=DAYS, until=UNTIL, now=UNTIL)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    auth = json.loads((FIXTURES / "authorization-details.json").read_text())
    with aws_environment(managed_policies=aws_managed_names(auth)):
        reset_moto()
        seed_iam(client("iam"), auth)
        s3 = client("s3")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        keys = upload_logs(s3, BUCKET, FIXTURES, keep=lambda key: "/".join(key.split("/")[-4:-1]) >= FIRST_UPLOADED)
        trail = client("cloudtrail")
        trail.create_trail(Name="org-trail", S3BucketName=BUCKET, IsMultiRegionTrail=True)
        selectors = json.loads((FIXTURES / "event-selectors.json").read_text())
        trail.put_event_selectors(TrailName="org-trail", EventSelectors=selectors["EventSelectors"])
        edge = start_edge(Edge(advisor=ADVISOR))
        yield SimpleNamespace(
            keys=keys, edge=edge, endpoints=("--endpoint-url", moto_url(), "--endpoint-url", f"iam={edge.url}")
        )


@pytest.fixture(scope="module")
def audited(env: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``audit --aws`` keeping its snapshot, then ``audit --aws-dir`` of that snapshot (default window)."""
    root = tmp_path_factory.mktemp("live")
    snapshot, live, offline = root / "snapshot", root / "live", root / "offline"
    runner = CliRunner()
    args = ["audit", "--aws", *env.endpoints, "--until", "2026-11-21T00:00:00Z", "--days", str(DAYS), "-q"]
    first = runner.invoke(app, [*args, "--snapshot", str(snapshot), "--out", str(live)])
    assert first.exit_code == 0, first.output + repr(first.exception)
    second = runner.invoke(app, ["audit", "--aws-dir", str(snapshot), "--days", str(DAYS), "--out", str(offline), "-q"])
    assert second.exit_code == 0, second.output + repr(second.exception)
    return SimpleNamespace(snapshot=snapshot, live=live, offline=offline)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_live_audit_equals_offline_audit_of_its_snapshot(audited: Any) -> None:
    live, offline = (
        json.loads((audited.live / "report.json").read_text()),
        json.loads((audited.offline / "report.json").read_text()),
    )
    assert live["findings"] and live["identities"]
    for key in ("summary", "identities", "findings", "coverage", "observability", "unmapped", "gaps"):
        assert live[key] == offline[key], key
    # the offline audit keeps the window the snapshot was collected for (only how it was chosen reads differently)
    (basis,) = {live["windows"]["aws"].pop("basis"), offline["windows"]["aws"].pop("basis")} - {
        "--until 2026-11-21T00:00:00Z"
    }
    assert "collected window" in basis
    assert live["windows"] == offline["windows"] and live["windows"]["aws"]["end"] == "2026-11-21T00:00:00Z"
    live_files, offline_files = _tree(audited.live), _tree(audited.offline)
    for files in (live_files, offline_files):  # only the generation times and the window's basis may differ
        files.pop("report.json"), files.pop("report.md"), files.pop(".auditor-run.json")  # run ids, inodes
        files.pop("report.html")  # generation time and window basis, as report.md
        files["report.sarif"] = json.dumps(json.loads(files["report.sarif"])["runs"][0]["results"]).encode()
        files["blocklist.yaml"] = re.sub(rb"(?m)^(generated_at|    basis): .*$", b"", files["blocklist.yaml"])
    assert live_files == offline_files
    assert any(name.startswith("policies/aws/123456789012/") for name in live_files)


def test_only_the_windows_day_folders_are_listed_and_downloaded(env: Any, audited: Any) -> None:
    manifest = json.loads((audited.snapshot / "manifest.json").read_text())
    usage = manifest["accounts"][0]["usage"]
    first, last = (UNTIL - timedelta(days=DAYS)).date(), UNTIL.date() + timedelta(days=1)
    expected = [k for k in env.keys if "/CloudTrail/" in k and first <= date(*map(int, k.split("/")[-4:-1])) <= last]
    assert 0 < len(expected) < len(env.keys)
    assert usage["objects_listed"] == usage["objects_downloaded"] == len(expected)
    assert usage["bucket_region"] == "eu-west-1" and usage["regions"] == ["eu-west-1", "us-east-1"]
    assert sorted(p.relative_to(audited.snapshot).as_posix() for p in (audited.snapshot / "AWSLogs").rglob("*.gz")) == (
        sorted(expected)
    )
    assert manifest["window"] == {"start": "2026-11-14T00:00:00Z", "end": "2026-11-21T00:00:00Z", "days": DAYS}
    assert manifest["gaps"] == [] and manifest["accounts"][0]["status"] == "complete"
    assert {"authorization-details-123456789012.json", "event-selectors-123456789012.json"} <= {
        p.name for p in audited.snapshot.iterdir()
    }


def _used(report: dict[str, Any], name: str) -> dict[str, list[str]]:
    ident = next(i for i in report["identities"] if i["name"] == name)
    return {p["action"]: p["evidence"] for p in ident["used_permissions"]}


def test_access_advisor_proves_only_action_level_use_inside_the_window(audited: Any) -> None:
    report = json.loads((audited.live / "report.json").read_text())
    used = _used(report, "support-bot")
    assert used["ec2:DescribeInstances"] == ["access-advisor"]
    assert "access-advisor" not in used["dynamodb:GetItem"] and "cloudtrail" in used["dynamodb:GetItem"]
    assert "ec2:TerminateInstances" not in used  # accessed before the window
    assert not any(a.startswith("dynamodb:") and "access-advisor" in e for a, e in used.items())
    detail = next(c["detail"] for c in report["coverage"] if "Access Advisor" in c["source"])
    assert "service-level only, proving no action: dynamodb" in detail and "denied ones too" in detail


def test_data_events_the_trail_does_not_log_are_unobservable(audited: Any) -> None:
    rows = {
        r.split(",")[4]: r
        for r in (audited.live / "permissions.csv").read_text().splitlines()
        if r.split(",")[3] == "support-bot"
    }
    assert (
        ",unobservable," in rows["lambda:InvokeFunction"] and "not logged by the trail" in rows["lambda:InvokeFunction"]
    )
    assert ",unused," in rows["dynamodb:DeleteItem"]  # DynamoDB data events are logged: unused is provable


def test_recollecting_into_a_snapshot_reuses_its_objects(env: Any, audited: Any, tmp_path: Path) -> None:
    first = json.loads((audited.snapshot / "manifest.json").read_text())
    shutil.copytree(audited.snapshot, tmp_path / "s")  # refresh a copy: the other tests read the original
    options = LiveOptions(endpoints=(moto_url(),), access_advisor=AdvisorScope.off)
    second = collect_snapshot(options, tmp_path / "s", _request())
    assert first["stats"]["objects_downloaded"] == second["accounts"][0]["usage"]["objects_reused"] > 0
    assert second["stats"]["objects_downloaded"] == 0
    assert not list((tmp_path / "s").glob("access-advisor-*.json"))  # metadata is collected afresh


def _athena_rows(snapshot: Path, start: str, end: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the documented CloudTrail table would aggregate, computed from the downloaded objects."""
    usage: dict[tuple[Any, ...], list[Any]] = {}
    days: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0, "~", ""])
    for path in (snapshot / "AWSLogs").rglob("*.json.gz"):
        for rec in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
            when = rec["eventTime"]
            if not start <= when <= end:
                continue
            day = days[(rec["recipientAccountId"], when[:10])]
            day[0], day[1], day[2] = day[0] + 1, min(day[1], when), max(day[2], when)
            if rec.get("eventType") not in (None, "AwsApiCall", "AwsConsoleAction"):
                continue
            ident = rec.get("userIdentity") or {}
            issuer = (ident.get("sessionContext") or {}).get("sessionIssuer") or {}
            identity = issuer.get("arn") or ident.get("arn")
            key = (identity, rec["recipientAccountId"], rec["eventSource"], rec["eventName"], rec.get("errorCode"))
            entry = usage.setdefault(key, [0, when, when])
            entry[0], entry[1], entry[2] = entry[0] + 1, min(entry[1], when), max(entry[2], when)

    def rows(names: list[str], values: list[list[Any]]) -> dict[str, Any]:
        cells = [[{"VarCharValue": str(v)} if v is not None else {} for v in row] for row in [names, *values]]
        return {"rows": [{"Data": c} for c in cells], "column_info": [{"Name": n, "Type": "varchar"} for n in names]}

    usage_names = [
        "identity",
        "account",
        "event_source",
        "event_name",
        "error_code",
        "calls",
        "first_seen",
        "last_seen",
    ]
    day_names = ["account", "day", "events", "first_seen", "last_seen"]
    return (
        [rows(usage_names, [[*k, *v] for k, v in usage.items()])],
        [rows(day_names, [[a, d, *v] for (a, d), v in days.items()])],
    )


def test_athena_aggregate_proves_what_the_logs_prove(env: Any, audited: Any, tmp_path: Path) -> None:
    usage_result, day_result = _athena_rows(audited.snapshot, "2026-11-14T00:00:00Z", "2026-11-21T00:00:00Z")
    set_athena_results([*usage_result, *day_result])
    options = LiveOptions(
        endpoints=(moto_url(), f"iam={env.edge.url}", f"athena={env.edge.url}"),
        athena_table="cloudtrail_db.cloudtrail_logs",
        athena_output="s3://aws-athena-query-results-123456789012-us-east-1/auditor/",
    )
    manifest = collect_snapshot(options, tmp_path / "athena", _request())
    assert not (tmp_path / "athena" / "AWSLogs").exists()  # nothing downloaded: Athena aggregated
    queries = {q["kind"]: q for q in manifest["athena"]["queries"]}
    assert "GROUP BY 1, 2, 3, 4, 5" in queries["usage"]["sql"]
    assert "\"timestamp\" BETWEEN '2026/11/14' AND '2026/11/22'" in queries["usage"]["sql"]
    assert queries["usage"]["rows"] > 10 and queries["day"]["rows"] >= 7

    athena = _audit(tmp_path / "athena")
    perms = athena.permissions.filter(athena.permissions["state"] == "used")
    from_athena = {(r["name"], r["action"]) for r in perms.iter_rows(named=True) if "athena" in r["evidence"]}
    logs = json.loads((audited.offline / "report.json").read_text())  # the audit of the downloaded logs
    from_logs = {
        (i["name"], p["action"])
        for i in logs["identities"]
        for p in i["used_permissions"]
        if "cloudtrail" in p["evidence"]
    }
    assert from_athena and from_athena <= from_logs
    # Only what needs requestParameters is missing from aggregates: implied iam:PassRole, version-specific S3 actions
    assert {a for _, a in from_logs - from_athena} <= {"iam:PassRole", "s3:GetObjectVersion", "s3:PutObject"}
    assert not any("no events for" in r for r in athena.data.observability["reason"].to_list())
