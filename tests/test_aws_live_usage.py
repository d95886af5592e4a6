"""Live collection without a trail bucket (LookupEvents), throttling, and one-line errors."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aws_live_support import Edge, aws_environment, client, moto_url, reset_moto, start_edge
from conftest import audit
from typer.testing import CliRunner

from auditor import cli
from auditor.connectors.aws import snapshot as snapshot
from auditor.connectors.aws.athena import AthenaTable
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.aws.live import AdvisorScope, CollectRequest, LiveOptions, collect_snapshot
from auditor.connectors.aws.session import Endpoints
from auditor.errors import InputError
from auditor.selection import AgentSelector
from builders import allow, auth_details, event, policy, role, role_arn

UNTIL = datetime(2026, 11, 21, tzinfo=UTC)
BOT = role_arn("bot")
CALLER = "arn:aws:sts::123456789012:user/moto"
REGIONS = ["eu-central-1", "us-east-1", "us-west-2"]  # what the account's ec2:DescribeRegions answers


def _events() -> list[dict[str, Any]]:
    """Management events of the bot on every day of the window (what LookupEvents returns)."""
    out = []
    for day in range(7):
        when = (UNTIL - timedelta(days=day, hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out += [
            event(BOT, "dynamodb.amazonaws.com", "DescribeTable", when),
            event(BOT, "sqs.amazonaws.com", "ListQueues", when),
            event(BOT, "glue.amazonaws.com", "CreateTable", when, error="AccessDeniedException", read_only=False),
        ]
    for index, item in enumerate(out):
        item["eventID"] = f"00000000-0000-4000-8000-{index:012d}"
    return out


@pytest.fixture(scope="module")
def env() -> Any:
    with aws_environment(managed_policies=False):
        reset_moto()
        iam = client("iam")
        iam.create_role(
            RoleName="bot",
            AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
            Tags=[{"Key": "agent", "Value": "true"}],
        )
        grant = policy(allow(["dynamodb:*", "sqs:ListQueues", "glue:CreateTable"]))
        iam.put_role_policy(RoleName="bot", PolicyName="p", PolicyDocument=json.dumps(grant))
        edge = start_edge(Edge(lookup_events=_events(), regions=REGIONS))
        yield SimpleNamespace(edge=edge)


def _request() -> CollectRequest:
    return CollectRequest(days=7, until=UNTIL, selector=AgentSelector())


@pytest.mark.slow
def test_lookup_events_when_the_account_has_no_trail_bucket_with_throttling(env: Any, tmp_path: Path) -> None:
    env.edge.throttle_first |= {"LookupEvents", "GetAccountAuthorizationDetails"}
    options = LiveOptions(
        endpoints=(moto_url(), f"cloudtrail={env.edge.url}", f"iam={env.edge.url}", f"ec2={env.edge.url}"),
        access_advisor=AdvisorScope.off,
    )
    manifest = collect_snapshot(options, tmp_path / "s", _request())
    usage = manifest["accounts"][0]["usage"]
    assert usage["source"] == "lookup-events" and usage["events"] == 21
    assert usage["regions"] == REGIONS  # every region ec2:DescribeRegions names
    assert usage["retries"] >= 1 and "retried (adaptive retry mode" in usage["detail"]
    assert "no trail delivering to S3" in usage["detail"]
    assert not env.edge.throttle_first  # both throttles were served, and retried past

    result = audit(AwsFiles.from_dir(tmp_path / "s"), days=7, until=UNTIL, now=UNTIL)
    states = {r["action"]: r for r in result.permissions.iter_rows(named=True)}
    assert states["dynamodb:DescribeTable"]["state"] == "used"
    assert states["glue:CreateTable"]["state"] == "denied"
    assert states["dynamodb:GetItem"]["state"] == "unobservable"  # a data event: LookupEvents cannot show it
    assert "lookup-events" in states["dynamodb:GetItem"]["unobservable_reason"]
    assert states["dynamodb:DeleteTable"]["state"] == "unused"  # management write events are all there
    assert any("LookupEvents" in (d or "") for d in result.data.coverage["detail"].to_list())


def _main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["auditor", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.slow
def test_access_denied_is_one_line_naming_the_action_and_the_policy(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.edge.deny.add("GetAccountAuthorizationDetails")
    try:
        code, err = _main(
            monkeypatch,
            capsys,
            "collect",
            "aws",
            "--out",
            str(tmp_path / "s"),
            "--endpoint-url",
            moto_url(),
            "--endpoint-url",
            f"iam={env.edge.url}",
        )
    finally:
        env.edge.deny.clear()
    assert code == 2
    assert err == (
        f"auditor: error: iam:GetAccountAuthorizationDetails denied for {CALLER} "
        "(grant it: see auditor/aws-auditor-policy.json)\n"
    )


@pytest.mark.slow
def test_expired_credentials_are_one_line(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.edge.expire.add("GetAccountAuthorizationDetails")
    try:
        code, err = _main(
            monkeypatch,
            capsys,
            "audit",
            "--aws",
            "--out",
            str(tmp_path / "o"),
            "--endpoint-url",
            moto_url(),
            "--endpoint-url",
            f"iam={env.edge.url}",
        )
    finally:
        env.edge.expire.clear()
    assert code == 2 and err.count("\n") == 1
    assert f"AWS credentials of {CALLER} expired" in err and "aws sso login" in err


@pytest.mark.slow
def test_missing_credentials_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with aws_environment():
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        code, err = _main(monkeypatch, capsys, "collect", "aws", "--out", str(tmp_path), "--endpoint-url", moto_url())
    assert code == 2
    assert err.startswith("auditor: error: no AWS credentials found (") and err.count("\n") == 1


def test_live_only_options_need_aws(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.app, ["audit", "--snapshot", str(tmp_path), "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, InputError) and "need --aws" in str(result.exception)


def test_endpoint_overrides_and_athena_table_names() -> None:
    endpoints = Endpoints.parse(["http://localhost:5000", "iam=http://localhost:6000"])
    assert endpoints.url("iam") == "http://localhost:6000" and endpoints.url("s3") == "http://localhost:5000"
    assert AthenaTable.parse("cloudtrail_db.logs").sql == '"cloudtrail_db"."logs"'
    for bad in ("logs", "db.logs; DROP TABLE x", 'db."logs"'):
        with pytest.raises(InputError):
            AthenaTable.parse(bad)


def test_a_snapshot_folder_is_new_empty_or_a_finished_snapshot(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and not an auditor snapshot"):
        snapshot.prepare(tmp_path)
    folder = tmp_path / "interrupted"
    snapshot.prepare(folder)  # a collection that started and never finished
    (folder / "authorization-details-123456789012.json").write_text(json.dumps(auth_details([role("bot")])))
    with pytest.raises(InputError, match="did not finish"):
        audit(AwsFiles.from_dir(folder), days=7, until=UNTIL, now=UNTIL)
    snapshot.prepare(folder)  # a rerun may reuse it
