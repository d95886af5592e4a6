"""The live GCP path: the real google-cloud-logging, google-cloud-resource-manager and
google-cloud-bigquery clients (and IAM / Recommender / Cloud Asset REST) against a local server
answering the real routes. Pagination, quota errors with retry, permission-denied one-liners, and
live == offline."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
from conftest import audit as run_audit
from conftest import one_line_error, run_cli
from gcp_fake import FakeGcp, serve
from google.auth.credentials import AnonymousCredentials
from typer.testing import CliRunner

from auditor.cli import app
from auditor.cli import gcp as cli_gcp
from auditor.connectors.gcp.api import Caller
from auditor.connectors.gcp.files import GcpFiles
from auditor.connectors.gcp.live import CollectOptions, Endpoints, GcpCollector
from auditor.errors import ConnectorError

pytestmark = pytest.mark.slow  # every test here talks to the fake Google server

FIXTURE = Path(__file__).parents[1] / "fixtures" / "gcp"
PROJECT = "acme-agents-prod"
UNTIL = datetime(2026, 11, 21, tzinfo=UTC)
TABLE = "acme-logs.audit.cloudaudit_googleapis_com_*"


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _fixture_entries() -> list[dict[str, Any]]:
    entries = []
    for path in sorted((FIXTURE / "cloudaudit.googleapis.com").rglob("*.json")):
        entries += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    entries += _json(FIXTURE / "logs" / "data_access.json")
    return sorted(entries, key=lambda e: e["timestamp"])


def _aggregate(entries: list[dict[str, Any]], start: str, end: str) -> list[dict[str, Any]]:
    """What the BigQuery aggregation query returns for ``entries`` (computed here in Python)."""
    groups: dict[tuple, list] = defaultdict(lambda: [0, "~", "", set(), set()])
    inside = [e for e in entries if start <= e["timestamp"][:19] + "Z" <= end]
    checked = {
        e["operation"]["id"] for e in inside if e.get("operation") and e["protoPayload"].get("authorizationInfo")
    }
    for e in inside:
        when = e["timestamp"][:19] + "Z"
        payload = e["protoPayload"]
        operation = (e.get("operation") or {}).get("id")
        if not payload.get("authorizationInfo") and operation in checked:
            continue  # the closing entry of a checked operation
        principal = payload.get("authenticationInfo", {}).get("principalEmail")
        checks = payload.get("authorizationInfo") or [None]
        for check in checks:
            permission = check["permission"] if check else None
            key = (
                "acme-agents-prod",
                principal,
                payload["serviceName"],
                None if permission else payload["methodName"],
                permission,
                bool(check and check.get("granted")),
            )
            group = groups[key]
            group[0] += 1
            group[1], group[2] = min(group[1], when), max(group[2], when)
            group[3].add(when[:10])
            group[4].add(operation or e["insertId"])
    return [
        {
            "project": k[0],
            "principal": k[1],
            "service": k[2],
            "method": k[3],
            "permission": k[4],
            "granted": k[5],
            "calls": v[0] if k[4] else len(v[4]),  # COUNT(*), or distinct operations without a check
            "first_seen": v[1],
            "last_seen": v[2],
            "days": sorted(v[3]),
        }
        for k, v in groups.items()
    ]


def make_fake(**overrides: Any) -> FakeGcp:
    roles = {d["name"]: d for d in (_json(p) for p in (FIXTURE / "roles").glob("*.json"))}
    fake = FakeGcp(
        project=PROJECT,
        project_number="482915370164",
        parent="folders/730412958261",
        policies={
            f"projects/{PROJECT}": _json(FIXTURE / "policies" / "projects" / f"{PROJECT}.json"),
            "folders/730412958261": _json(FIXTURE / "policies" / "folders" / "730412958261.json"),
        },
        roles=roles,
        entries=_fixture_entries(),
        service_accounts=_json(FIXTURE / "service-accounts.json"),
        insights=_json(FIXTURE / "insights.json"),
        asset_policies=_json(FIXTURE / "asset-iam-policies.json"),
        folder_parents={"folders/730412958261": "organizations/615287340192"},
        denied={"policy.organizations": "resourcemanager.organizations.getIamPolicy"},
    )
    for key, value in overrides.items():
        setattr(fake, key, value)
    return fake


def collect(fake: FakeGcp, out: Path, **options: Any) -> GcpCollector:
    with serve(fake) as base:
        collector = GcpCollector(
            CollectOptions(PROJECT, days=30, until=UNTIL, **options),
            AnonymousCredentials(),
            Endpoints.single(base),
            caller=Caller(sleep=lambda seconds: None),
        )
        collector.collect(out)
    return collector


def audit(folder: Path):
    return run_audit(GcpFiles.from_dir(folder), until=UNTIL, now=UNTIL)


def _table(result) -> pl.DataFrame:
    return result.permissions.select("identity", "action", "granted", "state", "calls", "denied_calls").sort(
        "identity", "action"
    )


@pytest.fixture(scope="module")
def offline_result():
    return audit(FIXTURE)


def test_collect_pages_retries_quota_errors_and_records_denied_ancestors(tmp_path, offline_result):
    fake = make_fake(page_size_cap=100, quota_errors={"logging.entries": 2, "roles.list": 1})
    collector = collect(fake, tmp_path / "snap")
    calls = [path for _, path, _ in fake.requests]
    assert calls.count("/v2/entries:list") == 11 + 2  # 1,025 entries in the window, 100 a page, 2 quota errors
    assert collector.caller.waited == [1.0, 1.0, 2.0]  # roles.list once, then entries:list twice (backoff)
    first_list = next(body for _, path, body in fake.requests if path == "/v2/entries:list")
    assert first_list["resourceNames"] == [f"projects/{PROJECT}"] and first_list["pageSize"] == 1000
    assert 'timestamp>="2026-10-22T00:00:00Z"' in first_list["filter"]  # explicit: the client would narrow to 24 h
    assert f"/v3/projects/{PROJECT}:getIamPolicy" in calls and "/v3/folders/730412958261:getIamPolicy" in calls
    manifest = _json(tmp_path / "snap" / "manifest.json")
    assert manifest["project"] == PROJECT and manifest["logs"]["entries"] == 1025
    assert manifest["ancestors"] == ["folders/730412958261", "organizations/615287340192"]
    (gap,) = manifest["gaps"]
    assert "resourcemanager.organizations.getIamPolicy denied on organizations/615287340192" in gap["reason"]
    policy = _json(tmp_path / "snap" / "policies" / "projects" / f"{PROJECT}.json")
    assert policy == _json(FIXTURE / "policies" / "projects" / f"{PROJECT}.json")  # gcloud's JSON shape
    # live == offline: the snapshot audits exactly like the exported files
    live = audit(tmp_path / "snap")
    assert _table(live).equals(_table(offline_result))
    assert (
        live.findings.select("identity", "kind", "severity")
        .sort(pl.all())
        .equals(offline_result.findings.select("identity", "kind", "severity").sort(pl.all()))
    )


def test_permission_denied_is_one_line_naming_the_permission(tmp_path):
    fake = make_fake(denied={"logging.entries": "logging.privateLogEntries.list"})
    with pytest.raises(ConnectorError) as raised:
        collect(fake, tmp_path / "snap")
    assert raised.value.one_line() == (
        f"logging.privateLogEntries.list denied on projects/{PROJECT} (grant roles/logging.privateLogViewer "
        "(or a role with logging.privateLogEntries.list) to the identity running auditor)"
    )
    fake = make_fake(denied={"policy.projects": "resourcemanager.projects.getIamPolicy"})
    with pytest.raises(ConnectorError, match=f"^resourcemanager.projects.getIamPolicy denied on projects/{PROJECT}$"):
        collect(fake, tmp_path / "snap2")


def test_cli_collect_error_is_one_line_with_exit_2(tmp_path):
    fake = make_fake(denied={"logging.entries": "logging.privateLogEntries.list"})
    with serve(fake) as base:
        run = run_cli(
            "collect",
            "gcp",
            "--project",
            PROJECT,
            "--out",
            tmp_path / "s",
            "--until",
            "2026-11-21T00:00:00Z",
            "--endpoint",
            base,
        )
    assert one_line_error(run) == (
        f"auditor: error: logging.privateLogEntries.list denied on projects/{PROJECT} (grant "
        "roles/logging.privateLogViewer (or a role with logging.privateLogEntries.list) to the identity running "
        "auditor)"
    )


BIGQUERY_WINDOW = ("2026-10-22T00:00:00Z", "2026-11-21T00:00:00Z")


@pytest.fixture(scope="module")
def bigquery_snapshot(tmp_path_factory):
    """A snapshot collected with --bigquery-table (the aggregated rows come from the fake BigQuery)."""
    rows = _aggregate(_fixture_entries(), *BIGQUERY_WINDOW)
    fake = make_fake(bigquery_rows=rows, page_size_cap=7)
    folder = tmp_path_factory.mktemp("bigquery") / "snap"
    collect(fake, folder, bigquery_table=TABLE)
    return SimpleNamespace(folder=folder, fake=fake, rows=rows)


def test_bigquery_pushdown_queries_once_and_pages_the_rows(bigquery_snapshot, offline_result):
    fake, rows, folder = bigquery_snapshot.fake, bigquery_snapshot.rows, bigquery_snapshot.folder
    inserted = next(body for method, path, body in fake.requests if path.endswith("/jobs") and method == "POST")
    query = inserted["configuration"]["query"]
    assert f"FROM `{TABLE}`" in query["query"] and "UNNEST(protopayload_auditlog.authorizationInfo)" in query["query"]
    start, end = BIGQUERY_WINDOW
    assert {p["name"]: p["parameterValue"]["value"] for p in query["queryParameters"]} == {"start": start, "end": end}
    pages = [path for _, path, _ in fake.requests if "/queries/" in path]
    assert len(pages) == -(-len(rows) // 7)
    assert not (folder / "logs").exists()
    usage = _json(folder / "bigquery-usage.json")
    assert len(usage["rows"]) == len(rows)
    live = audit(folder)
    assert live.window("gcp").end == UNTIL
    same = ["identity", "action", "granted"]
    assert live.permissions.select(same).sort(same).equals(offline_result.permissions.select(same).sort(same))


def test_bigquery_pushdown_gives_the_same_audit(bigquery_snapshot, offline_result):
    live = audit(bigquery_snapshot.folder)
    assert _table(live).equals(_table(offline_result))


def test_audit_gcp_project_collects_then_audits(tmp_path, monkeypatch):
    fake = make_fake()
    with serve(fake) as base:
        monkeypatch.setattr(
            cli_gcp,
            "collect_snapshot",
            partial(cli_gcp.collect_snapshot, endpoint=base, credentials=AnonymousCredentials()),
        )
        result = CliRunner().invoke(
            app,
            [
                "audit",
                "--gcp-project",
                PROJECT,
                "--gcp-snapshot",
                str(tmp_path / "snap"),
                "--until",
                "2026-11-21T00:00:00Z",
                "--out",
                str(tmp_path / "out"),
                "-q",
            ],
        )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "snap" / "manifest.json").is_file()
    report = _json(tmp_path / "out" / "report.json")
    assert {i["identity"].split("@")[0] for i in report["identities"]} == {
        "ops-agent",
        "report-bot",
        "deploy-agent",
        "invoice-agent",
        "data-agent",
    }
    assert any("organizations/615287340192" in g["scope"] for g in report["gaps"])
