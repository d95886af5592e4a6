"""Accepted exceptions: a finding is accepted whole or not at all, for a time; expired ones are open again."""

import json
from datetime import date, timedelta

import pytest
import yaml
from conftest import END, FakeSource, audit, grant, identity, one_line_error, run_cli, use
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import exceptions
from auditor.errors import InputError

ROLE = "arn:aws:iam::123456789012:role/agents/deploy-agent"
DESTRUCTIVE = ["lambda:DeleteFunction", "s3:DeleteBucket"]


def _source() -> FakeSource:
    return FakeSource(
        [identity(ROLE)],
        [grant(ROLE, [*DESTRUCTIVE, "s3:GetObject", "lambda:UpdateFunctionCode"])],
        [use(ROLE, "s3:GetObject", 5), use(ROLE, "lambda:UpdateFunctionCode", 2)],
    )


def _entries(tmp_path, *entries) -> tuple[exceptions.Entry, ...]:
    path = tmp_path / "exceptions.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "exceptions": list(entries)}))
    return exceptions.load(path)


def _entry(**fields):
    return {"identity": "deploy-agent", "reason": "reviewed", "expires": "2099-12-31", **fields}


def _by_kind(result) -> dict[str, dict | None]:
    return dict(result.findings.select("kind", "exception").iter_rows())


def test_a_finding_covered_whole_is_accepted_and_no_longer_fails_the_gate(tmp_path):
    plain = audit(_source())
    assert not plain.findings_at_or_above("critical").is_empty()
    entries = _entries(tmp_path, _entry(permissions=["lambda:Delete*", "s3:DeleteBucket"], kind="unused-destructive"))
    result = audit(_source(), exceptions=entries)
    mark = _by_kind(result)["unused-destructive"]
    assert mark["status"] == "accepted" and mark["reason"] == "reviewed" and mark["expires"] == "2099-12-31"
    assert "unused-destructive" not in set(result.findings_at_or_above("info")["kind"])
    assert result.exceptions[0].status == "active" and result.exceptions[0].findings == 1


def test_a_partly_covered_finding_stays_open(tmp_path):
    result = audit(_source(), exceptions=_entries(tmp_path, _entry(permissions=["s3:DeleteBucket"])))
    assert _by_kind(result)["unused-destructive"] is None
    assert "unused-destructive" in set(result.findings_at_or_above("critical")["kind"])
    assert result.exceptions[0].status == "unmatched"


def test_an_expired_exception_reopens_its_finding_and_says_so(tmp_path):
    yesterday = (END.date() - timedelta(days=1)).isoformat()
    entries = _entries(tmp_path, _entry(permissions=DESTRUCTIVE, expires=yesterday))
    result = audit(_source(), exceptions=entries)
    mark = _by_kind(result)["unused-destructive"]
    assert mark["status"] == "expired" and mark["expires"] == yesterday
    assert "unused-destructive" in set(result.findings_at_or_above("critical")["kind"])
    assert result.exceptions[0].status == "expired" and result.exceptions[0].findings == 1


def test_the_last_day_is_still_accepted(tmp_path):
    entries = _entries(tmp_path, _entry(permissions=DESTRUCTIVE, expires=END.date().isoformat()))
    assert _by_kind(audit(_source(), exceptions=entries))["unused-destructive"]["status"] == "accepted"


def test_a_finding_without_permissions_needs_its_kind_named(tmp_path):
    admin = FakeSource([identity(ROLE)], [grant(ROLE, "*")], [use(ROLE, "s3:GetObject")])
    by_permission = audit(admin, exceptions=_entries(tmp_path, _entry(permissions=["*"])))
    assert _by_kind(by_permission)["admin-grant"] is None
    by_kind = audit(admin, exceptions=_entries(tmp_path, _entry(kind="admin-grant")))
    assert _by_kind(by_kind)["admin-grant"]["status"] == "accepted"


def test_another_identity_is_not_covered(tmp_path):
    entries = _entries(tmp_path, _entry(identity="other-agent", permissions=["*"]))
    result = audit(_source(), exceptions=entries)
    assert result.findings["exception"].is_null().all()


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from([*DESTRUCTIVE, "lambda:*", "s3:*", "iam:*"]), min_size=1))
def test_accepted_exactly_when_the_permissions_cover_every_action(patterns):
    findings = audit(_source()).findings
    entry = exceptions.Entry("deploy-agent", tuple(sorted(patterns)), None, "r", date(2099, 1, 1), "f entry 1")
    marked, _ = exceptions.apply(findings, [entry], END)
    for actions, mark in marked.select("actions", "exception").iter_rows():
        covered = bool(actions) and all(any(_glob(p, a) for p in patterns) for a in actions)
        assert (mark is not None and mark["status"] == "accepted") == covered


def _glob(pattern: str, action: str) -> bool:
    return pattern == action or (pattern.endswith("*") and action.lower().startswith(pattern[:-1].lower()))


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"identity": "x", "permissions": ["*"], "expires": "2099-01-01"}, "'reason' is required"),
        ({"identity": "x", "permissions": ["*"], "reason": "r"}, "'expires' must be a date"),
        ({"identity": "x", "permissions": ["*"], "reason": "r", "expires": "next month"}, "'expires' must be a date"),
        ({"identity": "x", "reason": "r", "expires": "2099-01-01"}, "give 'permissions', 'kind' or both"),
        ({"identity": "x", "permission": "*", "reason": "r", "expires": "2099-01-01"}, "unknown field(s) permission"),
        ({"identity": 7, "permissions": ["*"], "reason": "r", "expires": "2099-01-01"}, "'identity' must be"),
        ("just text", "expected a mapping"),
    ],
)
def test_a_bad_entry_is_one_line_naming_it(tmp_path, entry, message):
    path = tmp_path / "exceptions.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "exceptions": [_entry(permissions=["*"]), entry]}))
    with pytest.raises(InputError) as error:
        exceptions.load(path)
    assert f"{path} entry 2" in str(error.value) and message in str(error.value)


def test_the_cli_marks_accepted_findings_in_the_report_and_the_gate_ignores_them(tmp_path):
    out = tmp_path / "out"
    path = tmp_path / "exceptions.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "exceptions": [
                    _entry(identity="*", kind="privilege-escalation", permissions=["*"]),
                    _entry(identity="*", kind="unused-destructive", permissions=["*"]),
                    _entry(identity="*", kind="admin-grant"),
                    _entry(identity="nobody", kind="admin-grant", expires="2020-01-01"),
                ],
            }
        )
    )
    run = run_cli("audit", "--aws-dir", "fixtures/aws", "--out", out, "--exceptions", path, "--fail-on", "critical")
    assert run.code == 0, run.err
    doc = json.loads((out / "report.json").read_text())
    accepted = [f for f in doc["findings"] if (f["exception"] or {}).get("status") == "accepted"]
    assert accepted and doc["summary"]["accepted"] == len(accepted)
    assert doc["summary"]["findings"]["critical"] == 0
    assert [e["status"] for e in doc["exceptions"]][-1] == "expired"
    assert "## Accepted exceptions" in (out / "report.md").read_text()


def test_the_cli_refuses_a_missing_exceptions_file(tmp_path):
    line = one_line_error(run_cli("audit", "--aws-dir", "fixtures/aws", "--exceptions", tmp_path / "no.yaml"))
    assert "no such exceptions file" in line
