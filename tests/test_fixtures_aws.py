"""Checks on the generated demo AWS account fixtures (fixtures/aws, fixtures/generate_aws.py).

These tests only read the generator's output files; they do not import the auditor.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "fixtures" / "generate_aws.py"
FIXTURES = ROOT / "fixtures" / "aws"
ACCOUNT = "123456789012"
LOG_NAME = re.compile(r"^\d{12}_CloudTrail_[a-z0-9-]+_\d{8}T\d{4}Z_[A-Za-z0-9]{16}\.json\.gz$")
DIGEST_NAME = re.compile(r"^\d{12}_CloudTrail-Digest_[a-z0-9-]+_[\w-]+_[a-z0-9-]+_\d{8}T\d{6}Z\.json\.gz$")
AGENT_ROLES = ["support-bot", "doc-summarizer", "deploy-agent", "invoice-agent", "data-agent"]
WINDOW_START = datetime(2026, 10, 17, tzinfo=UTC)
WINDOW_END = datetime(2026, 11, 21, tzinfo=UTC)


def _run_generators(outs: list[Path], scale: float) -> None:
    """Run the generator once per folder, side by side (separate processes)."""
    runs = [
        subprocess.Popen(
            [sys.executable, str(GENERATOR), "--out", str(out), "--scale", str(scale)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _log_files(root: Path) -> list[Path]:
    return sorted((root / "AWSLogs" / ACCOUNT / "CloudTrail").rglob("*.json.gz"))


@pytest.fixture(scope="module")
def fixtures_dir() -> Path:
    if not (FIXTURES / "authorization-details.json").exists():
        pytest.skip("fixtures/aws has not been generated")
    return FIXTURES


@pytest.fixture(scope="module")
def auth(fixtures_dir: Path) -> dict[str, Any]:
    return json.loads((fixtures_dir / "authorization-details.json").read_text())


@pytest.fixture(scope="module")
def log_records(fixtures_dir: Path) -> dict[Path, list[dict[str, Any]]]:
    return {path: orjson.loads(gzip.decompress(path.read_bytes()))["Records"] for path in _log_files(fixtures_dir)}


def test_regeneration_is_byte_identical(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    _run_generators([first, second], 0.05)
    a, b = _tree(first), _tree(second)
    assert a.keys() == b.keys()
    assert len([k for k in a if k.endswith(".json.gz")]) > 10
    for name in a:
        assert a[name] == b[name], name


def test_log_file_names_and_directories(log_records: dict[Path, list[dict[str, Any]]]) -> None:
    assert log_records
    for path, records in log_records.items():
        assert LOG_NAME.match(path.name), path.name
        account, _, region, stamp, _ = path.name.split("_")
        *_, dir_account, trail_dir, dir_region, yyyy, mm, dd, _ = path.parts
        assert (dir_account, trail_dir, account) == (ACCOUNT, "CloudTrail", ACCOUNT)
        assert dir_region == region
        delivered = datetime.strptime(stamp, "%Y%m%dT%H%MZ").replace(tzinfo=UTC)
        assert (yyyy, mm, dd) == (f"{delivered:%Y}", f"{delivered:%m}", f"{delivered:%d}")
        assert records, path
        allowed_days = {delivered.date(), (delivered - timedelta(hours=1)).date()}
        for rec in records:
            assert rec["awsRegion"] == region
            when = _parse_time(rec["eventTime"])
            # a file holds the previous hour's events, delivered a few minutes after the hour
            assert delivered - timedelta(hours=2) <= when <= delivered, (path.name, rec["eventTime"])
            assert when.date() in allowed_days


def test_digest_files_are_separate(fixtures_dir: Path) -> None:
    digests = sorted((fixtures_dir / "AWSLogs" / ACCOUNT / "CloudTrail-Digest").rglob("*.json.gz"))
    assert 1 <= len(digests) <= 12
    for path in digests:
        assert DIGEST_NAME.match(path.name), path.name
        body = json.loads(gzip.decompress(path.read_bytes()))
        assert "Records" not in body and body["awsAccountId"] == ACCOUNT


def test_authorization_details_consistency(auth: dict[str, Any]) -> None:
    assert list(auth) == ["UserDetailList", "GroupDetailList", "RoleDetailList", "Policies"]
    policies = {p["Arn"]: p for p in auth["Policies"]}
    assert len(policies) == len(auth["Policies"])
    for p in auth["Policies"]:
        defaults = [v for v in p["PolicyVersionList"] if v["IsDefaultVersion"]]
        assert len(defaults) == 1, p["PolicyName"]
        assert defaults[0]["VersionId"] == p["DefaultVersionId"]
    referenced = []
    for entity in [*auth["UserDetailList"], *auth["GroupDetailList"], *auth["RoleDetailList"]]:
        referenced += [a["PolicyArn"] for a in entity["AttachedManagedPolicies"]]
        if "PermissionsBoundary" in entity:
            assert entity["PermissionsBoundary"]["PermissionsBoundaryType"] == "Policy"
            referenced.append(entity["PermissionsBoundary"]["PermissionsBoundaryArn"])
    for arn in referenced:
        assert arn in policies, arn
    groups = {g["GroupName"] for g in auth["GroupDetailList"]}
    for user in auth["UserDetailList"]:
        for name in user["GroupList"]:
            assert name in groups, (user["UserName"], name)


def test_authorization_details_formats(auth: dict[str, Any]) -> None:
    id_formats = {"RoleId": "AROA", "UserId": "AIDA", "GroupId": "AGPA"}
    for kind, key in (
        ("RoleDetailList", "RoleId"),
        ("UserDetailList", "UserId"),
        ("GroupDetailList", "GroupId"),
    ):
        for entity in auth[kind]:
            assert re.fullmatch(id_formats[key] + r"[A-Z0-9]{17}", entity[key])
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", entity["CreateDate"])
    for p in auth["Policies"]:
        assert re.fullmatch(r"ANPA[A-Z0-9]{17}", p["PolicyId"])
    roles = {r["RoleName"]: r for r in auth["RoleDetailList"]}
    assert set(AGENT_ROLES) <= roles.keys()
    for name in AGENT_ROLES:
        assert {"Key": "agent", "Value": "true"} in roles[name]["Tags"]
    assert roles["invoice-agent"]["RoleLastUsed"] == {}
    deploy = next(p for p in auth["Policies"] if p["PolicyName"] == "DeployAgentPolicy")
    versions = {v["VersionId"]: v for v in deploy["PolicyVersionList"]}
    assert deploy["DefaultVersionId"] == "v2" and not versions["v1"]["IsDefaultVersion"]
    admin = next(p for p in auth["Policies"] if p["PolicyName"] == "AdministratorAccess")
    assert admin["Arn"] == "arn:aws:iam::aws:policy/AdministratorAccess"


def test_agent_role_events_come_from_their_role(
    auth: dict[str, Any], log_records: dict[Path, list[dict[str, Any]]]
) -> None:
    role_arns = {r["RoleName"]: r["Arn"] for r in auth["RoleDetailList"] if r["RoleName"] in AGENT_ROLES}
    seen: Counter[str] = Counter()
    for records in log_records.values():
        for rec in records:
            ident = rec["userIdentity"]
            if ident.get("type") != "AssumedRole":
                continue
            role_name = ident["arn"].split("/")[1]
            issuer = ident["sessionContext"]["sessionIssuer"]
            if role_name in role_arns or issuer["userName"] in role_arns:
                assert issuer["arn"] == role_arns[role_name], rec["eventID"]
                assert issuer["userName"] == role_name
                assert ident["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/")
                assert ident["principalId"].startswith(issuer["principalId"] + ":")
                seen[role_name] += 1
    assert seen["invoice-agent"] == 0
    for name in ("support-bot", "doc-summarizer", "deploy-agent", "data-agent"):
        assert seen[name] > 0, name


def test_every_hour_of_the_window_has_traffic(log_records: dict[Path, list[dict[str, Any]]]) -> None:
    hours = {rec["eventTime"][:13] for records in log_records.values() for rec in records}
    expected = {
        f"{WINDOW_START + timedelta(hours=i):%Y-%m-%dT%H}"
        for i in range(int((WINDOW_END - WINDOW_START).total_seconds() // 3600))
    }
    assert expected <= hours


def test_records_look_like_cloudtrail(log_records: dict[Path, list[dict[str, Any]]]) -> None:
    total = 0
    for records in log_records.values():
        for rec in records:
            total += 1
            assert rec["eventVersion"] in {"1.08", "1.09", "1.10", "1.11"}
            assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", rec["eventID"])
            assert rec["recipientAccountId"] == ACCOUNT
            assert rec["eventCategory"] == ("Management" if rec["managementEvent"] else "Data")
            assert WINDOW_START <= _parse_time(rec["eventTime"]) < WINDOW_END
            assert not (rec["eventSource"] == "lambda.amazonaws.com" and rec["eventName"].startswith("Invoke"))
            assert ("errorCode" in rec) == ("errorMessage" in rec)
    assert 40_000 <= total <= 70_000
