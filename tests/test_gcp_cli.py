"""``auditor audit`` with GCP inputs: the single-file options, one-line errors, --strict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import one_line_error
from conftest import run_cli as run
from gcp_builders import account, binding, entry, policy, role, sa, write_snapshot

FIXTURE = Path(__file__).parents[1] / "fixtures" / "gcp"
BOT = sa("bot")


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
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [(i["account"], i["name"]) for i in report["identities"]] == [
        ("acme-agents-prod", "ops-agent@acme-agents-prod.iam.gserviceaccount.com")
    ]
    assert report["identities"][0]["policy_folder"] == "policies/gcp/acme-agents-prod/service_account/ops-agent"


def test_bad_inputs_are_one_line_errors(tmp_path):
    root = small(tmp_path)
    (root / "policies" / "projects" / "p1.json").write_text("{oops")
    line = one_line_error(run("audit", "--gcp-dir", str(root), "--out", str(tmp_path / "out")))
    assert line.startswith("auditor: error: ") and "p1.json: invalid JSON" in line
    line = one_line_error(
        run("audit", "--gcp-policy", str(root / "policies" / "projects" / "p1.json"), "--out", str(tmp_path))
    )
    assert "--gcp-policy, --gcp-roles and --gcp-logs go together" in line
    line = one_line_error(
        run("audit", "--gcp-dir", str(root), "--bigquery-table", "a.b.c", "--out", str(tmp_path / "out"))
    )
    assert "--bigquery-table needs --gcp-project" in line
    line = one_line_error(
        run("audit", "--gcp-project", "a", "--gcp-project", "b", "--gcp-snapshot", str(tmp_path / "s"), "--out", "o")
    )
    assert "--gcp-snapshot takes one --gcp-project" in line


def test_malformed_log_lines_are_input_problems_and_fatal_with_strict(tmp_path):
    root = small(tmp_path)
    (root / "logs" / "sink.ndjson").write_text(
        json.dumps(entry(BOT, "2026-11-15T00:00:00Z", [("a.b.c", True)])) + "\n{broken\n"
    )
    result = run("audit", "--gcp-dir", str(root), "--out", str(tmp_path / "out"), "-q")
    assert result.code == 0, result.err
    gaps = json.loads((tmp_path / "out" / "report.json").read_text())["gaps"]
    assert any(g["scope"].endswith("sink.ndjson") and "line 2" in g["reason"] for g in gaps)
    line = one_line_error(run("audit", "--gcp-dir", str(root), "--out", str(tmp_path / "out2"), "--strict"))
    assert "sink.ndjson: 1 malformed log entry skipped, first line 2" in line
