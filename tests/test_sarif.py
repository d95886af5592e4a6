"""report.sarif: valid SARIF 2.1.0 (the official OASIS schema), on the files the user maps, stable fingerprints."""

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import one_line_error, run_cli

ROOT = Path(__file__).parents[1]
SCHEMA = json.loads((Path(__file__).parent / "data" / "sarif" / "sarif-schema-2.1.0.json").read_text())
DEPLOY = "arn:aws:iam::123456789012:role/agents/deploy-agent"


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    work = tmp_path_factory.mktemp("sarif")
    iac = work / "iac.yaml"
    iac.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "locations": [
                    {"identity": DEPLOY, "file": "infra/agents/deploy.tf", "line": 12},
                    {"identity": "*@acme-agents-prod.iam.gserviceaccount.com", "file": "infra/gcp/agents.tf"},
                ],
            }
        )
    )
    accept = work / "exceptions.yaml"
    entry = {"identity": "deploy-agent", "kind": "privilege-escalation", "permissions": ["*"], "reason": "reviewed"}
    accept.write_text(yaml.safe_dump({"version": 1, "exceptions": [{**entry, "expires": "2099-01-01"}]}))
    out = work / "out"
    args = ["audit", "--aws-dir", ROOT / "fixtures/aws", "--gcp-dir", ROOT / "fixtures/gcp", "--out", out, "-q"]
    run = run_cli(*args, "--iac-map", iac, "--exceptions", accept)
    assert run.code == 0, run.err
    return out, json.loads((out / "report.sarif").read_text()), json.loads((out / "report.json").read_text())


def test_it_validates_against_the_official_schema(audited):
    _, log, _ = audited
    jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(log)


def test_one_result_per_finding_with_its_rule_level_and_identity(audited):
    _, log, report = audited
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert len(run["results"]) == len(report["findings"])
    levels = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
    for result, finding in zip(run["results"], report["findings"], strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == finding["kind"]
        assert result["level"] == levels[finding["severity"]]
        assert result["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == finding["identity"]
        assert float(rules[result["ruleIndex"]]["properties"]["security-severity"]) >= 0
    fingerprints = [r["partialFingerprints"]["auditorFinding/v1"] for r in run["results"]]
    assert len(set(fingerprints)) == len(fingerprints)


def test_mapped_identities_point_at_their_iac_file_and_the_rest_at_their_policy(audited):
    out, log, report = audited
    policy = {(i["provider"], i["identity"]): i["policy_files"] for i in report["identities"]}
    for result in log["runs"][0]["results"]:
        identity = result["properties"]["identity"]
        physical = result["locations"][0].get("physicalLocation")
        if identity == DEPLOY:
            assert physical == {
                "artifactLocation": {"uri": "infra/agents/deploy.tf", "uriBaseId": "%SRCROOT%"},
                "region": {"startLine": 12},
            }
        elif identity.endswith("@acme-agents-prod.iam.gserviceaccount.com"):
            assert physical["artifactLocation"]["uri"] == "infra/gcp/agents.tf" and "region" not in physical
        elif physical is not None:
            files = next(f for (p, i), f in policy.items() if i == identity)
            assert physical["artifactLocation"] == {"uri": files[0], "uriBaseId": "AUDITOR_OUT"}
            assert (out / files[0]).is_file()


def test_accepted_findings_are_suppressions(audited):
    _, log, _ = audited
    suppressed = [r for r in log["runs"][0]["results"] if r.get("suppressions")]
    assert [(r["ruleId"], r["properties"]["identity"]) for r in suppressed] == [("privilege-escalation", DEPLOY)]
    assert suppressed[0]["suppressions"][0]["status"] == "accepted"


def test_fingerprints_do_not_change_when_a_findings_permission_list_does(audited, tmp_path):
    _, log, _ = audited
    again = tmp_path / "again"
    assert run_cli("audit", "--aws-dir", ROOT / "fixtures/aws", "--out", again, "-q", "--days", "20").code == 0
    later = json.loads((again / "report.sarif").read_text())["runs"][0]["results"]
    before = {(r["ruleId"], r["properties"]["identity"]): r["partialFingerprints"] for r in log["runs"][0]["results"]}
    unused = [r for r in later if r["ruleId"] == "unused-grant"]
    assert unused and all(
        before[(r["ruleId"], r["properties"]["identity"])] == r["partialFingerprints"] for r in unused
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ({"version": 1, "locations": [{"identity": "x"}]}, "needs 'identity'"),
        ({"version": 1, "locations": [{"identity": "x", "file": "/etc/passwd"}]}, "relative to the repository"),
        ({"version": 1, "locations": [{"identity": "x", "file": "a.tf", "line": 0}]}, "'line' must be"),
        ({"locations": []}, "expected 'version: 1'"),
    ],
)
def test_a_bad_iac_map_is_one_line(tmp_path, content, message):
    path = tmp_path / "iac.yaml"
    path.write_text(yaml.safe_dump(content))
    run = run_cli("audit", "--aws-dir", ROOT / "fixtures/aws", "--out", tmp_path / "o", "--iac-map", path)
    assert message in one_line_error(run)
