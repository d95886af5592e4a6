"""The GCP bindings plans of one audit: each safe to apply on its own, all of them in any order.

A plan names (role, condition, member), never array positions, so applying the plans of every
identity of the bundled project in sequence, in reverse and one at a time gives the same policy,
and touches no member but the planned ones; a permission granted only under a condition keeps it.
"""

import itertools
import json
from pathlib import Path

import pytest
import yaml
from conftest import FakeSource, audit, grant, identity, use
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from auditor.catalog import Catalog
from auditor.cli.app import app
from auditor.emit.gcp_role import PLAN_SCHEMA, apply_bindings_plan
from auditor.emit.write import write_outputs

FIXTURE = Path(__file__).parents[1] / "fixtures" / "gcp"
POLICY = json.loads((FIXTURE / "policies" / "projects" / "acme-agents-prod.json").read_text())


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    out = tmp_path_factory.mktemp("gcp") / "out"
    result = CliRunner().invoke(app, ["audit", "--gcp-dir", str(FIXTURE), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    found = sorted((out / "policies" / "gcp").rglob("bindings.json"))
    assert len(found) >= 4
    return [json.loads(p.read_text()) for p in found]


def _normal(policy):
    """A policy as a set of (role, condition, member): the order of bindings and members is not meaning."""
    return {
        (b["role"], json.dumps(b.get("condition"), sort_keys=True), m)
        for b in policy.get("bindings", [])
        for m in b.get("members", [])
    }


def _apply(policy, plans):
    for plan in plans:
        policy = apply_bindings_plan(policy, plan)
    return policy


def test_every_plan_is_keyed_by_role_and_member(plans):
    for plan in plans:
        assert plan["schema"] == PLAN_SCHEMA and plan["member"].startswith("serviceAccount:")
        assert not any("/" in str(k) for item in plan["remove"] + plan["add"] for k in item if k != "role")


def test_plans_give_one_policy_in_any_order(plans):
    forward = _normal(_apply(POLICY, plans))
    assert forward == _normal(_apply(POLICY, list(reversed(plans))))
    for order in itertools.islice(itertools.permutations(plans), 24):
        assert _normal(_apply(POLICY, order)) == forward


def test_a_plan_touches_only_its_member_and_lands_exactly_its_bindings(plans):
    before = _normal(POLICY)
    after = _normal(_apply(POLICY, plans))
    planned = {p["member"] for p in plans}
    assert {t for t in before if t[2] not in planned} == {t for t in after if t[2] not in planned}
    for plan in plans:
        mine = {(r, c) for r, c, m in after if m == plan["member"]}
        kept = {
            (r, c)
            for r, c, m in before
            if m == plan["member"] and (r, json.loads(c)) not in [(x["role"], x["condition"]) for x in plan["remove"]]
        }
        added = {(a["role"], json.dumps(a["condition"], sort_keys=True)) for a in plan["add"]}
        assert mine == kept | added


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_applying_is_idempotent_and_order_free_for_random_plans(data):
    roles = ["roles/a", "roles/b", "projects/p/roles/c"]
    conditions = [None, {"expression": "request.time < timestamp('2030-01-01T00:00:00Z')", "title": "t"}]
    members = [f"serviceAccount:s{i}@p.iam.gserviceaccount.com" for i in range(3)]
    binding = st.tuples(st.sampled_from(roles), st.sampled_from([0, 1]))
    policy = {
        "bindings": [
            {"role": r, "members": sorted(set(ms)), **({"condition": conditions[c]} if c else {})}
            for (r, c), ms in data.draw(
                st.dictionaries(binding, st.lists(st.sampled_from(members), min_size=1), max_size=4)
            ).items()
        ]
    }
    plans = [
        {
            "member": m,
            "remove": [{"role": r, "condition": conditions[c]} for r, c in data.draw(st.lists(binding, max_size=3))],
            "add": [{"role": r, "condition": conditions[c]} for r, c in data.draw(st.lists(binding, max_size=2))],
        }
        for m in data.draw(st.lists(st.sampled_from(members), unique=True, max_size=3))
    ]
    once = _normal(_apply(policy, plans))
    assert once == _normal(_apply(policy, list(reversed(plans))))
    assert once == _normal(_apply(_apply(policy, plans), plans))


def test_a_permission_granted_only_under_a_condition_gets_a_role_bound_with_that_condition(tmp_path):
    sa = "agent@p1.iam.gserviceaccount.com"
    expiry = {"expression": 'request.time < timestamp("2027-01-01T00:00:00Z")', "title": "until 2027"}
    where = {"account": "p1", "provider": "gcp", "source_kind": "binding", "member": f"serviceAccount:{sa}"}
    viewer = grant(sa, ["storage.objects.get"], "projects/p1", policy="roles/viewer", scope="projects/p1", **where)
    admin = grant(
        sa,
        ["storage.objects.delete", "storage.objects.get"],
        "projects/p1",
        policy="roles/storage.admin",
        scope="projects/p1",
        condition=json.dumps(expiry, sort_keys=True),
        source="roles/storage.admin on projects/p1",
        **where,
    )
    calls = [use(sa, p, account="p1", provider="gcp") for p in ("storage.objects.get", "storage.objects.delete")]
    levels = {"storage.objects.get": "Read", "storage.objects.delete": "Write"}
    source = FakeSource(
        [identity(sa, account="p1", provider="gcp", kind="service_account", member=f"serviceAccount:{sa}")],
        [viewer, admin],
        calls,
        catalog_of=Catalog("gcp", levels, "test roles", service_separator="."),
        provider="gcp",
    )
    write_outputs(audit(source), tmp_path / "out")
    folder = tmp_path / "out" / "policies" / "gcp" / "p1" / "service_account" / "agent"
    plain = yaml.safe_load((folder / "role.yaml").read_text())["includedPermissions"]
    conditional = yaml.safe_load((folder / "role.condition-1.yaml").read_text())["includedPermissions"]
    assert plain == ["storage.objects.get"]  # also granted without a condition: none needed
    assert conditional == ["storage.objects.delete"]  # granted only until 2027: stays so
    plan = json.loads((folder / "bindings.json").read_text())
    assert sorted((a["condition"] is not None, a["condition"] or {}) == (True, expiry) for a in plan["add"]) == [
        False,
        True,
    ]
    assert yaml.safe_load((folder / "condition-1.yaml").read_text()) == expiry
