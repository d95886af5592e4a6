"""Property: the custom roles allow every used operation and nothing outside today's grant (scope and
condition included), whatever the roles, scopes and activity."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

from conftest import audit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.connectors.azure.files import AzureFiles
from auditor.emit.azure_role import azure_roles, within

SUB = "11111111-2222-3333-4444-555555555555"
AGENT = "aaaaaaaa-0000-0000-0000-000000000001"
OPS = [
    ("Microsoft.Storage/storageAccounts/read", False),
    ("Microsoft.Storage/storageAccounts/write", False),
    ("Microsoft.Storage/storageAccounts/delete", False),
    ("Microsoft.Storage/storageAccounts/listKeys/action", False),
    ("Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read", True),
    ("Microsoft.Compute/virtualMachines/write", False),
    ("Microsoft.Compute/virtualMachines/delete", False),
    ("Microsoft.Web/sites/restart/action", False),
]
PATTERNS = ["*", "*/read", "Microsoft.Storage/*", "Microsoft.Compute/*", *[n for n, _ in OPS]]
SCOPES = [
    f"/subscriptions/{SUB}",
    f"/subscriptions/{SUB}/resourceGroups/rg1",
    f"/subscriptions/{SUB}/resourceGroups/rg2",
    "/providers/Microsoft.Management/managementGroups/mg",
]
NOW = datetime(2026, 11, 21, tzinfo=UTC)

roles = st.lists(
    st.tuples(
        st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=3),
        st.lists(st.sampled_from(PATTERNS), max_size=2),
        st.lists(st.sampled_from(PATTERNS), max_size=2),
    ),
    min_size=1,
    max_size=3,
)
assignments = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(SCOPES), st.booleans()), min_size=1, max_size=4)
calls = st.lists(
    st.tuples(st.sampled_from([n for n, d in OPS if not d]), st.sampled_from(["rg1", "rg2", "rg3"])), max_size=8
)


def _snapshot(root: Path, role_specs, assignment_specs, call_specs) -> None:
    definitions = [
        {
            "name": f"00000000-0000-0000-0000-00000000000{i}",
            "roleName": f"role{i}",
            "roleType": "CustomRole",
            "permissions": [{"actions": a, "notActions": n, "dataActions": d, "notDataActions": []}],
        }
        for i, (a, n, d) in enumerate(role_specs)
    ]
    (root / "role-definitions.json").write_text(json.dumps(definitions))
    rows = []
    for number, (role, scope, conditional) in enumerate(assignment_specs):
        role %= len(role_specs)
        rows.append(
            {
                "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/a{number}",
                "principalId": AGENT,
                "principalType": "ServicePrincipal",
                "roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{definitions[role]['name']}",
                "scope": scope,
                "condition": "@Resource[name] StringEquals 'x'" if conditional else None,
                "conditionVersion": "2.0" if conditional else None,
            }
        )
    rows.append(
        {
            "id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/anchor",
            "principalId": "bbbbbbbb-0000-0000-0000-000000000002",
            "principalType": "User",
            "roleDefinitionId": "/x/00000000-0000-0000-0000-000000000000",
            "scope": f"/subscriptions/{SUB}",
        }
    )
    (root / "role-assignments.json").write_text(json.dumps(rows))
    operations = [{"name": "p", "operations": [{"name": n, "isDataAction": d} for n, d in OPS]}]
    (root / "provider-operations.json").write_text(json.dumps(operations))
    (root / "service-principals.json").write_text(
        json.dumps([{"id": AGENT, "displayName": "agent", "tags": ["agent=true"]}])
    )
    (root / "activity-log").mkdir()
    records = [
        {
            "eventTimestamp": (NOW - timedelta(days=1, minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "operationName": {"value": op},
            "status": {"value": "Succeeded"},
            "category": {"value": "Administrative"},
            "authorization": {"action": op, "scope": f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/x/y"},
            "claims": {"oid": AGENT},
            "operationId": f"op{i}",
            "subscriptionId": SUB,
        }
        for i, (op, rg) in enumerate(call_specs)
    ]
    records.append(
        {
            "eventTimestamp": (NOW - timedelta(days=29)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "operationName": {"value": "x/y/write"},
            "status": {"value": "Succeeded"},
            "claims": {"oid": "someone-else"},
            "subscriptionId": SUB,
        }
    )
    (root / "activity-log" / "a.json").write_text(json.dumps(records))


def _granted_at(result, action: str, scope: str, condition: str | None) -> bool:
    a = result.audit_of("azure", AGENT)
    for stmt in a.effective[action].statements:
        where = stmt.scope if stmt.scope.startswith("/subscriptions/") else f"/subscriptions/{SUB}"
        if within(scope, where) and (stmt.condition is None or stmt.condition == condition):
            return True
    return False


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roles, assignments, calls)
def test_roles_allow_every_used_operation_and_nothing_outside_the_grant(
    role_specs, assignment_specs, call_specs
) -> None:
    with TemporaryDirectory() as folder:
        root = Path(folder)
        _snapshot(root, role_specs, assignment_specs, call_specs)
        result = audit(AzureFiles.from_dir(root), now=NOW)
    (entry,) = azure_roles(result, {AGENT: "policies/azure/x/agent"})
    files = {f.path: json.loads(f.content) for f in entry.files}
    plan = next(v for k, v in files.items() if k.endswith("assignments.json"))
    documents = {r["name"]: files[r["file"]] for r in plan["roles"]}
    allowed: set[str] = set()
    for create in plan["create"]:
        document = documents[create["role"]]
        condition = None
        if create["conditions"]:
            (c,) = create["conditions"]
            condition = json.dumps(
                {"Azure ABAC": {"condition": c["condition"], "version": c["conditionVersion"]}}, sort_keys=True
            )
        assert create["scope"] in document["AssignableScopes"]
        for action in document["Actions"] + document["DataActions"]:
            assert _granted_at(result, action, create["scope"], condition), (action, create)
            allowed.add(action)
    a = result.audit_of("azure", AGENT)
    used = {op for op, _ in call_specs if op in a.effective}
    assert used <= allowed
