"""The CI gate cannot be flipped by data: future-dated records, impossible times, one window per cloud.

A 31-day snapshot of an admin agent that uses one action every day; the gate ``--fail-on critical``
must keep failing whatever one hostile record adds.
"""

import sys
from datetime import UTC, datetime, timedelta

import pytest
from conftest import FakeSource, audit, grant, identity, use

from auditor.catalog import Catalog
from auditor.cli import main
from auditor.connectors.aws.files import AwsFiles
from builders import allow, auth_details, event, policy, role, role_arn, snapshot, trail_file

AGENT = role_arn("agent")
NOW = datetime(2026, 11, 21, tzinfo=UTC)
DAYS = [(datetime(2026, 10, 21, tzinfo=UTC) + timedelta(days=i)) for i in range(31)]


def _snapshot(tmp_path):
    auth = auth_details([role("agent", inline={"admin": policy(allow("*"))})])
    records = {
        d.strftime("%Y/%m/%d"): [event(AGENT, "dynamodb.amazonaws.com", "ListTables", d.strftime("%Y-%m-%dT12:00:00Z"))]
        for d in DAYS
    }
    return snapshot(tmp_path / "in", auth, records)


def _cli(args, capsys) -> tuple[int, str]:
    """``auditor ARGS`` in this process, through the real entry point (one-line errors, exit codes)."""
    with pytest.raises(SystemExit) as stop, pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["auditor", *args])
        main()
    return int(stop.value.code or 0), capsys.readouterr().err


def _critical(result) -> int:
    return result.findings.filter(result.findings["severity"] == "critical").height


def test_a_record_dated_9999_does_not_move_the_window_or_silence_the_gate(tmp_path, capsys):
    root = _snapshot(tmp_path)
    clean = audit(AwsFiles.from_dir(root), now=NOW)
    future = event(AGENT, "sts.amazonaws.com", "GetCallerIdentity", "9999-12-31T23:59:59Z")
    trail_file(root, [future], day="2026/11/20", name="future")
    hostile = audit(AwsFiles.from_dir(root), now=NOW)
    assert hostile.window("aws").end == clean.window("aws").end == datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert _critical(hostile) == _critical(clean) > 0
    used = hostile.permissions.filter(hostile.permissions["state"] == "used")["action"].to_list()
    assert used == ["dynamodb:ListTables"]
    (problem,) = [g for g in hostile.data.gaps.iter_rows(named=True) if "after" in g["reason"]]
    assert "9999-12-31T23:59:59Z" in problem["scope"] and problem["count"] == 1
    args = ["audit", "--aws-dir", str(root), "--fail-on", "critical", "-q"]
    assert _cli([*args, "--out", str(tmp_path / "o1")], capsys)[0] == 1
    code, err = _cli([*args, "--out", str(tmp_path / "o2"), "--strict"], capsys)
    assert code == 2 and "dated after" in err and len(err.strip().splitlines()) == 1


def test_a_future_day_folder_cannot_become_the_window(tmp_path):
    root = _snapshot(tmp_path)
    trail_file(root, [event(AGENT, "sts.amazonaws.com", "GetCallerIdentity", "2099-01-01T00:00:00Z")], day="2099/01/01")
    result = audit(AwsFiles.from_dir(root), now=NOW)
    assert result.window("aws").end == datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.mark.parametrize("when", ["2026-13-45T99:99:99Z", "2026-11-20T12:00:00X", "2026-11-20T12:60:00Z", "", "soon"])
def test_an_impossible_time_is_one_counted_bad_record(tmp_path, when):
    root = _snapshot(tmp_path)
    bad = event(AGENT, "iam.amazonaws.com", "DeleteRole", when)
    good = event(AGENT, "s3.amazonaws.com", "ListBuckets", "2026-11-20T10:00:00Z")
    trail_file(root, [bad, good], day="2026/11/20", name="mixed")
    result = audit(AwsFiles.from_dir(root), now=NOW)
    states = dict(result.permissions.select("action", "state").iter_rows())
    assert states["s3:ListAllMyBuckets"] == "used" and states["iam:DeleteRole"] == "unused"
    (gap,) = [g for g in result.data.gaps.iter_rows(named=True) if "malformed" in g["reason"]]
    assert gap["count"] == 1 and "record 0" in gap["reason"]


def test_each_cloud_has_its_own_window():
    sa = "bot@p1.iam.gserviceaccount.com"
    aws = FakeSource([identity(AGENT)], [grant(AGENT, "s3:GetObject")], [use(AGENT, "s3:GetObject")])
    gcp = FakeSource(
        [identity(sa, account="p1", provider="gcp", kind="service_account")],
        [grant(sa, "storage.objects.get", "projects/p1", account="p1", provider="gcp", source_kind="binding")],
        newest=datetime(2026, 11, 10, tzinfo=UTC),
        provider="gcp",
    )
    gcp.catalog_of = Catalog("gcp", {"storage.objects.get": "Read"}, "t", service_separator=".")
    result = audit(aws, gcp)
    assert result.window("aws").end == datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert result.window("gcp").end == datetime(2026, 11, 10, tzinfo=UTC)
    assert "fake newest event" in result.window("gcp").basis


def test_until_before_year_one_is_a_usage_error(tmp_path, capsys):
    root = _snapshot(tmp_path)
    code, err = _cli(["audit", "--aws-dir", str(root), "--until", "0001-01-01", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.startswith("auditor: error: a 30-day window cannot end at 0001-01-01")
