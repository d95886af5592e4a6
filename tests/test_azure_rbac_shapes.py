"""Role assignments and definitions of another shape than Azure writes: said, and never read so that a
grant comes out wider (a condition dropped, an exclusion ignored, a plan at a scope nobody assigned)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli

from auditor.connectors.azure.rbac import is_scope, load_assignments, load_definitions

FIXTURE = Path(__file__).parents[1] / "fixtures" / "azure"
CONDITIONED = "d2677ef1"  # the fixture's principal whose storage assignment holds an ABAC condition


def _altered(tmp_path: Path, name: str, change) -> Path:
    folder = tmp_path / "azure"
    shutil.copytree(FIXTURE, folder)
    doc = json.loads((folder / name).read_text())
    change(doc)
    (folder / name).write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize("condition", [{"x": 1}, 42, False, True, ["a"], {"expression": "true"}])
def test_a_condition_of_another_shape_leaves_the_assignment_out_never_unconditional(condition, tmp_path):
    def change(assignments):
        for entry in assignments:
            if entry["principalId"].startswith(CONDITIONED):
                entry["condition"] = condition

    folder = _altered(tmp_path, "role-assignments.json", change)
    assignments, gaps = load_assignments([folder / "role-assignments.json"])
    assert not any(a.principal_id.startswith(CONDITIONED) and "Storage" in a.scope for a in assignments)
    assert any("condition" in g["reason"] and "not audited" in g["reason"] for g in gaps)
    assert run_cli("audit", "--azure-dir", folder, "--out", tmp_path / "out", "-q").code in (0, 1)
    for plan in (tmp_path / "out" / "policies").rglob("assignments.json"):
        for create in json.loads(plan.read_text()).get("create", []):
            assert CONDITIONED not in json.dumps(create) or create.get("conditions"), create
    line = one_line_error(run_cli("audit", "--azure-dir", folder, "--out", tmp_path / "strict", "--strict", "-q"))
    assert "condition" in line


@pytest.mark.parametrize(
    "scope",
    ["garbage", "subscriptions/3f2b5c1e", "/subscriptions/3f2b5c1e/resourceGroups/", "/subscriptions/a/../b", "//"],
)
def test_a_scope_that_is_no_arm_scope_is_said_and_planned_nowhere(scope, tmp_path):
    def change(assignments):
        assignments[0]["scope"] = scope

    folder = _altered(tmp_path, "role-assignments.json", change)
    assignments, gaps = load_assignments([folder / "role-assignments.json"])
    assert scope not in {a.scope for a in assignments}
    (gap,) = gaps
    assert gap["scope"].endswith("role-assignments.json[0]") and "is not an ARM scope" in gap["reason"]


@pytest.mark.parametrize(
    "scope, valid",
    [
        ("/", True),
        ("/providers/Microsoft.Management/managementGroups/mg1", True),
        ("/subscriptions/s1", True),
        ("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a", True),
        ("/subscriptions", False),
        ("/providers/Microsoft.Management/managementGroups", False),
        ("/subscriptions/s1/", False),
        ("/subscriptions/s1/./rg", False),
        ("/tenants/t1", False),
    ],
)
def test_arm_scopes(scope, valid):
    assert is_scope(scope) is valid


@pytest.mark.parametrize(
    "change, said",
    [
        (lambda p: p.update(actions="*"), "actions is not a list of strings"),
        (lambda p: p.update(actions=[1]), "actions is not a list of strings"),
        (lambda p: p.update(notActions="Microsoft.Authorization/*/Write"), "notActions is not a list of strings"),
        (lambda p: p.update(condition=5), "condition '5' is not a string"),
    ],
)
def test_a_role_definition_of_another_shape_is_not_resolved(change, said, tmp_path):
    def edit(definitions):
        for entry in definitions:
            if entry["roleName"] == "Contributor":
                change(entry["permissions"][0])

    folder = _altered(tmp_path, "role-definitions.json", edit)
    definitions, gaps = load_definitions([folder / "role-definitions.json"])
    assert "Contributor" not in {d.role_name for d in definitions.values()}
    (gap,) = gaps
    assert "(Contributor)" in gap["scope"] and said in gap["reason"]


def test_a_permission_entry_that_is_not_an_object_is_said(tmp_path):
    def edit(definitions):
        for entry in definitions:
            if entry["roleName"] == "Contributor":
                entry["permissions"] = [None]

    folder = _altered(tmp_path, "role-definitions.json", edit)
    _, gaps = load_definitions([folder / "role-definitions.json"])
    assert [g["reason"] for g in gaps] == ["not a role definition as it is: permissions[0] is not an object"]
