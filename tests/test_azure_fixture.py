"""The Azure fixture audited end to end: evidence states, findings, custom roles and plans."""

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import audit, run_cli

from auditor.connectors.azure.files import AzureFiles

FIXTURE = Path(__file__).parent.parent / "fixtures" / "azure"
NOW = datetime(2026, 11, 21, tzinfo=UTC)
SUB = "3f2b5c1e-8d4a-4b7e-9c21-6a0e5d7f1b42"


@pytest.fixture(scope="module")
def result():
    return audit(AzureFiles.from_dir(FIXTURE), now=NOW)


def _states(result, name: str) -> dict[str, str]:
    rows = result.permissions.filter(pl.col("name") == name)
    return dict(rows.select("action", "state").iter_rows())


def test_agents_are_selected_by_tag_and_humans_are_not(result) -> None:
    agents = set(result.data.identities.filter(pl.col("is_agent"))["name"])
    assert agents == {"func-triage", "uami-deploy-agent", "sp-report-agent", "sp-idle-agent"}
    kinds = dict(result.data.identities.select("name", "kind").iter_rows())
    assert kinds["func-triage"] == "managed_identity" and kinds["sp-report-agent"] == "service_principal"


def test_four_evidence_states(result) -> None:
    states = _states(result, "func-triage")
    assert states["Microsoft.Web/sites/restart/action"] == "used"
    assert states["Microsoft.Storage/storageAccounts/listKeys/action"] == "used"
    assert states["Microsoft.Authorization/roleAssignments/write"] == "denied"  # not granted: Contributor
    assert states["Microsoft.Compute/virtualMachines/delete"] == "unused"
    assert states["Microsoft.Web/sites/read"] == "unobservable"  # GETs are never in the Activity Log
    # Contributor's `*` grants no dataAction, and its notActions take the RBAC writes away
    assert "Microsoft.KeyVault/vaults/secrets/getSecret/action" not in states
    granted = set(result.permissions.filter((pl.col("name") == "func-triage") & pl.col("granted"))["action"])
    assert "Microsoft.Authorization/roleAssignments/write" not in granted
    assert "Microsoft.Authorization/roleAssignments/read" in granted


def test_a_failed_request_that_passed_authorization_is_used(result) -> None:
    assert _states(result, "uami-deploy-agent")["Microsoft.Compute/virtualMachines/delete"] == "used"


def test_data_actions_follow_the_storage_logs(result) -> None:
    blob = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
    # Storage Blob Data Contributor on the one account whose logs cover the whole window
    report = _states(result, "sp-report-agent")
    assert report[f"{blob}/read"] == "used" and report[f"{blob}/write"] == "used"
    assert report[f"{blob}/delete"] == "unused" and report[f"{blob}/move/action"] == "unused"
    # the same role on the subscription: what it did on the logged account is seen, the rest is not
    deploy = result.permissions.filter(
        (pl.col("name") == "uami-deploy-agent") & pl.col("action").str.starts_with(blob) & pl.col("granted")
    )
    states = dict(deploy.select("action", "state").iter_rows())
    assert states[f"{blob}/read"] == "used" and states[f"{blob}/delete"] == "denied"
    reasons = deploy.filter(pl.col("state") == "unobservable")["unobservable_reason"]
    assert set(deploy.filter(pl.col("state") == "unobservable")["action"]) == {
        f"{blob}/write",
        f"{blob}/add/action",
        f"{blob}/move/action",
    }
    assert all(f"granted on /subscriptions/{SUB}" in r and "stagentreports (blob)" in r for r in reasons)
    # no storage logs for Key Vault: its dataActions stay unobservable for everybody
    cognitive = result.permissions.filter(
        (pl.col("name") == "sp-report-agent") & pl.col("action").str.starts_with("Microsoft.CognitiveServices")
    )
    data = cognitive.filter(pl.col("unobservable_reason").str.contains("dataAction"))
    assert data.height > 0 and set(data["state"]) == {"unobservable"}


def test_storage_coverage_is_in_the_report_frame(result) -> None:
    rows = result.data.coverage.filter(pl.col("source").str.starts_with("storage logs"))
    (detail,) = rows["detail"]
    assert "stagentreports (blobservices)" in rows["source"][0] and detail.startswith("covered:")
    assert "AccountKey request (not a call by an identity)" in detail


def test_requests_count_once_across_statuses_and_shapes(result) -> None:
    calls = result.permissions.filter(
        (pl.col("name") == "func-triage") & (pl.col("action") == "Microsoft.Web/sites/restart/action")
    )["calls"][0]
    window = result.window("azure")
    days = (window.end.date() - window.start.date()).days + 1
    assert days - 1 <= calls <= days  # one restart a day, logged Started + Succeeded, boundary day in two files


def test_appid_only_records_map_to_the_principal(result) -> None:
    assert (
        _states(result, "sp-report-agent")["Microsoft.Storage/storageAccounts/blobServices/containers/write"] == "used"
    )


def test_inherited_and_group_grants_say_where_they_come_from(result) -> None:
    names = result.data.identities.filter(pl.col("name").is_in(["uami-deploy-agent", "sp-report-agent"]))
    sources = set(result.data.grants.filter(pl.col("identity").is_in(names["identity"].to_list()))["source"])
    assert any("management group mg-agents (inherited)" in s for s in sources)
    assert any("via group grp-ai-agents" in s for s in sources)


def test_findings(result) -> None:
    by_name = {}
    for name, kind in result.findings.select("name", "kind").iter_rows():
        by_name.setdefault(name, set()).add(kind)
    assert "dormant-identity" in by_name["sp-idle-agent"]
    assert "denied-attempt" in by_name["func-triage"]
    assert "admin-grant" in by_name["uami-deploy-agent"]  # Owner
    assert "privilege-escalation" in by_name["uami-deploy-agent"]  # Owner can write role assignments
    assert "unused-destructive" in by_name["func-triage"]


def test_cli_writes_roles_plans_blocklist_and_report(tmp_path) -> None:
    out = tmp_path / "out"
    run = run_cli("audit", "--azure-dir", FIXTURE, "--out", out)
    assert run.code == 0, run.err
    index = json.loads((out / "policies" / "index.json").read_text())
    entries = index if isinstance(index, list) else next(v for v in index.values() if isinstance(v, list))
    folders = [e["folder"] for e in entries if e["provider"] == "azure"]
    assert len(folders) == len(set(folders)) == 4
    triage = next(e for e in entries if e["name"] == "func-triage")
    roles = [json.loads((out / f).read_text()) for f in triage["files"] if "/role" in f]
    for role in roles:
        assert set(role) >= {
            "Name",
            "IsCustom",
            "Description",
            "Actions",
            "NotActions",
            "DataActions",
            "NotDataActions",
            "AssignableScopes",
        }
        assert all(s.startswith(f"/subscriptions/{SUB}") for s in role["AssignableScopes"])
    narrowed = next(r for r in roles if "Microsoft.Web/sites/restart/action" in r["Actions"])
    assert narrowed["AssignableScopes"] == [f"/subscriptions/{SUB}/resourceGroups/rg-agents"]
    blocklist = yaml.safe_load((out / "blocklist.yaml").read_text())
    assert any(i.get("provider") == "azure" for i in blocklist["identities"])
    assert "func-triage" in (out / "report.md").read_text()


def test_the_conditional_grant_stays_conditional(tmp_path) -> None:
    out = tmp_path / "out"
    assert run_cli("audit", "--azure-dir", FIXTURE, "--out", out).code == 0
    index = json.loads((out / "policies" / "index.json").read_text())
    entries = index if isinstance(index, list) else next(v for v in index.values() if isinstance(v, list))
    report = next(e for e in entries if e["name"] == "sp-report-agent")
    plan = json.loads((out / next(f for f in report["files"] if f.endswith("assignments.json"))).read_text())
    for create in plan["create"]:
        role = next(r for r in plan["roles"] if r["name"] == create["role"])
        document = json.loads((out / role["file"]).read_text())
        holds_blob_role = any("blobServices" in a for a in document["Actions"] + document["DataActions"])
        assert holds_blob_role == bool(create["conditions"])  # the blob role's grant is conditional
    assert any("--condition=" in c for c in report["apply"])


def test_a_rerun_updates_its_own_role_and_keeps_its_assignment(tmp_path) -> None:
    first = tmp_path / "first"
    assert run_cli("audit", "--azure-dir", FIXTURE, "--out", first).code == 0
    snapshot = tmp_path / "snap"
    import shutil

    shutil.copytree(FIXTURE, snapshot)
    index = json.loads((first / "policies" / "index.json").read_text())
    entries = index if isinstance(index, list) else next(v for v in index.values() if isinstance(v, list))
    triage = next(e for e in entries if e["name"] == "func-triage")
    plan = json.loads((first / next(f for f in triage["files"] if f.endswith("assignments.json"))).read_text())
    definitions = json.loads((snapshot / "role-definitions.json").read_text())
    assignments = json.loads((snapshot / "role-assignments.json").read_text())
    for number, role in enumerate(plan["roles"]):
        document = json.loads((first / role["file"]).read_text())
        guid = f"00000000-0000-4000-8000-{number:012d}"
        definitions.append(
            {
                "name": guid,
                "id": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                "roleName": document["Name"],
                "roleType": "CustomRole",
                "assignableScopes": document["AssignableScopes"],
                "permissions": [
                    {
                        "actions": document["Actions"],
                        "notActions": [],
                        "dataActions": document["DataActions"],
                        "notDataActions": [],
                    }
                ],
            }
        )
        for create in (c for c in plan["create"] if c["role"] == document["Name"]):
            assignments.append(
                {
                    "id": f"{create['scope']}/providers/Microsoft.Authorization/roleAssignments/{guid}",
                    "principalId": plan["principalId"],
                    "principalType": "ServicePrincipal",
                    "roleDefinitionId": definitions[-1]["id"],
                    "scope": create["scope"],
                }
            )
    (snapshot / "role-definitions.json").write_text(json.dumps(definitions))
    (snapshot / "role-assignments.json").write_text(json.dumps(assignments))
    second = tmp_path / "second"
    assert run_cli("audit", "--azure-dir", snapshot, "--out", second).code == 0
    index = json.loads((second / "policies" / "index.json").read_text())
    entries = index if isinstance(index, list) else next(v for v in index.values() if isinstance(v, list))
    again = next(e for e in entries if e["name"] == "func-triage")
    assert all("definition update" in c for c in again["apply"] if "definition" in c)
    assert not any("assignment create" in c for c in again["apply"])
    deleted = " ".join(c for c in again["apply"] if "assignment delete" in c)
    assert "00000000-0000-4000-8000" not in deleted and "roleAssignments/" in deleted  # the old Contributor only


def test_bad_input_is_one_line_and_exit_2(tmp_path) -> None:
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(FIXTURE, broken)
    (broken / "role-assignments.json").write_text('[{"principalId": ')
    run = run_cli("audit", "--azure-dir", broken, "--out", tmp_path / "out")
    assert run.code == 2 and len(run.err.strip().splitlines()) == 1 and "role-assignments.json" in run.err
    (broken / "role-assignments.json").unlink()
    run = run_cli("audit", "--azure-dir", broken, "--out", tmp_path / "out")
    assert run.code == 2 and "az role assignment list" in run.err


def test_the_custom_role_keeps_the_used_data_actions_and_the_abac_condition(result) -> None:
    from auditor.emit.azure_role import azure_roles

    blob = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
    report = result.data.identities.filter(pl.col("name") == "sp-report-agent")["identity"][0]
    folders = {a.identity: f"policies/azure/{a.identity}" for a in result.audits if a.provider == "azure"}
    entry = next(e for e in azure_roles(result, folders) if e.identity == report)
    files = {f.path: json.loads(f.content) for f in entry.files}
    plan = next(v for k, v in files.items() if k.endswith("assignments.json"))
    documents = {r["name"]: files[r["file"]] for r in plan["roles"]}
    storage = [c for c in plan["create"] if f"{blob}/read" in documents[c["role"]]["DataActions"]]
    (create,) = storage
    data = set(documents[create["role"]]["DataActions"])
    assert {f"{blob}/read", f"{blob}/write"} <= data and f"{blob}/delete" not in data  # unused: dropped
    assert [c["condition"] for c in create["conditions"]] == [
        "((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})) OR "
        "(@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'reports'))"
    ]
