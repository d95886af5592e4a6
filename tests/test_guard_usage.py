"""The guard's decision log as a usage source: the guard feeds next month's audit."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml

from auditor.guard import ActionBlocked, DecisionLog, Guard
from auditor.guard.policy import IdentityPolicy
from tests.guard_support import identity

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = "arn:aws:iam::123456789012:role/agents/deploy-agent"
BILLING = "agent://acme-agents/billing-agent"


def _guard(entry: dict, log: DecisionLog) -> Guard:
    return Guard(IdentityPolicy.from_entry(entry), log=log)


def _log_at(path: Path, when: str) -> DecisionLog:
    return DecisionLog(path, clock=lambda: datetime.fromisoformat(when).replace(tzinfo=UTC))


def write_guard_log(path: Path) -> None:
    """What guards running inside the agents wrote during (and before) the audit window."""
    inside = _log_at(path, "2026-11-10T12:00:00")
    _guard(identity("aws", DEPLOY, "deploy-agent"), inside).check("cloudformation:DeleteStackSet")
    _guard(identity("aws", DEPLOY, "deploy-agent"), inside).check("cloudformation:NoSuchOperation")
    with pytest.raises(ActionBlocked):
        _guard(identity("aws", DEPLOY, "deploy-agent", deny=["cloudformation:ActivateType"]), inside).check(
            "cloudformation:ActivateType"
        )
    before = _log_at(path, "2026-09-01T00:00:00")
    _guard(identity("aws", DEPLOY, "deploy-agent"), before).check("cloudformation:ActivateOrganizationsAccess")
    tools = identity("tools", BILLING, "billing-agent", allow=["billing.void_invoice"])
    _guard(tools, inside).check("billing.void_invoice", kind="tool")
    with path.open("a") as fh:
        fh.write('{"schema": "auditor.guard-log/v1", "time": "2026-11-1\n')  # a line cut by a crash


def audit(tmp_path: Path, *extra: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    args = ["--aws-dir", str(ROOT / "fixtures/aws"), "--tools-manifest", str(ROOT / "fixtures/tools/agents.yaml")]
    run = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", *args, "--out", str(out), "--quiet", *extra],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return out


def state(out: Path, ident: str, action: str) -> dict:
    table = pl.read_csv(out / "permissions.csv", infer_schema_length=0)
    return table.filter((pl.col("identity") == ident) & (pl.col("action") == action)).row(0, named=True)


def test_calls_the_guard_let_through_count_as_used(tmp_path: Path) -> None:
    log = tmp_path / "guard.jsonl"
    write_guard_log(log)
    without = audit(tmp_path / "a")
    guarded = audit(tmp_path / "b", "--guard-log", str(log))
    assert state(without, DEPLOY, "cloudformation:DeleteStackSet")["state"] == "unused"
    used = state(guarded, DEPLOY, "cloudformation:DeleteStackSet")
    assert (used["state"], used["calls"], used["evidence"]) == ("used", "1", "guard-log")
    assert state(guarded, DEPLOY, "cloudformation:ActivateType")["state"] == "denied"  # refused by the guard
    assert state(guarded, DEPLOY, "cloudformation:ActivateOrganizationsAccess")["state"] == "unused"  # before
    assert state(without, BILLING, "billing.void_invoice")["state"] == "unused"
    assert state(guarded, BILLING, "billing.void_invoice")["state"] == "used"
    blocklist = {e["identity"]: e for e in yaml.safe_load((guarded / "blocklist.yaml").read_text())["identities"]}
    deploy = blocklist[DEPLOY]
    assert "cloudformation:DeleteStackSet" not in [p for g in deploy["deny"] for p in g["permissions"]]
    assert "cloudformation:DeleteStackSet" in [a["permission"] for a in deploy["require_approval"]]
    assert "billing.void_invoice" in [a["permission"] for a in blocklist[BILLING]["require_approval"]]
    report = json.loads((guarded / "report.json").read_text())
    text = json.dumps(report)
    assert "guard:cloudformation:NoSuchOperation" in text  # unmapped, listed, never guessed
    assert "not JSON" in text  # the cut line is an input problem, not a crash
    assert str(log) in text  # the log is named among the inputs


def test_a_missing_or_foreign_guard_log(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(ROOT / "fixtures/aws"), "--guard-log",
         str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2 and "guard decision log not found" in run.stderr
    assert "Traceback" not in run.stderr
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"hello": "world"}\n[1, 2]\n\n')
    run = subprocess.run(
        [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(ROOT / "fixtures/aws"), "--guard-log",
         str(foreign), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2 and "no guard decision could be read (2 line(s)" in run.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    audit(tmp_path / "c", "--guard-log", str(empty))  # a guard that decided nothing yet: nothing to add
