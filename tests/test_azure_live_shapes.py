"""What the collector writes (the SDK models' REST serialization) reads exactly like what ``az``
prints: the same Activity Log records, the same role assignments and definitions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from azure.mgmt.authorization.v2022_04_01.models import RoleAssignment, RoleDefinition
from azure.mgmt.monitor.models import EventData
from azure_fake import arm_assignment, arm_definition, fixture_events

from auditor.connectors.azure import rbac
from auditor.connectors.azure.activity_records import normalize

FIXTURE = Path(__file__).parents[1] / "fixtures" / "azure"


def _written(model: type, raw: dict) -> dict:
    """``raw`` through the SDK model, as the collector writes it."""
    return model.deserialize(raw).serialize(keep_readonly=True)


def test_serialized_event_data_normalizes_like_the_az_output() -> None:
    records = json.loads((FIXTURE / "activity-log" / "az-activity-log.json").read_text())
    assert records
    for raw in records:
        expected, got = normalize(raw), normalize(_written(EventData, raw))
        assert got.time[:23] == expected.time[:23]  # the SDK keeps milliseconds
        assert dataclasses.replace(got, time="") == dataclasses.replace(expected, time="")


def test_the_fake_serves_the_fixtures_records() -> None:
    """The generator's records (what the fake serves) are the fixture's: its az export verbatim."""
    exported = json.loads((FIXTURE / "activity-log" / "az-activity-log.json").read_text())
    last_day = exported[-1]["eventTimestamp"][:10]
    assert [e for e in fixture_events() if e["eventTimestamp"][:10] <= last_day] == exported


def test_serialized_assignments_and_definitions_read_like_the_az_exports(tmp_path: Path) -> None:
    flat = json.loads((FIXTURE / "role-assignments.json").read_text())
    written = [_written(RoleAssignment, arm_assignment(a)) for a in flat]
    (tmp_path / "a.json").write_text(json.dumps(written))
    from_az, _ = rbac.load_assignments([FIXTURE / "role-assignments.json"])
    from_sdk, gaps = rbac.load_assignments([tmp_path / "a.json"])
    assert not gaps
    # ARM has no az additions (principalName, roleDefinitionName): names come from Graph and the definitions
    assert [dataclasses.replace(a, principal_name=None, role_name=None) for a in from_az] == from_sdk
    definitions = json.loads((FIXTURE / "role-definitions.json").read_text())
    (tmp_path / "d.json").write_text(json.dumps([_written(RoleDefinition, arm_definition(d)) for d in definitions]))
    expected, _ = rbac.load_definitions([FIXTURE / "role-definitions.json"])
    got, gaps = rbac.load_definitions([tmp_path / "d.json"])
    assert not gaps and {g: (d.role_name, d.custom, d.permissions) for g, d in got.items()} == {
        g: (d.role_name, d.custom, d.permissions) for g, d in expected.items()
    }


def test_arm_tags_belong_to_the_identity_a_resource_carries(tmp_path: Path) -> None:
    site_mi, uami, other = "11111111-0000-0000-0000-000000000001", "22222222-0000-0000-0000-000000000002", "3" * 32
    resources = [
        {  # az resource list: a web app with its system-assigned identity and a user-assigned one attached
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app",
            "type": "Microsoft.Web/sites",
            "tags": {"agent": "true"},
            "identity": {
                "principalId": site_mi.upper(),
                "type": "SystemAssigned, UserAssigned",
                "userAssignedIdentities": {"/subscriptions/s/.../uami": {"principalId": other}},
            },
        },
        {  # az identity list (flattened)
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u",
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "principalId": uami,
            "tags": {"team": "ml"},
        },
        {"id": "/subscriptions/s/x", "type": "Microsoft.Storage/storageAccounts", "tags": {"agent": "true"}},
        {"id": "/subscriptions/s/y", "type": "Microsoft.Web/sites", "tags": None, "identity": {"principalId": other}},
    ]
    (tmp_path / "managed-identities.json").write_text(json.dumps(resources))
    assert rbac.load_resource_tags([tmp_path / "managed-identities.json"]) == {
        site_mi: (("agent", "true"),),
        uami: (("team", "ml"),),
    }
