"""Properties of the storage-log evidence, whatever the grants, the calls and the holes in the logs:
no action seen for an identity is ever unused; an action is unused only if every assignment granting
it lies within an account the logs cover (all three categories, every day); a hole in an account's
logs makes its actions unobservable again; the custom role still allows every used dataAction."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
from conftest import audit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.connectors.azure.files import AzureFiles
from auditor.emit.azure_role import azure_roles

SUB = "11111111-2222-3333-4444-555555555555"
AGENT = "aaaaaaaa-0000-0000-0000-000000000001"
BLOB = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
#: dataAction -> the category its requests are logged under
ACTIONS = {
    f"{BLOB}/read": "StorageRead",
    f"{BLOB}/write": "StorageWrite",
    f"{BLOB}/add/action": "StorageWrite",
    f"{BLOB}/delete": "StorageDelete",
}
CATEGORIES = ("StorageRead", "StorageWrite", "StorageDelete")
RG = f"/subscriptions/{SUB}/resourceGroups/rg"
ACCOUNTS = {name: f"{RG}/providers/Microsoft.Storage/storageAccounts/{name}" for name in ("a", "b")}
SCOPES = [
    f"/subscriptions/{SUB}",
    RG,
    ACCOUNTS["a"],
    ACCOUNTS["b"],
    f"{ACCOUNTS['a']}/blobServices/default/containers/c",
]
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DAYS = 4  # window 11-16T12:00 .. 11-20T12:00: whole days 17, 18, 19
WHOLE_DAYS = ["2026-11-17", "2026-11-18", "2026-11-19"]
ROLE = "00000000-0000-0000-0000-0000000000d1"

assignments = st.lists(
    st.tuples(st.sampled_from(SCOPES), st.lists(st.sampled_from(sorted(ACTIONS)), min_size=1, max_size=4)),
    min_size=1,
    max_size=3,
)
calls = st.lists(
    st.tuples(
        st.sampled_from(sorted(ACCOUNTS)),
        st.sampled_from(sorted(ACTIONS)),
        st.sampled_from(WHOLE_DAYS),
        st.sampled_from([200, 201, 403, 404]),
    ),
    max_size=6,
)
holes = st.lists(
    st.tuples(st.sampled_from(sorted(ACCOUNTS)), st.sampled_from(WHOLE_DAYS), st.sampled_from(CATEGORIES)),
    max_size=2,
)


def _record(account: str, category: str, when: str, **identity: object) -> dict:
    return {
        "time": when,
        "resourceId": f"{ACCOUNTS[account]}/blobServices/default",
        "category": category,
        "operationName": {"StorageRead": "GetBlob", "StorageWrite": "PutBlob", "StorageDelete": "DeleteBlob"}[category],
        "statusCode": 200,
        "statusText": "Success",
        "correlationId": f"{account}/{category}/{when}",
        "identity": identity or {"type": "AccountKey"},
    }


def _snapshot(root: Path, grant_specs, call_specs, hole_specs) -> None:
    roles = [
        {
            "name": f"{ROLE[:-1]}{i}",
            "roleName": f"blob{i}",
            "roleType": "CustomRole",
            "permissions": [{"actions": [], "notActions": [], "dataActions": actions, "notDataActions": []}],
        }
        for i, (_, actions) in enumerate(grant_specs)
    ]
    (root / "role-definitions.json").write_text(json.dumps(roles))
    rows = [
        {
            "id": f"{scope}/providers/Microsoft.Authorization/roleAssignments/a{i}",
            "principalId": AGENT,
            "principalType": "ServicePrincipal",
            "roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/{roles[i]['name']}",
            "scope": scope,
        }
        for i, (scope, _) in enumerate(grant_specs)
    ]
    (root / "role-assignments.json").write_text(json.dumps(rows))
    operations = [{"name": "p", "operations": [{"name": n, "isDataAction": True} for n in ACTIONS]}]
    operations[0]["operations"].append({"name": "Microsoft.Web/sites/restart/action", "isDataAction": False})
    (root / "provider-operations.json").write_text(json.dumps(operations))
    (root / "service-principals.json").write_text(json.dumps([{"id": AGENT, "tags": ["agent=true"]}]))
    (root / "activity-log").mkdir()
    activity = [  # an Activity Log record every day: its coverage is not what is tested here
        {
            "eventTimestamp": (END - timedelta(days=d)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "operationName": {"value": "Microsoft.Web/sites/restart/action"},
            "status": {"value": "Succeeded"},
            "claims": {"oid": "someone-else"},
            "operationId": f"op{d}",
            "subscriptionId": SUB,
        }
        for d in range(DAYS + 1)
    ]
    (root / "activity-log" / "a.json").write_text(json.dumps(activity))
    records = [
        _record(account, category, f"{(END - timedelta(days=d)).date()}T06:00:00Z")
        for account in ACCOUNTS
        for category in CATEGORIES
        for d in range(DAYS + 1)
    ]
    for number, (account, action, day, status) in enumerate(call_specs):
        record = _record(
            account,
            ACTIONS[action],
            f"{day}T09:{number:02d}:00Z",
            type="OAuth",
            requester={"objectId": AGENT},
            authorization=[{"action": action, "principals": [{"id": AGENT, "type": "ServicePrincipal"}]}],
        )
        record["statusCode"], record["correlationId"] = status, f"call{number}"
        records.append(record)
    kept = [r for r in records if not any(_in_hole(r, hole) for hole in hole_specs)]
    (root / "storage-logs").mkdir()
    (root / "storage-logs" / "PT1H.json").write_text("".join(json.dumps(r) + "\n" for r in kept))


def _in_hole(record: dict, hole: tuple[str, str, str]) -> bool:
    account, day, category = hole
    return record["resourceId"].startswith(ACCOUNTS[account] + "/") and (record["category"], record["time"][:10]) == (
        category,
        day,
    )


def _covered(scope: str, hole_specs) -> bool:
    """The test's own answer: is ``scope`` within an account whose logs have no hole?"""
    return any(
        scope.lower() == path.lower() or scope.lower().startswith(path.lower() + "/")
        for name, path in ACCOUNTS.items()
        if not any(h[0] == name for h in hole_specs)
    )


def _states(grant_specs, call_specs, hole_specs):
    with TemporaryDirectory() as folder:
        root = Path(folder)
        _snapshot(root, grant_specs, call_specs, hole_specs)
        result = audit(AzureFiles.from_dir(root), now=END + timedelta(hours=1), days=DAYS)
    rows = result.permissions.filter((pl.col("identity") == AGENT) & pl.col("granted"))
    return result, dict(rows.select("action", "state").iter_rows())


def _seen(call_specs, hole_specs) -> set[str]:
    """Actions of the agent's requests that are still in the logs after the holes are cut."""
    return {
        action
        for account, action, day, _ in call_specs
        if not any((account, day, ACTIONS[action]) == hole for hole in hole_specs)
    }


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(assignments, calls, holes)
def test_seen_is_never_unused_and_unused_needs_every_grant_covered(grant_specs, call_specs, hole_specs) -> None:
    result, states = _states(grant_specs, call_specs, hole_specs)
    for action in _seen(call_specs, hole_specs) & set(states):
        assert states[action] in ("used", "denied"), (action, states[action])
    for action, state in states.items():
        if state == "unused":
            scopes = [scope for scope, actions in grant_specs if action in actions]
            assert scopes and all(_covered(s, hole_specs) for s in scopes), (action, scopes, hole_specs)
        if all(_covered(s, hole_specs) for s, actions in grant_specs if action in actions):
            assert state != "unobservable", (action, state)  # covered everywhere: the logs can tell
    used = {a for a, s in states.items() if s == "used"}
    (entry,) = azure_roles(result, {AGENT: "policies/azure/x/agent"})
    files = {f.path: json.loads(f.content) for f in entry.files}
    plan = next(v for k, v in files.items() if k.endswith("assignments.json"))
    documents = {r["name"]: files[r["file"]] for r in plan["roles"]}
    allowed = {a for create in plan["create"] for a in documents[create["role"]]["DataActions"]}
    assert used <= allowed, (used, allowed)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(sorted(ACTIONS)), min_size=1, max_size=4),
    st.sampled_from(WHOLE_DAYS),
    st.sampled_from([*CATEGORIES, None]),
)
def test_a_missing_day_or_category_makes_the_account_unobservable_again(actions, day, category) -> None:
    grants = [(ACCOUNTS["a"], actions)]
    _, before = _states(grants, [], [])
    assert set(before.values()) == {"unused"}  # covered, never called
    cut = [("a", day, c) for c in ([category] if category else CATEGORIES)]  # one category, or the whole day
    _, after = _states(grants, [], cut)
    assert set(after.values()) == {"unobservable"}
