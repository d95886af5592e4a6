"""Outputs that must be safe to apply or read: blocklist coverage of refused calls, inert Markdown,
coverage counted per account, and readers that die with the audit."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from conftest import FakeSource, LogStats, ScopeStats, audit, grant, identity, one_line_error, run_cli, use
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import audit as audit_module
from auditor.emit import report_md
from auditor.emit.blocklist import blocklist, render
from builders import allow, auth_details, event, policy, role, role_arn, snapshot, trail_file

AGENT = role_arn("agent")


def test_a_destructive_grant_whose_only_calls_were_refused_is_hard_denied():
    source = FakeSource(
        [identity(AGENT)],
        [grant(AGENT, ["iam:DeleteRole", "iam:DeletePolicy", "iam:GetRole"])],
        [use(AGENT, "iam:DeleteRole", 3, outcome="denied"), use(AGENT, "iam:GetRole")],
    )
    (entry,) = blocklist(audit(source))["identities"]
    denied = {p for group in entry["deny"] for p in group["permissions"]}
    gated = {g["permission"] for g in entry["require_approval"]}
    assert {"iam:DeleteRole", "iam:DeletePolicy"} <= denied and not ({"iam:DeleteRole"} & gated)
    assert "iam:GetRole" not in denied | gated


PIECES = [*"ab#*_`[]()<>!|\n\r\t&;$ ", "<script>", "\n# Heading", "](http://x)", "```"]
HOSTILE = st.lists(st.sampled_from(PIECES), min_size=1, max_size=20).map("".join)


@settings(max_examples=200, deadline=None)
@given(HOSTILE)
def test_no_input_text_can_add_structure_to_the_report(value):
    for rendered in (report_md.text(value), report_md.code(value)):
        assert "\n" not in rendered and "\r" not in rendered
        assert not re.search(r"(?<!\\)<[a-z/!]", rendered.replace("\\<", "")) or rendered.startswith("`")
        unescaped = re.sub(r"\\.", "", rendered)
        if not rendered.startswith("`"):  # text: every Markdown/HTML character escaped
            assert not set(unescaped) & set("*_[]<>#`|!()")
    block = report_md._block([f"aws iam x --role-name={value}"])
    fence = block[0][: -len("sh")]
    assert block[-1] == fence and all(fence not in line for line in block[1:-1])


def test_coverage_rows_count_each_account_by_itself():
    other = "arn:aws:iam::999999999999:role/other"

    class TwoAccounts(FakeSource):
        def usage(self, request, progress=None):
            evidence = super().usage(request)
            stats = LogStats(
                "aws",
                "fake logs",
                {
                    "123456789012": ScopeStats({"2026-11-20": 7}, "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 7, 3),
                    "999999999999": ScopeStats({"2026-11-20": 2}, "2026-11-20T00:00:00Z", "2026-11-20T01:00:00Z", 2, 1),
                },
            )
            return type(evidence)(usage=evidence.usage, logs=(stats,))

    result = audit(TwoAccounts([identity(AGENT), identity(other, account="999999999999")]), days=1)
    rows = {r["account"]: r for r in result.data.coverage.iter_rows(named=True)}
    assert (rows["123456789012"]["events_read"], rows["123456789012"]["files_read"]) == (7, 3)
    assert (rows["999999999999"]["events_read"], rows["999999999999"]["files_read"]) == (2, 1)


def test_killing_the_audit_kills_its_log_readers(tmp_path):
    auth = auth_details([role("agent", inline={"p": policy(allow("s3:*"))})])
    records = [event(AGENT, "s3.amazonaws.com", "ListBuckets", "2026-11-20T10:00:00Z")] * 2000
    root = snapshot(tmp_path / "in", auth, {})
    for index in range(400):
        trail_file(root, records, day=f"2026/11/{1 + index % 20:02d}", name=f"f{index}")
    command = [
        sys.executable,
        "-m",
        "auditor",
        "audit",
        "--aws-dir",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--workers",
        "2",
        "-q",
    ]
    parent = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    children: list[int] = []
    deadline = time.monotonic() + 60
    while not children and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.05)
        try:
            with open(f"/proc/{parent.pid}/task/{parent.pid}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except FileNotFoundError:
            break
    assert children, "the audit finished before its readers could be seen"
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{c}") and _alive(c) for c in children):
        time.sleep(0.1)
    assert not [c for c in children if os.path.exists(f"/proc/{c}") and _alive(c)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_blocklist_yaml_reads_back_exactly():
    source = FakeSource([identity(AGENT, name='we"ird: name\n- x')], [grant(AGENT, ["iam:DeleteRole"])])
    result = audit(source, now=datetime(2026, 11, 21, tzinfo=UTC))
    document = blocklist(result)
    assert yaml.safe_load(render(document)) == document


def test_a_second_run_to_the_same_out_refuses_while_the_first_reads_its_logs(tmp_path, monkeypatch):
    """--out is taken while the first run's log scan reads, not when it begins writing: a second run
    started meanwhile must refuse, not read its own logs and publish over the first (or under it)."""
    auth = auth_details([role("agent", inline={"p": policy(allow("s3:*"))})])
    records = [event(AGENT, "s3.amazonaws.com", "ListBuckets", "2026-11-20T10:00:00Z")]
    root = snapshot(tmp_path / "in", auth, {"2026/11/20": records})
    out = tmp_path / "out"
    second = []
    scan = audit_module._usage

    def usage_with_a_second_run(*args, **kwargs):
        if not second:  # once: the second run's own scan comes here too
            second.append(None)
            second[0] = run_cli("audit", "--aws-dir", root, "--out", out, "-q")
        return scan(*args, **kwargs)

    monkeypatch.setattr(audit_module, "_usage", usage_with_a_second_run)
    first = run_cli("audit", "--aws-dir", root, "--out", out, "-q")
    assert first.code == 0, first.err
    line = one_line_error(second[0])
    assert f"--out {out} is being written by another auditor run (pid {os.getpid()})" in line
    assert (out / "report.json").exists() and os.path.islink(out)


@pytest.mark.parametrize("until", [None, "9999-12-31"])
def test_the_summary_counts_as_dormant_exactly_the_identities_the_plans_treat_so(until, tmp_path):
    """A window the logs do not cover (it ends in 9999) shows no call, but leaves no identity dormant: the
    header once said "dormant: 6" over plans that rightly removed nothing."""
    fixture = Path(__file__).parents[1] / "fixtures" / "aws"
    args = ["audit", "--aws-dir", fixture, "--out", tmp_path / "out", "-q", *(["--until", until] if until else [])]
    assert run_cli(*args).code == 0
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    plans = [i["name"] for i in document["identities"] if i["dormant"]]
    flagged = {f["identity"] for f in document["findings"] if f["kind"] == "dormant-identity"}
    assert document["summary"]["agents_dormant"] == len(plans) == len(flagged)
    assert (len(plans) > 0) is (until is None)
    assert f"(dormant: {len(plans)})" in (tmp_path / "out" / "report.md").read_text()
