"""GCP grants: policies, role definitions, principals, agent selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import RULES as ALL_RULES
from gcp_builders import binding, policy, role, sa

from auditor.connectors.gcp.iam import (
    build_grants,
    load_roles,
    load_service_accounts,
    parse_asset_policies,
    parse_policy,
    principal_of,
    service_account_labels,
)
from auditor.connectors.gcp.rules import GcpRules
from auditor.errors import InputError
from auditor.selection import AgentSelector

RULES = GcpRules.of(ALL_RULES)
BOT = sa("bot")
ROLES = {
    "roles/editor": role("roles/editor", "compute.instances.stop", "storage.objects.create"),
    "roles/logging.viewer": role("roles/logging.viewer", "logging.logEntries.list"),
    "projects/p1/roles/custom": role("projects/p1/roles/custom", "run.services.update"),
}


def _roles(tmp_path):
    (tmp_path / "roles").mkdir()
    (tmp_path / "roles" / "all.json").write_text(json.dumps(list(ROLES.values())))
    roles, gaps = load_roles([tmp_path / "roles"])
    assert not gaps
    return roles


def test_principals_as_written_in_bindings():
    assert principal_of(f"serviceAccount:{BOT}").kind == "service_account"
    assert principal_of("user:a@x.com").identity == "a@x.com"
    wif = "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/subject/s"
    assert principal_of(wif).identity == wif
    deleted = principal_of(f"deleted:serviceAccount:{BOT}?uid=123")
    assert (deleted.identity, deleted.kind) == (f"deleted:serviceAccount:{BOT}", "deleted_service_account")
    for member in ("group:g@x.com", "domain:x.com", "allUsers", "allAuthenticatedUsers", "principalSet://x/y"):
        assert principal_of(member) is None


def test_labels_come_from_labels_or_description_words():
    assert service_account_labels({"description": "Deploys things. agent=true team=sre"}) == {
        "agent": "true",
        "team": "sre",
    }
    assert service_account_labels({"labels": {"agent": "yes"}, "description": "agent=false"}) == {"agent": "yes"}


def test_grants_one_row_per_binding_member_with_origin_and_condition(tmp_path):
    condition = {"title": "t", "expression": "request.time < timestamp('2027-01-01T00:00:00Z')"}
    project = parse_policy(
        policy(
            binding("roles/editor", "group:g@x.com", f"serviceAccount:{BOT}"),
            binding("projects/p1/roles/custom", f"serviceAccount:{BOT}", condition=condition),
        ),
        "projects/p1",
        "project.json",
    )
    folder = parse_policy(policy(binding("roles/logging.viewer", f"serviceAccount:{BOT}")), "folders/9", "f.json")
    grants = build_grants(
        "p1", [project, folder], _roles(tmp_path), {BOT: {"description": "agent=true"}}, AgentSelector(), RULES
    )
    rows = {r["source"]: r for r in grants.grants.iter_rows(named=True)}
    assert set(rows) == {
        "roles/editor on projects/p1",
        "projects/p1/roles/custom on projects/p1",
        "roles/logging.viewer on folders/9 (inherited)",
    }
    editor = rows["roles/editor on projects/p1"]
    assert editor["statement_id"] == "projects/p1#/bindings/0/members/1"
    assert editor["source_kind"] == "admin-role" and editor["resources"] == ["projects/p1"]
    assert editor["actions"] == ["compute.instances.stop", "storage.objects.create"]
    assert json.loads(rows["projects/p1/roles/custom on projects/p1"]["condition"]) == condition
    assert (editor["policy"], editor["scope"], editor["member"]) == (
        "roles/editor",
        "projects/p1",
        f"serviceAccount:{BOT}",
    )
    inherited = rows["roles/logging.viewer on folders/9 (inherited)"]
    assert (inherited["policy"], inherited["scope"]) == ("roles/logging.viewer", "folders/9")
    (identity,) = grants.identities.iter_rows(named=True)
    assert identity["is_agent"] and identity["selected_by"] == "tag agent=true"
    assert identity["member"] == f"serviceAccount:{BOT}" and identity["kind"] == "service_account"
    assert identity["tags"] == [{"key": "agent", "value": "true"}] and identity["path"] is None
    assert json.loads(identity["attributes"]) == {"description": "agent=true"}  # display only
    (custom,) = grants.managed.iter_rows(named=True)  # the custom role a re-run updates
    assert (custom["account"], custom["kind"], custom["name"], custom["id"]) == (
        "p1",
        "role",
        "custom",
        "projects/p1/roles/custom",
    )


def test_deleted_accounts_and_service_agents_are_reported_not_audited(tmp_path):
    agent = "service-123@gcp-sa-cloudbuild.iam.gserviceaccount.com"
    project = parse_policy(
        policy(
            binding(
                "roles/editor",
                f"serviceAccount:{agent}",
                f"deleted:serviceAccount:{BOT}?uid=1",
                "serviceAccount:123@cloudservices.gserviceaccount.com",
            )
        ),
        "projects/p1",
        "p.json",
    )
    grants = build_grants("p1", [project], _roles(tmp_path), {}, AgentSelector(everyone=True), RULES)
    ids = {r["identity"]: r for r in grants.identities.iter_rows(named=True)}
    assert not any(r["is_agent"] for r in ids.values())
    deleted = ids[f"deleted:serviceAccount:{BOT}"]
    assert deleted["selected_by"].startswith("deleted service account")
    assert deleted["kind"] == "deleted_service_account" and not deleted["service_linked"]
    assert "remove the bindings" in deleted["selected_by"] and "roles/editor on projects/p1" in deleted["selected_by"]
    assert ids[agent]["selected_by"].startswith("Google-managed service agent")
    assert grants.gaps.is_empty()  # a deleted account is reported through selected_by, not as an input problem


def test_a_role_without_definition_is_a_gap_naming_the_export_command(tmp_path):
    project = parse_policy(policy(binding("roles/run.admin", f"serviceAccount:{BOT}")), "projects/p1", "p.json")
    grants = build_grants("p1", [project], _roles(tmp_path), {}, AgentSelector(everyone=True), RULES)
    (gap,) = grants.gaps.iter_rows(named=True)
    assert gap["severity"] == "error" and "gcloud iam roles describe roles/run.admin" in gap["reason"]
    assert grants.grants["actions"].to_list() == [[]]


def test_asset_search_gives_resource_level_policies():
    doc = [
        {"resource": "//cloudresourcemanager.googleapis.com/projects/p1", "policy": {"bindings": []}},
        {"resource": "//storage.googleapis.com/b1", "policy": {"bindings": [binding("roles/x", "user:a@x.com")]}},
    ]
    (bucket,) = parse_asset_policies(doc, "assets.json")
    assert bucket.level == "resource" and bucket.bindings[0].role == "roles/x"


def test_malformed_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="not an IAM policy"):
        parse_policy(["x"], "projects/p1", "p.json")
    with pytest.raises(InputError, match=r"bindings\[0\] has no role"):
        parse_policy({"bindings": [{"members": []}]}, "projects/p1", "p.json")
    (tmp_path / "r.json").write_text('{"name": "roles/x"')
    with pytest.raises(InputError, match="invalid JSON"):
        load_roles([tmp_path / "r.json"])
    (tmp_path / "r.json").write_text('[{"title": "no name"}]')
    roles, gaps = load_roles([tmp_path / "r.json"])
    assert not roles and "not a role definition" in gaps[0]["reason"]


def test_yaml_role_definitions_are_read(tmp_path):
    (tmp_path / "r.yaml").write_text("name: roles/x\ntitle: X\nstage: GA\nincludedPermissions:\n- a.b.get\n")
    roles, _ = load_roles([tmp_path / "r.yaml"])
    assert roles["roles/x"].permissions == ("a.b.get",)


def test_a_deleted_account_is_never_the_live_account_that_now_has_its_email(tmp_path):
    project = parse_policy(
        policy(
            binding("roles/logging.viewer", f"serviceAccount:{BOT}"),
            binding("roles/editor", f"deleted:serviceAccount:{BOT}?uid=999"),
            binding("roles/editor", f"user:{BOT}"),  # not a user: left out, said
        ),
        "projects/p1",
        "p.json",
    )
    grants = build_grants(
        "p1", [project], _roles(tmp_path), {BOT: {"description": "agent=true"}}, AgentSelector(), RULES
    )
    live = grants.grants.filter(grants.grants["identity"] == BOT)
    assert live["source"].to_list() == ["roles/logging.viewer on projects/p1"]
    assert set(grants.identities["identity"]) == {BOT, f"deleted:serviceAccount:{BOT}"}
    (gap,) = grants.gaps.iter_rows(named=True)
    assert gap["scope"] == "p.json: bindings[2] (roles/editor on projects/p1)" and "as a user" in gap["reason"]


@pytest.mark.parametrize(
    "condition",
    [
        {},
        False,
        True,
        "request.time < timestamp('2027-01-01T00:00:00Z')",
        [{"expression": "true"}],
        {"title": "t"},
        {"expression": 42},
        {"expression": " "},
        {"expression": "true", "title": 5},
    ],
)
def test_a_condition_of_another_shape_leaves_its_binding_out_never_unconditional(condition, tmp_path):
    doc = policy(
        binding("roles/logging.viewer", f"serviceAccount:{BOT}"), binding("roles/editor", f"serviceAccount:{BOT}")
    )
    doc["bindings"][1]["condition"] = condition
    project = parse_policy(doc, "projects/p1", "p.json")
    grants = build_grants(
        "p1", [project], _roles(tmp_path), {BOT: {"description": "agent=true"}}, AgentSelector(), RULES
    )
    assert grants.grants["source"].to_list() == ["roles/logging.viewer on projects/p1"]
    (gap,) = grants.gaps.iter_rows(named=True)
    assert gap["scope"] == "p.json: bindings[1] (roles/editor on projects/p1)"
    assert "is not an {expression, title} object" in gap["reason"] and gap["severity"] == "error"


@pytest.mark.parametrize("members", [f"serviceAccount:{BOT}", [42, None, f"serviceAccount:{BOT}"]])
def test_members_of_another_shape_are_said(members, tmp_path):
    doc = policy(binding("roles/editor"))
    doc["bindings"][0]["members"] = members
    grants = build_grants(
        "p1", [parse_policy(doc, "projects/p1", "p.json")], _roles(tmp_path), {}, AgentSelector(everyone=True), RULES
    )
    (gap,) = grants.gaps.iter_rows(named=True)
    assert gap["scope"] == "p.json: bindings[0] (roles/editor on projects/p1)"
    assert grants.grants.height == (1 if isinstance(members, list) else 0)


@pytest.mark.parametrize("doc", [{"wrapped": [{"email": BOT}]}, {"accounts": {"email": BOT}}, "x", 5])
def test_a_service_account_export_of_another_shape_is_one_error_naming_it(doc, tmp_path):
    path = tmp_path / "service-accounts.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"{path}: not a service-account list"):
        load_service_accounts([path])


@pytest.mark.parametrize("doc, emails", [([], []), ({}, []), ({"accounts": [{"email": BOT}]}, [BOT])])
def test_service_account_exports_gcloud_and_the_api_write(doc, emails, tmp_path):
    path = tmp_path / "service-accounts.json"
    path.write_text(json.dumps(doc))
    assert list(load_service_accounts([path])) == emails


def test_googles_own_policy_example_keeps_its_condition_and_raises_no_problem():
    """tests/data/real/gcp/google-iam-v1-policy-example.json (SOURCES.md): the conditional shape as Google writes it."""
    real = Path(__file__).parent / "data" / "real" / "gcp" / "google-iam-v1-policy-example.json"
    parsed = parse_policy(json.loads(real.read_text()), "organizations/1", str(real))
    assert parsed.problems == ()
    (conditional,) = [b for b in parsed.bindings if b.condition]
    assert conditional.role == "roles/resourcemanager.organizationViewer"
    assert conditional.condition["title"] == "expirable access" and conditional.members == ("user:eve@example.com",)
