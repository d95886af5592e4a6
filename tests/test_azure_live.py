"""The live Azure path: the real azure-mgmt-authorization, azure-mgmt-monitor and azure-monitor-query
clients (and Graph on the azure-core pipeline) over HTTPS against a local server answering the real
routes, with their real bearer-token policy. Paging, throttling, refusals, and live == offline."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from azure_fake import SUB, WORKSPACE, FakeAzure, serve
from conftest import audit, one_line_error, run_cli

from auditor.connectors.azure import live
from auditor.connectors.azure.arm import Endpoints, StaticToken, Transport
from auditor.connectors.azure.files import AzureFiles
from auditor.connectors.azure.live import AzureCollector, CollectOptions, day_ranges
from auditor.errors import ConnectorError, InputError
from auditor.selection import AgentSelector

pytestmark = pytest.mark.slow  # every test here talks to the fake Azure server

FIXTURE = Path(__file__).parents[1] / "fixtures" / "azure"
UNTIL = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 21, tzinfo=UTC)
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def _collect(url: str, ca: Path, out: Path, **options: Any) -> Path:
    transport = Transport(StaticToken(), Endpoints.single(url), ca, retries=options.pop("retries", 3), backoff=0.01)
    settings = {"days": 30, "until": UNTIL, **options}
    return AzureCollector(CollectOptions(SUB, **settings), transport, now=NOW).collect(out)


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Both usage modes collected once; Reader is only answered by get_by_id (a role the
    subscription's list does not return), and the first Activity Log page is throttled once."""
    folder = tmp_path_factory.mktemp("azure-live")
    fake = FakeAzure(unlisted_definitions={READER}, throttle={"activity": 1})
    with serve(fake, folder) as served:
        logs = _collect(served.url, served.ca_file, folder / "logs")
        workspace = _collect(served.url, served.ca_file, folder / "workspace", workspace=WORKSPACE)
    return fake, logs, workspace


def _states(result: Any) -> dict[tuple[str, str], tuple[str, int]]:
    rows = result.permissions.select("name", "action", "state", "calls").iter_rows()
    return {(name, action): (state, calls) for name, action, state, calls in rows}


@pytest.fixture(scope="module")
def offline() -> Any:
    source = AzureFiles.from_dir(FIXTURE)
    source.storage_log_paths = ()  # the live collector reads no storage resource logs
    return audit(source, now=NOW, until=UNTIL)


@pytest.mark.parametrize("mode", ["logs", "workspace"])
def test_live_audit_equals_offline_audit_of_the_fixture(collected: Any, offline: Any, mode: str) -> None:
    _, logs, workspace = collected
    snapshot = logs if mode == "logs" else workspace
    result = audit(AzureFiles.from_dir(snapshot), now=NOW)
    window, expected = result.window("azure"), offline.window("azure")
    assert (window.start, window.end) == (expected.start, expected.end)
    assert _states(result) == _states(offline)
    agents = set(result.data.identities.filter(pl.col("is_agent"))["name"])
    assert agents == {"func-triage", "uami-deploy-agent", "sp-report-agent", "sp-idle-agent"}  # Graph tags
    states = _states(result)
    assert states[("func-triage", "Microsoft.Authorization/roleAssignments/write")][0] == "denied"
    assert states[("func-triage", "Microsoft.Web/sites/read")][0] == "unobservable"
    assert states[("sp-idle-agent", "Microsoft.Compute/virtualMachines/delete")][0] == "unused"


def test_the_snapshot_has_the_offline_layout_and_a_fixed_window(collected: Any) -> None:
    _, logs, workspace = collected
    manifest = json.loads((logs / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["subscription"] == SUB
    assert manifest["window"] == {"start": "2026-10-21T12:00:00Z", "end": "2026-11-20T12:00:00Z"}
    assert manifest["usage"]["days"] == 31  # one request per UTC day of the window
    names = {p.name for p in logs.iterdir()}
    assert {"role-assignments.json", "role-definitions.json", "provider-operations.json"} <= names
    assert {"service-principals.json", "group-members", "activity-log"} <= names
    definitions = {d["name"] for d in json.loads((logs / "role-definitions.json").read_text())}
    assert READER in definitions  # fetched by id
    assert not (workspace / "activity-log").exists() and (workspace / "log-analytics-usage.json").is_file()
    source = AzureFiles.from_dir(logs)
    assert source.collected_at() == NOW


def test_pages_days_and_filters_are_the_real_ones(collected: Any) -> None:
    fake, _, _ = collected
    activity = [q for m, p, q in fake.requests if fake.route(m, p) == "activity"]
    filters = [q["$filter"] for q in activity if "$skiptoken" not in q]
    assert all(f.startswith("eventTimestamp ge '") and "and eventTimestamp le '" in f for f in filters)
    assert any("$skiptoken" in q for q in activity)  # nextLink followed
    assert all(q.get("api-version") == "2015-04-01" for q in activity)
    assignments = [q for m, p, q in fake.requests if fake.route(m, p) == "assignments"]
    assert len(assignments) >= 2 and assignments[0].get("api-version") == "2022-04-01"
    operations = [q for m, p, q in fake.requests if fake.route(m, p) == "operations"]
    assert operations[0].get("$expand") == "resourceTypes"
    members = [p for m, p, q in fake.requests if fake.route(m, p) == "graph.members"]
    assert members and all(p.endswith("/transitiveMembers") for p in members)


def test_every_call_carries_the_bearer_token_over_https(collected: Any) -> None:
    fake, _, _ = collected
    assert fake.authorization and set(fake.authorization) == {"Bearer auditor-test-server"}


def test_throttled_once_is_retried_after_the_servers_wait(collected: Any) -> None:
    fake, _, _ = collected
    activity = [q for m, p, q in fake.requests if fake.route(m, p) == "activity"]
    first = activity[0]["$filter"]
    assert [q["$filter"] for q in activity].count(first) >= 2  # the 429 answer, then the same request again


def test_persistent_throttling_is_one_line(tmp_path: Path) -> None:
    fake = FakeAzure(throttle={"assignments": 100}, retry_after="0")
    with serve(fake, tmp_path) as served, pytest.raises(ConnectorError) as caught:
        _collect(served.url, served.ca_file, tmp_path / "snap", retries=2)
    assert "still throttled (HTTP 429)" in caught.value.one_line()
    assert len(fake.requests) == 3  # the first try and the two retries, then it stops


def _cli(served: Any, out: Path, *extra: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(live, "utc_now", lambda: NOW)
    return run_cli(
        "collect", "azure", "--subscription", SUB, "--out", out, "--until", "2026-11-20T12:00:00Z",
        "--endpoint", served.url, "--ca-bundle", served.ca_file, *extra,
    )  # fmt: skip


def test_a_refused_call_names_the_action_and_the_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAzure(denied={"assignments": "Microsoft.Authorization/roleAssignments/read"})
    with serve(fake, tmp_path) as served:
        line = one_line_error(_cli(served, tmp_path / "snap", monkeypatch=monkeypatch))
    assert line == (
        f"auditor: error: Microsoft.Authorization/roleAssignments/read denied on /subscriptions/{SUB} "
        "(AuthorizationFailed) (assign the collector role: see auditor/azure-auditor-role.json)"
    )


def test_a_refused_workspace_query_names_the_table_action(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAzure(denied={"logs.query": "-"})
    with serve(fake, tmp_path) as served:
        line = one_line_error(_cli(served, tmp_path / "snap", "--workspace", WORKSPACE, monkeypatch=monkeypatch))
    assert "Microsoft.OperationalInsights/workspaces/query/AzureActivity/read denied on workspace" in line
    assert "azure-auditor-role.json" in line


def test_the_cli_writes_a_snapshot_the_audit_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(FakeAzure(), tmp_path) as served:
        run = _cli(served, tmp_path / "snap", monkeypatch=monkeypatch)
    assert run.code == 0, run.err
    assert run.out.strip().endswith(f"(audit it with --azure-dir {tmp_path / 'snap'})")
    audited = run_cli("audit", "--azure-dir", tmp_path / "snap", "--out", tmp_path / "out", "--fail-on", "none")
    assert audited.code == 0, audited.err
    assert (tmp_path / "out" / "report.json").is_file()


def test_graph_refused_is_a_gap_and_agents_fall_back_to_globs(tmp_path: Path) -> None:
    fake = FakeAzure(denied={"graph.principals": "-", "graph.members": "-"})
    with serve(fake, tmp_path) as served:
        snapshot = _collect(served.url, served.ca_file, tmp_path / "snap")
    reasons = [g["reason"] for g in json.loads((snapshot / "manifest.json").read_text())["gaps"]]
    assert any("service principals" in r and "Application.Read.All" in r for r in reasons)
    assert any("members of group" in r and "GroupMember.Read.All" in r for r in reasons)
    with pytest.raises(InputError, match="no agent identities selected"):  # no tags without Graph
        audit(AzureFiles.from_dir(snapshot), now=NOW)
    func_triage = json.loads((FIXTURE / "service-principals.json").read_text())[0]["id"]
    result = audit(AzureFiles.from_dir(snapshot), now=NOW, selector=AgentSelector(globs=(func_triage,)))
    assert list(result.data.identities.filter(pl.col("is_agent"))["identity"]) == [func_triage]
    gaps = " ".join(result.data.gaps["reason"])
    assert "Application.Read.All" in gaps  # the manifest's gaps are the report's input problems


def test_a_partial_workspace_answer_is_an_input_problem(tmp_path: Path) -> None:
    fake = FakeAzure(partial_query=True)
    with serve(fake, tmp_path) as served:
        snapshot = _collect(served.url, served.ca_file, tmp_path / "snap", workspace=WORKSPACE)
    document = json.loads((snapshot / "log-analytics-usage.json").read_text())
    assert document["partial_error"].startswith("PartialError") and document["rows"]
    gaps = json.loads((snapshot / "manifest.json").read_text())["gaps"]
    assert gaps[0]["severity"] == "error" and "partial result" in gaps[0]["reason"]


def test_more_than_ninety_days_back_is_refused_before_any_call(tmp_path: Path) -> None:
    fake = FakeAzure()
    with serve(fake, tmp_path) as served, pytest.raises(InputError, match="the Activity Log keeps 90 days"):
        _collect(served.url, served.ca_file, tmp_path / "snap", days=91, until=NOW)
    assert fake.requests == [] and not (tmp_path / "snap").exists()


def test_a_workspace_must_be_a_guid(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a Log Analytics workspace id"):
        _collect("https://127.0.0.1:9", tmp_path / "ca.pem", tmp_path / "snap", workspace="AzureActivity | take 1")


def test_day_ranges_cover_the_window_without_gaps() -> None:
    start, end = datetime(2026, 10, 21, 12, tzinfo=UTC), datetime(2026, 11, 20, 12, tzinfo=UTC)
    ranges = day_ranges(start, end)
    assert ranges[0][0] == start and ranges[-1][1] == end and len(ranges) == 31
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_a_management_group_adds_the_assignments_made_there(tmp_path: Path) -> None:
    fake = FakeAzure(hide_inherited=True)  # a subscription list without the assignments above it
    with serve(fake, tmp_path) as served:
        alone = _collect(served.url, served.ca_file, tmp_path / "alone")
        grouped = _collect(served.url, served.ca_file, tmp_path / "grouped", management_group="mg-agents")
    atscope = [q for m, p, q in fake.requests if p.startswith("/providers/Microsoft.Management/managementGroups/")]
    assert atscope and any(q.get("$filter") == "atScope()" for q in atscope)

    def sources(snapshot: Path) -> set[str]:
        return set(audit(AzureFiles.from_dir(snapshot), now=NOW).data.grants["source"])

    inherited = "Reader at management group mg-agents (inherited)"
    assert inherited not in sources(alone) and inherited in sources(grouped)
    assert json.loads((grouped / "manifest.json").read_text())["management_group"] == "mg-agents"


class _NoCredential:
    """What DefaultAzureCredential raises when no source works."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.exceptions import ClientAuthenticationError

        raise ClientAuthenticationError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials.\nAttempted ..."
        )


def test_missing_credentials_are_one_line_before_anything_is_sent(tmp_path: Path) -> None:
    fake = FakeAzure()
    with serve(fake, tmp_path) as served, pytest.raises(ConnectorError) as caught:
        transport = Transport(_NoCredential(), Endpoints.single(served.url), served.ca_file)
        AzureCollector(CollectOptions(SUB, 30, UNTIL), transport, now=NOW).collect(tmp_path / "snap")
    line = caught.value.one_line()
    assert line.startswith("no usable Azure credentials (DefaultAzureCredential failed") and "\n" not in line
    assert "az login" in line and fake.requests == []
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text())
    assert manifest["complete"] is False  # an interrupted snapshot is refused by the audit
    with pytest.raises(InputError, match="did not finish"):
        AzureFiles.from_dir(tmp_path / "snap")


def test_arm_tags_of_managed_identities_select_agents_without_graph(tmp_path: Path) -> None:
    principals = {p["displayName"]: p["id"] for p in json.loads((FIXTURE / "service-principals.json").read_text())}
    tagged = {principals["func-triage"]: {"agent": "true"}, principals["uami-deploy-agent"]: {"Agent": "yes"}}
    fake = FakeAzure(arm_tags=tagged, denied={"graph.principals": "-", "graph.members": "-"})
    with serve(fake, tmp_path) as served:
        snapshot = _collect(served.url, served.ca_file, tmp_path / "snap")
    written = json.loads((snapshot / "managed-identities.json").read_text())
    assert len(written) == 2  # the site's system-assigned identity and the user-assigned one, not the storage account
    result = audit(AzureFiles.from_dir(snapshot), now=NOW)
    selected = dict(result.data.identities.filter(pl.col("is_agent")).select("identity", "selected_by").iter_rows())
    assert selected == {principals["func-triage"]: "tag agent=true", principals["uami-deploy-agent"]: "tag Agent=yes"}
