"""End to end through the CLI: outputs, exit codes, one-line errors, atomic output."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml

from auditor import aws_policy
from builders import ACCOUNT, allow, auth_details, event, policy, role, role_arn, snapshot

SCHEMAS = Path(__file__).parents[1] / "auditor" / "schemas"
SCHEMA = json.loads((SCHEMAS / "blocklist.schema.json").read_text())
REPORT_SCHEMA = json.loads((SCHEMAS / "report.schema.json").read_text())
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auditor", *args], capture_output=True, text=True, cwd=cwd)


def build(tmp: Path, grant, calls, name="bot") -> Path:
    """A snapshot with one agent holding ``grant`` and making ``calls`` every day of 32 days."""
    days: dict[str, list] = {}
    for offset in range(32):
        when = END - timedelta(days=offset)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        days.setdefault(when.strftime("%Y/%m/%d"), []).extend(
            event(role_arn(name), source, call, stamp, **extra) for source, call, extra in calls
        )
        days[when.strftime("%Y/%m/%d")].append(event(role_arn("other"), "s3.amazonaws.com", "ListBuckets", stamp))
    return snapshot(tmp / "in", auth_details([role(name, inline={"p": grant}), role("other", tags={})]), days)


@pytest.fixture
def audited(tmp_path):
    grant = policy(allow(["dynamodb:*", "sqs:ListQueues"]))
    calls = [
        ("dynamodb.amazonaws.com", "DescribeTable", {}),
        ("dynamodb.amazonaws.com", "DeleteTable", {"read_only": False}),
    ]
    source = build(tmp_path, grant, calls)
    result = run("audit", "--aws-dir", str(source), "--out", str(tmp_path / "out"))
    return tmp_path / "out", result


def test_audit_writes_every_output_and_a_summary(audited):
    out, result = audited
    assert result.returncode == 0, result.stderr
    assert "bot" in result.stdout and "critical" in result.stdout
    for name in ("report.md", "report.json", "blocklist.yaml", "permissions.csv", "policies/index.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".auditor-staging-*"))


def test_blocklist_validates_against_its_schema_and_matches_usage(audited):
    out, _ = audited
    document = yaml.safe_load((out / "blocklist.yaml").read_text())
    jsonschema.validate(document, SCHEMA)
    (bot,) = document["identities"]
    denied = {p for group in bot["deny"] for p in group["permissions"]}
    approval = {entry["permission"] for entry in bot["require_approval"]}
    assert "dynamodb:DeleteTable" in approval and "dynamodb:DeleteTable" not in denied
    assert "dynamodb:DeleteBackup" in denied
    assert not denied & approval


def test_policy_is_valid_iam_json_allowing_exactly_the_used_actions(audited):
    out, _ = audited
    (path,) = (out / "policies" / "aws" / ACCOUNT).glob("bot*.json")
    document = json.loads(path.read_text())
    assert document["Version"] == "2012-10-17"
    assert all(s["Sid"].isalnum() for s in document["Statement"])
    assert aws_policy.allows([document], "dynamodb:DescribeTable")
    assert aws_policy.allows([document], "dynamodb:DeleteTable")
    assert not aws_policy.allows([document], "dynamodb:DeleteBackup")
    assert not aws_policy.allows([document], "sqs:ListQueues")


def test_report_json_agrees_with_permissions(audited):
    out, _ = audited
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    (bot,) = report["identities"]
    used = {p["action"] for p in bot["used_permissions"]}
    assert used == {"dynamodb:DescribeTable", "dynamodb:DeleteTable"}
    assert bot["used"] + bot["unused"] + bot["unobservable"] + bot["denied"] <= bot["granted"]
    assert report["summary"]["findings"] == {
        s: sum(1 for f in report["findings"] if f["severity"] == s) for s in report["summary"]["findings"]
    }


@pytest.mark.parametrize(("level", "code"), [("critical", 1), ("high", 1), ("none", 0)])
def test_fail_on_gates_the_exit_code(tmp_path, level, code):
    source = build(tmp_path, policy(allow("dynamodb:*")), [("dynamodb.amazonaws.com", "DescribeTable", {})])
    result = run("audit", "--aws-dir", str(source), "--out", str(tmp_path / "out"), "--fail-on", level, "-q")
    assert result.returncode == code, result.stderr
    assert (tmp_path / "out" / "report.md").is_file()


def test_fail_on_is_not_triggered_by_lower_findings(tmp_path):
    source = build(tmp_path, policy(allow("dynamodb:DescribeTable")), [("dynamodb.amazonaws.com", "DescribeTable", {})])
    result = run("audit", "--aws-dir", str(source), "--out", str(tmp_path / "out"), "--fail-on", "low", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_malformed_authorization_details_is_one_line_and_writes_nothing(tmp_path):
    source = build(tmp_path, policy(allow("dynamodb:*")), [("dynamodb.amazonaws.com", "DescribeTable", {})])
    (source / "authorization-details.json").write_text('{"RoleDetailList": [')
    message = one_line_error(run("audit", "--aws-dir", str(source), "--out", str(tmp_path / "out")))
    assert "authorization-details.json" in message and "invalid JSON" in message
    assert not (tmp_path / "out" / "report.md").exists()


def test_empty_log_directory_is_one_line(tmp_path):
    (tmp_path / "auth.json").write_text(json.dumps(auth_details([role("bot")])))
    (tmp_path / "logs").mkdir()
    message = one_line_error(
        run(
            "audit",
            "--aws-auth",
            str(tmp_path / "auth.json"),
            "--cloudtrail",
            str(tmp_path / "logs"),
            "--out",
            str(tmp_path / "out"),
        )
    )
    assert "no CloudTrail log files" in message


def test_strict_makes_a_corrupt_log_file_fatal_and_default_lists_it(tmp_path):
    source = build(tmp_path, policy(allow("dynamodb:*")), [("dynamodb.amazonaws.com", "DescribeTable", {})])
    corrupt = next((source / "AWSLogs").rglob("*.json.gz"))
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    relaxed = run("audit", "--aws-dir", str(source), "--out", str(tmp_path / "out"), "-q")
    assert relaxed.returncode == 0
    assert corrupt.name in (tmp_path / "out" / "report.md").read_text()
    message = one_line_error(run("audit", "--aws-dir", str(source), "--out", str(tmp_path / "strict"), "--strict"))
    assert corrupt.name in message and "gzip" in message


def test_no_agents_selected_is_one_line(tmp_path):
    source = build(tmp_path, policy(allow("dynamodb:*")), [])
    message = one_line_error(run("audit", "--aws-dir", str(source), "--agent-tag", "", "--out", str(tmp_path / "o")))
    assert "no agent identities" in message


def test_bad_option_values_are_usage_errors(tmp_path):
    assert run("audit", "--fail-on", "sometimes").returncode == 2
    message = one_line_error(run("audit", "--aws-dir", str(tmp_path), "--until", "yesterday"))
    assert "--until" in message


def test_a_failing_run_keeps_the_previous_outputs_intact(tmp_path, audited):
    out, _ = audited
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    source = build(tmp_path / "second", policy(allow("dynamodb:*")), [])
    (source / "authorization-details.json").write_text("[]")
    one_line_error(run("audit", "--aws-dir", str(source), "--out", str(out)))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after


def test_rules_command_validates_user_rules(tmp_path):
    assert run("rules").returncode == 0
    (tmp_path / "destructive.yaml").write_text("rules:\n  - id: x\n    provider: aws\n    severity: extreme\n")
    message = one_line_error(run("rules", "--rules", str(tmp_path)))
    assert "destructive.yaml" in message


def test_user_rules_extend_and_disable_shipped_ones(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "destructive.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {"id": "aws-destroy-verbs", "disabled": True},
                    {
                        "id": "no-describe",
                        "provider": "aws",
                        "category": "destroy",
                        "severity": "low",
                        "reason": "describing is dangerous here",
                        "actions": ["dynamodb:DescribeTable"],
                    },
                ]
            }
        )
    )
    source = build(tmp_path, policy(allow("dynamodb:*")), [("dynamodb.amazonaws.com", "DescribeTable", {})])
    result = run("audit", "--aws-dir", str(source), "--rules", str(rules), "--out", str(tmp_path / "out"), "-q")
    assert result.returncode == 0, result.stderr
    blocklist = yaml.safe_load((tmp_path / "out" / "blocklist.yaml").read_text())
    (bot,) = blocklist["identities"]
    assert [e["permission"] for e in bot["require_approval"] if e["rule"] == "no-describe"] == [
        "dynamodb:DescribeTable"
    ]
    assert all(group["rule"] != "aws-destroy-verbs" for group in bot["deny"])
