"""The shipped collector role (auditor/azure-auditor-role.json) allows every ARM call the collector
makes, in both usage modes, and nothing else: the auditor passes its own audit."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure_fake import SUB, WORKSPACE, FakeAzure, serve

from auditor.connectors.azure.arm import Endpoints, StaticToken, Transport
from auditor.connectors.azure.live import AzureCollector, CollectOptions
from auditor.matching import any_glob_regex

ROLE = json.loads((Path(__file__).parents[1] / "auditor" / "azure-auditor-role.json").read_text())
#: Running a query needs these three: Microsoft's documented pattern for table-level read access
#: (workspace read, query read, and the table's own query action).
QUERY_ACTIONS = (
    "Microsoft.OperationalInsights/workspaces/read",
    "Microsoft.OperationalInsights/workspaces/query/read",
    "Microsoft.OperationalInsights/workspaces/query/AzureActivity/read",
)


def arm_operation(method: str, path: str) -> str:
    """The RBAC operation an ARM request checks: the resource provider namespace after the last
    ``/providers/`` (``Microsoft.Resources`` without one), the resource types (every other segment;
    names in between), and the verb."""
    parts = re.split(r"/providers/", path, flags=re.IGNORECASE)
    tail = parts[-1].strip("/").split("/")
    namespace, segments = (tail[0], tail[1:]) if len(parts) > 1 else ("Microsoft.Resources", tail)
    types = segments[0::2]
    verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method, "action")
    return "/".join([namespace, *types, verb])


def test_the_route_mapping_matches_known_operations() -> None:
    assert (
        arm_operation("GET", f"/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values")
        == "Microsoft.Insights/eventtypes/values/read"
    )
    assert (
        arm_operation("GET", f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/abc")
        == "Microsoft.Authorization/roleDefinitions/read"
    )
    assert arm_operation(
        "DELETE", "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
    ) == ("Microsoft.Compute/virtualMachines/delete")


@pytest.mark.slow
def test_the_collector_role_allows_exactly_what_the_collector_calls(tmp_path: Path) -> None:
    fake = FakeAzure(unlisted_definitions={"acdd72a7-3385-48ef-bd42-f606fba81ae7"})
    with serve(fake, tmp_path) as served:
        transport = Transport(StaticToken(), Endpoints.single(served.url), served.ca_file, backoff=0.01)
        until, now = datetime(2026, 11, 20, 12, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)
        for name, workspace in (("logs", None), ("workspace", WORKSPACE)):
            options = CollectOptions(SUB, 30, until, workspace, management_group="mg-agents")
            AzureCollector(options, transport, now=now).collect(tmp_path / name)
    allowed = any_glob_regex(ROLE["Actions"])
    needed: set[str] = set()
    graph: set[str] = set()
    for method, path, _ in fake.requests:
        route = fake.route(method, path)
        if route.startswith("graph."):
            graph.add(route)  # Microsoft Graph permissions, not Azure RBAC (README: Application.Read.All ...)
            continue
        actions = QUERY_ACTIONS if route == "logs.query" else (arm_operation(method, path),)
        for action in actions:
            assert allowed.fullmatch(action), (method, path, action)
            needed.add(action)
    assert graph == {"graph.principals", "graph.members"}
    assert {a.lower() for a in ROLE["Actions"]} == {a.lower() for a in needed}  # nothing beyond what is used
    assert all(a.lower().endswith("/read") for a in ROLE["Actions"])  # no write, delete or action
    assert ROLE["NotActions"] == ROLE["DataActions"] == ROLE["NotDataActions"] == []
    assert "*" not in "".join(ROLE["Actions"])


def test_the_role_is_what_az_role_definition_create_takes() -> None:
    assert {"Name", "Description", "Actions", "AssignableScopes"} <= set(ROLE)
    assert ROLE["AssignableScopes"] and all(s.startswith("/subscriptions/") for s in ROLE["AssignableScopes"])
