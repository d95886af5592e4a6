"""``auditor audit`` with GCP inputs: the single-file options, one-line errors, --strict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from gcp_builders import account, binding, entry, policy, role, sa, write_snapshot

FIXTURE = Path(__file__).parents[1] / "fixtures" / "gcp"
BOT = sa("bot")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "auditor", *args], capture_output=True, text=True)


def small(tmp: Path) -> Path:
    entries = [entry(BOT, f"2026-11-{d:02d}T10:00:00Z", [("compute.instances.stop", True)]) for d in range(1, 31)]
    return write_snapshot(
        tmp / "in",
        policy(binding("roles/x", f"serviceAccount:{BOT}")),
        [role("roles/x", "compute.instances.stop", "compute.instances.delete")],
        entries,
        [account(BOT)],
    )


def test_single_file_options_take_the_project_from_the_logs(tmp_path):
    shutil.copy(FIXTURE / "policies" / "projects" / "acme-agents-prod.json", tmp_path / "policy.json")
    result = run(
        "audit",
        "--gcp-policy",
        str(tmp_path / "policy.json"),
        "--gcp-roles",
        str(FIXTURE / "roles"),
        "--gcp-logs",
        str(FIXTURE / "logs"),
        "--gcp-logs",
        str(FIXTURE / "cloudaudit.googleapis.com"),
        "--agent",
        "ops-agent@*",
        "--out",
        str(tmp_path / "out"),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(i["account"], i["name"]) for i in report["identities"]] == [
        ("acme-agents-prod", "ops-agent@acme-agents-prod.iam.gserviceaccount.com")
    ]


def test_bad_inputs_are_one_line_errors(tmp_path):
    root = small(tmp_path)
    (root / "policies" / "projects" / "p1.json").write_text("{oops")
    result = run("audit", "--gcp-dir", str(root), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("auditor: error: ") and "p1.json: invalid JSON" in line
    result = run("audit", "--gcp-policy", str(root / "policies" / "projects" / "p1.json"), "--out", str(tmp_path))
    assert result.returncode == 2 and "--gcp-policy, --gcp-roles and --gcp-logs go together" in result.stderr
    result = run("audit", "--gcp-dir", str(root), "--bigquery-table", "a.b.c", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--bigquery-table needs --gcp-project" in result.stderr


def test_malformed_log_lines_are_input_problems_and_fatal_with_strict(tmp_path):
    root = small(tmp_path)
    (root / "logs" / "sink.ndjson").write_text(
        json.dumps(entry(BOT, "2026-11-15T00:00:00Z", [("a.b.c", True)])) + "\n{broken\n"
    )
    result = run("audit", "--gcp-dir", str(root), "--out", str(tmp_path / "out"), "-q")
    assert result.returncode == 0, result.stderr
    gaps = json.loads((tmp_path / "out" / "report.json").read_text())["gaps"]
    assert any(g["scope"].endswith("sink.ndjson") and "line 2" in g["reason"] for g in gaps)
    result = run("audit", "--gcp-dir", str(root), "--out", str(tmp_path / "out2"), "--strict")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "sink.ndjson: 1 malformed log entry skipped, first line 2" in line
