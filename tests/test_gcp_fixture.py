"""The bundled demo GCP project: facts about its agents that any correct audit must report, the
generator's determinism, and GCP side by side with AWS in one report."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import audit, run_cli

from auditor.connectors.gcp.files import GcpFiles
from auditor.emit.base import all_policies

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT / "fixtures" / "gcp"
DOMAIN = "@acme-agents-prod.iam.gserviceaccount.com"
AFTER_THE_FIXTURES = datetime(2026, 11, 21, tzinfo=UTC)  # the newest entries are of 2026-11-20


@pytest.fixture(scope="module")
def result():
    return audit(GcpFiles.from_dir(FIXTURE), now=AFTER_THE_FIXTURES)


def states(result, name):
    perms = result.permissions.filter(pl.col("identity") == name + DOMAIN)
    return dict(zip(perms["action"], perms["state"], strict=True))


def kinds(result, name):
    return set(result.findings.filter(pl.col("identity") == name + DOMAIN)["kind"])


def test_agents_are_the_labelled_service_accounts(result):
    agents = set(result.data.identities.filter(pl.col("is_agent"))["identity"])
    assert agents == {n + DOMAIN for n in ("ops-agent", "report-bot", "deploy-agent", "invoice-agent", "data-agent")}
    excluded = result.data.identities.filter(~pl.col("is_agent") & pl.col("selected_by").is_not_null())
    assert set(excluded["kind"]) == {"service_account", "deleted_service_account"}
    assert len(excluded) == 3


def test_ops_agent_editor(result):
    s = states(result, "ops-agent")
    assert "admin-grant" in kinds(result, "ops-agent") and "privilege-escalation" in kinds(result, "ops-agent")
    for used in (
        "compute.instances.stop",
        "compute.instances.start",
        "compute.disks.createSnapshot",
        "compute.snapshots.create",
        "storage.objects.get",
        "storage.objects.create",
    ):
        assert s[used] == "used", used
    assert s["compute.instances.list"] == "used"  # only the recommender saw it (ADMIN_READ logs are off)
    assert s["resourcemanager.projects.setIamPolicy"] == "denied"
    assert s["storage.objects.delete"] == "unused"  # storage DATA_WRITE logs are on
    assert s["compute.instances.delete"] == "unused"  # Admin Activity: always on
    assert s["compute.disks.list"] == "unobservable"
    assert s["logging.logEntries.list"] == "unobservable"  # inherited from the folder, DATA_READ off
    unmapped = result.data.unmapped.filter(pl.col("identity") == "ops-agent" + DOMAIN)
    # the operations' closing entries (no authorizationInfo) count once, with the entry that checked them
    assert set(unmapped["reason"]) == {"GKE pseudo-permission, not an IAM permission"}
    calls = result.permissions.filter(
        (pl.col("identity") == "ops-agent" + DOMAIN) & (pl.col("action") == "compute.instances.stop")
    )["calls"][0]
    assert calls == 93  # 92 audit-log calls and one the recommender saw


def test_calls_mapped_by_their_method_are_not_reported_as_unmappable(result):
    (finding,) = result.findings.filter(
        (pl.col("identity") == "ops-agent" + DOMAIN) & (pl.col("kind") == "unmapped-events")
    ).iter_rows(named=True)
    assert finding["title"] == "4 call(s) could not be mapped to a permission"
    assert "compute.instances.stop" not in finding["detail"]


def test_report_bot_and_data_agent(result):
    report = states(result, "report-bot")
    assert report["bigquery.jobs.create"] == report["bigquery.tables.getData"] == "used"
    assert report["bigquery.datasets.create"] == "denied"
    assert report["storage.objects.get"] == "used"  # granted on the bucket (asset inventory)
    data = states(result, "data-agent")
    assert data["storage.objects.create"] == "used"
    assert data["storage.objects.get"] == "unobservable"  # exempted from DATA_READ
    reason = result.permissions.filter(
        (pl.col("identity") == "data-agent" + DOMAIN) & (pl.col("action") == "storage.objects.get")
    )["unobservable_reason"][0]
    assert "exempted" in reason


def test_deploy_agent_impersonated_and_invoice_agent_dormant(result):
    deploy = states(result, "deploy-agent")
    assert deploy["run.services.update"] == deploy["iam.serviceAccounts.actAs"] == "used"
    assert deploy["storage.objects.create"] == "used"  # the bucket's own policy allows it
    assert "used-not-granted" in kinds(result, "deploy-agent")
    (notes,) = result.data.identities.filter(pl.col("identity") == "deploy-agent" + DOMAIN)["notes"].to_list()
    assert any("ci-runner@acme-ci.iam.gserviceaccount.com" in note for note in notes)
    assert "dormant-identity" in kinds(result, "invoice-agent")
    assert not any(states(result, "invoice-agent")[p] == "used" for p in states(result, "invoice-agent"))


def test_policies_alternatives_and_notes(result):
    by_name = {p.identity.split("@")[0]: p for p in all_policies(result)}
    assert "roles/storage.objectCreator" in by_name["data-agent"].alternative
    assert "resource-level" in by_name["report-bot"].note
    assert "folders/730412958261" in by_name["ops-agent"].note
    # deploy-agent holds roles/cloudbuild.builds.editor only under a condition: its permissions get a role of
    # their own, bound with that same condition
    deploy = by_name["deploy-agent"]
    folder = "policies/gcp/acme-agents-prod/service_account/deploy-agent"
    assert deploy.folder == folder
    assert {f.path for f in deploy.files} == {
        f"{folder}/{name}" for name in ("role.yaml", "role.condition-1.yaml", "condition-1.yaml", "bindings.json")
    }
    files = {f.path.rsplit("/", 1)[1]: f.content for f in deploy.files}
    condition = yaml.safe_load(files["condition-1.yaml"])
    assert condition["title"] == "until-2027"
    assert "cloudbuild.builds.create" in yaml.safe_load(files["role.condition-1.yaml"])["includedPermissions"]
    assert "cloudbuild.builds.create" not in yaml.safe_load(files["role.yaml"])["includedPermissions"]
    plan = json.loads(files["bindings.json"])
    assert plan["schema"] == "auditor.gcp-bindings-plan/v1" and plan["member"] == f"serviceAccount:deploy-agent{DOMAIN}"
    assert [a["condition"] for a in plan["add"]] == [None, condition]
    assert {"role": "roles/cloudbuild.builds.editor", "condition": condition} in plan["remove"]
    assert any(c.endswith(f"--condition-from-file={folder}/condition-1.yaml") for c in deploy.apply)
    ops_role = yaml.safe_load(next(f.content for f in by_name["ops-agent"].files if f.path.endswith("role.yaml")))
    assert "compute.instances.stop" in ops_role["includedPermissions"]
    assert "compute.instances.delete" not in ops_role["includedPermissions"]


def test_generator_is_deterministic_and_matches_the_committed_fixture(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "fixtures" / "generate_gcp.py"), "--out", str(tmp_path / "g")],
        check=True,
        capture_output=True,
    )
    generated = {
        p.relative_to(tmp_path / "g").as_posix(): p.read_bytes() for p in (tmp_path / "g").rglob("*") if p.is_file()
    }
    committed = {p.relative_to(FIXTURE).as_posix(): p.read_bytes() for p in FIXTURE.rglob("*") if p.is_file()}
    assert generated.keys() == committed.keys()
    assert [k for k in generated if generated[k] != committed[k]] == []


def test_aws_and_gcp_side_by_side_in_one_report(tmp_path):
    out = tmp_path / "out"
    run = run_cli("audit", "--aws-dir", ROOT / "fixtures" / "aws", "--gcp-dir", FIXTURE, "--out", out)
    assert run.code == 0, run.err
    report = json.loads((out / "report.json").read_text())
    assert {i["provider"] for i in report["identities"]} == {"aws", "gcp"}
    assert set(report["catalogs"]) == {"aws", "gcp"}
    assert set(report["windows"]) == {"aws", "gcp"}  # one window per cloud, each ending at its own newest event
    assert report["windows"]["aws"]["end"] == "2026-11-20T23:59:46Z"
    assert report["windows"]["gcp"]["end"] == "2026-11-20T23:42:57Z"
    blocklist = yaml.safe_load((out / "blocklist.yaml").read_text())
    gcp = [i for i in blocklist["identities"] if i["provider"] == "gcp"]
    ops = next(i for i in gcp if i["identity"] == "ops-agent" + DOMAIN)
    assert any("compute.instances.delete" in g["permissions"] for g in ops["deny"])
    assert any(a["permission"] == "compute.instances.stop" for a in ops["require_approval"])
    markdown = (out / "report.md").read_text()
    assert "account / project" in markdown and "## Reported, not audited" in markdown
    assert (out / "policies" / "gcp" / "acme-agents-prod" / "service_account" / "ops-agent" / "role.yaml").is_file()
    assert (out / "policies" / "aws" / "123456789012" / "role" / "support-bot" / "policy.json").is_file()
    gcp_line = next(line for line in run.out.splitlines() if line.startswith("gcp ") and "ops-agent" in line)
    assert gcp_line
