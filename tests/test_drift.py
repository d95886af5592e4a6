"""Drift between two monthly audits: the bundled account and the same account one month earlier
(``fixtures/previous_month.py``). Every entry of the drift is checked against the two permission
tables read independently, and the scenario's known changes are found."""

import importlib.util
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import drift

ROOT = Path(__file__).parents[1]
ROLE = "arn:aws:iam::123456789012:role/agents/"


def _previous_month_module():
    spec = importlib.util.spec_from_file_location("previous_month", ROOT / "fixtures" / "previous_month.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def months(tmp_path_factory):
    """(last month's --out, this month's --out with --baseline) audited through the CLI."""
    work = tmp_path_factory.mktemp("months")
    _previous_month_module().generate(ROOT / "fixtures" / "aws", work / "aws-previous")
    before, after = work / "previous", work / "current"
    assert run_cli("audit", "--aws-dir", work / "aws-previous", "--out", before, "-q").code == 0
    run = run_cli("audit", "--aws-dir", ROOT / "fixtures" / "aws", "--out", after, "-q", "--baseline", before)
    assert run.code == 0, run.err
    return before, after


def _by_name(doc):
    return {i["name"]: i for i in doc["identities"]}


def _states(table: Path) -> dict[str, dict[str, tuple[bool, str, bool]]]:
    """identity -> action -> (granted, state, destructive), read straight from permissions.parquet."""
    out: dict[str, dict[str, tuple[bool, str, bool]]] = {}
    for row in pl.read_parquet(table).iter_rows(named=True):
        out.setdefault(row["identity"], {})[row["action"]] = (row["granted"], row["state"], row["destructive"])
    return out


def test_every_permission_entry_matches_the_two_tables(months):
    before, after = months
    doc = json.loads((after / "drift.json").read_text())
    old, new = _states(before / "permissions.parquet"), _states(after / "permissions.parquet")
    for ident in doc["identities"]:
        was, now = old.get(ident["identity"], {}), new.get(ident["identity"], {})
        granted_then = {a for a, (g, _, _) in was.items() if g}
        granted_now = {a for a, (g, _, _) in now.items() if g}
        used_then = {a for a, (_, s, _) in was.items() if s == "used"}
        assert [p["action"] for p in ident["permissions_added"]] == sorted(granted_now - granted_then)
        assert ident["permissions_removed"] == sorted(granted_then - granted_now)
        assert ident["newly_used"] == sorted(a for a, (_, s, _) in now.items() if s == "used" and a not in used_then)
        assert ident["newly_unused"] == sorted(a for a in used_then if now.get(a, (0, ""))[1] == "unused")
        destructive_then = {a for a, (g, _, d) in was.items() if g and d}
        assert ident["new_destructive"] == sorted(
            a for a, (g, _, d) in now.items() if g and d and a not in destructive_then
        )


def test_the_months_known_changes_are_found(months):
    _, after = months
    doc = json.loads((after / "drift.json").read_text())
    people = _by_name(doc)
    s3_full = "arn:aws:iam::aws:policy/AmazonS3FullAccess"
    doc_summarizer = people["doc-summarizer"]
    assert doc_summarizer["status"] == "changed"
    assert doc_summarizer["grant_sources_added"] == [s3_full]
    assert doc_summarizer["grant_sources_removed"] == [f"{ROLE}doc-summarizer/inline/doc-bucket-access"]
    assert {tuple(p["sources"]) for p in doc_summarizer["permissions_added"]} == {(s3_full,)}
    assert "s3:DeleteBucket" in doc_summarizer["new_destructive"]
    assert people["legacy-agent"]["status"] == "removed"
    assert people["legacy-agent"]["permissions_removed"] == ["dynamodb:DeleteTable", "dynamodb:GetItem"]
    assert people["deploy-agent"]["newly_used"] == ["lambda:UpdateFunctionCode"]
    assert people["data-agent"]["newly_unused"] == ["athena:DeleteNamedQuery"]
    closed = people["data-agent"]["findings_closed"]
    assert [(f["kind"], f["subjects"]) for f in closed] == [("used-destructive", ["athena:DeleteNamedQuery"])]
    opened = people["data-agent"]["findings_opened"]
    assert [(f["kind"], f["subjects"]) for f in opened] == [("unused-destructive", ["athena:DeleteNamedQuery"])]
    changed = {"doc-summarizer", "legacy-agent", "deploy-agent", "data-agent"}
    assert {n for n, i in people.items() if i["status"] == "unchanged"} == set(people) - changed
    report = json.loads((after / "report.json").read_text())
    assert report["drift"]["summary"] == doc["summary"] and "drift.json" in report["outputs"]
    assert "## Since the previous audit" in (after / "report.md").read_text()
    assert "New grants from `arn:aws:iam::aws:policy/AmazonS3FullAccess`" in (after / "drift.md").read_text()


def test_report_json_alone_gives_the_same_states(months, tmp_path):
    before, after = months
    for name, folder in (("before", before), ("after", after)):
        (tmp_path / name).mkdir()
        shutil.copy(folder / "report.json", tmp_path / name / "report.json")
    full = drift.drift(drift.load(before), drift.load(after))
    alone = drift.drift(drift.load(tmp_path / "before"), drift.load(tmp_path / "after" / "report.json"))
    for a, b in zip(full["identities"], alone["identities"], strict=True):
        for name in ("newly_used", "newly_unused", "permissions_removed", "new_destructive", "status"):
            assert a[name] == b[name], (a["name"], name)
        assert [p["action"] for p in a["permissions_added"]] == [p["action"] for p in b["permissions_added"]]
        assert all(p["sources"] is None for p in b["permissions_added"])
    assert any("attributed per identity only" in w for w in alone["warnings"])


def test_fail_on_new_gates_on_what_the_month_added_unless_accepted(months, tmp_path):
    before, after = months
    run = run_cli("diff", before, after, "--fail-on-new", "critical")
    assert run.code == 1 and "new findings at or above critical" in run.err
    assert run_cli("diff", after, after, "--fail-on-new", "low").code == 0
    accept = tmp_path / "exceptions.yaml"
    entries = [
        {"identity": name, "permissions": ["*"], "reason": "reviewed", "expires": "2099-01-01"}
        for name in ("doc-summarizer", "data-agent")
    ]
    accept.write_text(yaml.safe_dump({"version": 1, "exceptions": entries}))
    out = tmp_path / "out"
    args = ["audit", "--aws-dir", ROOT / "fixtures" / "aws", "--out", out, "-q", "--baseline", before]
    assert run_cli(*args, "--fail-on-new", "critical").code == 1
    assert run_cli(*args, "--fail-on-new", "critical", "--exceptions", accept).code == 0


def test_a_cloud_not_audited_now_is_not_a_removal(months, tmp_path):
    before, _ = months
    out = tmp_path / "gcp-only"
    assert run_cli("audit", "--gcp-dir", ROOT / "fixtures" / "gcp", "--out", out, "-q").code == 0
    doc = drift.drift(drift.load(before), drift.load(out))
    aws = [i for i in doc["identities"] if i["provider"] == "aws"]
    assert aws and {i["status"] for i in aws} == {"not-audited"}
    assert all(not i["permissions_removed"] and not i["findings_closed"] for i in aws)
    assert sum(doc["summary"]["findings_closed"].values()) == 0
    assert any("audited before, not now" in w for w in doc["warnings"])


def test_the_diff_command_writes_its_files_and_prints_json(months, tmp_path):
    before, after = months
    run = run_cli("diff", before, after, "--json", "--out", tmp_path / "drift")
    assert run.code == 0
    assert json.loads(run.out) == json.loads((tmp_path / "drift" / "drift.json").read_text())
    assert (tmp_path / "drift" / "drift.md").read_text().startswith("# Drift since the previous audit")


@pytest.mark.parametrize(
    "content, message",
    [(None, "no report.json"), ('{"schema": "other"}', "not an auditor report"), ("{", "invalid JSON")],
)
def test_a_bad_previous_audit_is_one_line(tmp_path, months, content, message):
    folder = tmp_path / "previous"
    folder.mkdir()
    if content is not None:
        (folder / "report.json").write_text(content)
    assert message in one_line_error(run_cli("diff", folder, months[1]))
    audit = run_cli("audit", "--aws-dir", ROOT / "fixtures" / "aws", "--out", tmp_path / "o", "--baseline", folder)
    assert message in one_line_error(audit)


def test_fail_on_new_needs_a_baseline(tmp_path):
    run = run_cli("audit", "--aws-dir", ROOT / "fixtures" / "aws", "--out", tmp_path / "o", "--fail-on-new", "high")
    assert "--fail-on-new needs --baseline" in one_line_error(run)


ACTIONS = ["s3:GetObject", "s3:DeleteBucket", "iam:PassRole", "ec2:RunInstances"]
STATES = st.one_of(st.none(), st.tuples(st.booleans(), st.sampled_from(["used", "unused", "unobservable"])))


def _audit(states: dict[str, tuple[bool, str] | None]) -> drift.Audit:
    rows = [
        ("aws", "arn:aws:iam::1:role/a", action, granted, state, action == "s3:DeleteBucket", ["p"])
        for action, value in states.items()
        if value is not None
        for granted, state in [value]
    ]
    ident = {"provider": "aws", "account": "1", "identity": "arn:aws:iam::1:role/a", "name": "a",
             "grant_sources": ["p"], "unused_percent": 0.0}  # fmt: skip
    report = {"windows": {"aws": {"end": "2026-11-20T00:00:00Z"}}, "identities": [ident], "findings": []}
    return drift.of_result(report, pl.DataFrame(rows, schema=drift.PERMISSIONS, orient="row"), "x")


@settings(max_examples=60, deadline=None)
@given(st.fixed_dictionaries(dict.fromkeys(ACTIONS, STATES)), st.fixed_dictionaries(dict.fromkeys(ACTIONS, STATES)))
def test_permission_changes_are_the_set_differences(before, after):
    (ident,) = drift.drift(_audit(before), _audit(after))["identities"]

    def where(states, test):
        return sorted(a for a, v in states.items() if v is not None and test(*v))

    granted_then, granted_now = set(where(before, lambda g, s: g)), set(where(after, lambda g, s: g))
    assert [p["action"] for p in ident["permissions_added"]] == sorted(granted_now - granted_then)
    assert ident["permissions_removed"] == sorted(granted_then - granted_now)
    used_then = set(where(before, lambda g, s: s == "used"))
    assert ident["newly_used"] == sorted(set(where(after, lambda g, s: s == "used")) - used_then)
    assert ident["newly_unused"] == sorted(used_then & set(where(after, lambda g, s: s == "unused")))
    destructive_now = {"s3:DeleteBucket"} & granted_now
    assert ident["new_destructive"] == sorted(destructive_now - granted_then)
