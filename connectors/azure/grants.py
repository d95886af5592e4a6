"""Azure grants: one GRANTS row per (role assignment, permissions[] entry, holder).

A row's actions are concrete operation names: (actions − notActions) expanded over the control-plane
operations plus (dataActions − notDataActions) over the data-plane ones, because ``actions: ["*"]``
never grants a dataAction and ``notActions`` only subtracts within its own entry (it is not a Deny:
another assignment can still grant the operation). ABAC conditions stay on the row, so a permission
granted only under a condition is never treated as unconditional. Inherited assignments (root ``/``,
management groups) and group assignments are grants too; ``source`` says where they come from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from auditor import model
from auditor.catalog import Catalog
from auditor.connectors.azure.normalized import condition_json
from auditor.connectors.azure.rbac import Assignment, Permission, RoleDefinition, ServicePrincipal
from auditor.connectors.azure.rules import AzureRules
from auditor.connectors.base import GrantSet
from auditor.selection import AgentSelector


@dataclass(frozen=True)
class Operations:
    """The two halves of the catalog: control-plane operations and dataActions."""

    control: Catalog
    data: Catalog

    def granted(self, permission: Permission) -> list[str]:
        actions = self.control.expand(permission.actions) - self.control.expand(permission.not_actions)
        data = self.data.expand(permission.data_actions) - self.data.expand(permission.not_data_actions)
        return sorted(actions | data)


def scope_label(scope: str) -> str:
    lowered = scope.lower()
    if scope == "/":
        return "root / (inherited)"
    if lowered.startswith("/providers/microsoft.management/managementgroups/"):
        return f"management group {scope.rsplit('/', 1)[-1]} (inherited)"
    return scope


@dataclass
class _Holder:
    object_id: str
    kind: str
    name: str
    rows: list[dict[str, Any]]


def build_grants(
    subscription: str,
    assignments: Sequence[Assignment],
    definitions: Mapping[str, RoleDefinition],
    operations: Operations,
    principals: Mapping[str, ServicePrincipal],
    groups: Mapping[str, Sequence[str]],
    selector: AgentSelector,
    rules: AzureRules,
    resource_tags: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> GrantSet:
    holders: dict[str, _Holder] = {}
    gaps: list[dict[str, Any]] = []
    missing: dict[str, set[str]] = {}
    for assignment in assignments:
        role = definitions.get(assignment.role_guid)
        if role is None:
            missing.setdefault(assignment.role_name or assignment.role_guid, set()).add(assignment.scope)
        if assignment.principal_type.lower() in ("group", "foreigngroup"):
            members = groups.get(assignment.principal_id)
            if members is None:
                gaps.append(
                    model.gap(
                        "azure",
                        subscription,
                        assignment.id,
                        f"assigned to group {assignment.principal_name or assignment.principal_id}, whose members are "
                        "not in the snapshot: its grants are not counted (export them with "
                        f"`az ad group member list --group {assignment.principal_id} -o json` "
                        f"> group-members/{assignment.principal_id}.json)",
                        "warning",
                    )
                )
                continue
            via = f" via group {assignment.principal_name or assignment.principal_id}"
            targets = [(m, "") for m in members]
        else:
            via = ""
            targets = [(assignment.principal_id, assignment.principal_type)]
        for object_id, principal_type in targets:
            holder = holders.get(object_id)
            if holder is None:
                holder = holders[object_id] = _holder(object_id, principal_type, assignment, principals)
            holder.rows += _rows(subscription, object_id, assignment, role, operations, rules, via)
    for role_name, scopes in sorted(missing.items()):
        gaps.append(
            model.gap(
                "azure",
                subscription,
                f"role {role_name}",
                f"assigned on {', '.join(sorted(scopes))} but not among the role definitions: its operations are not "
                "counted (export them with `az role definition list -o json`)",
            )
        )
    arm_tags = resource_tags or {}
    identities = [
        _identity_row(subscription, h, principals.get(h.object_id), selector, arm_tags.get(h.object_id, ()))
        for h in holders.values()
    ]
    return GrantSet(
        identities=model.frame(identities, model.IDENTITIES),
        grants=model.frame([r for h in holders.values() for r in h.rows], model.GRANTS),
        managed=model.frame(_custom_roles(subscription, definitions), model.MANAGED),
        gaps=model.frame(gaps, model.GAPS),
    )


def _holder(
    object_id: str, principal_type: str, assignment: Assignment, principals: Mapping[str, ServicePrincipal]
) -> _Holder:
    known = principals.get(object_id)
    if known is not None:
        return _Holder(object_id, known.kind, known.display_name or object_id, [])
    direct = principal_type and assignment.principal_id == object_id
    kind = {"user": "user", "serviceprincipal": "service_principal"}.get(principal_type.lower(), "principal")
    name = (assignment.principal_name if direct else None) or object_id
    return _Holder(object_id, kind, name, [])


def _rows(
    subscription: str,
    object_id: str,
    assignment: Assignment,
    role: RoleDefinition | None,
    operations: Operations,
    rules: AzureRules,
    via: str,
) -> list[dict[str, Any]]:
    name = role.role_name if role else (assignment.role_name or assignment.role_guid)
    source = f"{name} at {scope_label(assignment.scope)}{via}"
    kind = "admin-role" if assignment.role_guid in rules.admin_roles else "role-assignment"
    permissions = role.permissions if role else (Permission((), (), (), ()),)
    return [
        {
            "provider": "azure",
            "account": subscription,
            "identity": object_id,
            "statement_id": f"{assignment.id}#/permissions/{index}" + (f"@{object_id}" if via else ""),
            "layer": "identity",
            "effect": "Allow",
            "actions": operations.granted(permission),
            "not_action": False,
            "resources": [assignment.scope],
            "not_resource": False,
            "condition": condition_json(
                (assignment.condition, assignment.condition_version),
                (permission.condition, permission.condition_version),
            ),
            "source": source,
            "source_kind": kind,
            "policy": role.id if role else assignment.role_guid,
            "scope": assignment.scope,
            "member": assignment.id,
        }
        for index, permission in enumerate(permissions)
    ]


def _identity_row(
    subscription: str,
    holder: _Holder,
    principal: ServicePrincipal | None,
    selector: AgentSelector,
    arm_tags: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    tags = {**dict(arm_tags), **(dict(principal.tags) if principal else {})}  # Graph tags win
    reason = selector.reason(holder.object_id, holder.name, tags)
    if reason is None and principal and principal.app_id:
        reason = selector.reason(principal.app_id, holder.name, tags)
    notes = []
    if principal and principal.kind == "managed_identity":
        notes.append(
            "user-assigned managed identity" if principal.user_assigned else "system-assigned managed identity"
        )
    attributes = {"app_id": principal.app_id} if principal and principal.app_id else {}
    return {
        "provider": "azure",
        "account": subscription,
        "identity": holder.object_id,
        "name": holder.name,
        "kind": holder.kind,
        "path": None,
        "is_agent": reason is not None,
        "selected_by": reason,
        "created": None,
        "last_used": None,
        "tags": [{"key": k, "value": v} for k, v in sorted(tags.items())],
        "service_linked": False,
        "disabled": False,
        "member": holder.object_id,
        "groups": [],
        "instance_profiles": [],
        "notes": notes,
        "attributes": json.dumps(attributes, sort_keys=True) if attributes else None,
    }


def _custom_roles(subscription: str, definitions: Mapping[str, RoleDefinition]) -> list[dict[str, Any]]:
    """Custom roles of the snapshot, so a monthly re-run updates its own role instead of creating it."""
    return [
        {"provider": "azure", "account": subscription, "kind": "role", "name": d.role_name, "id": d.id}
        for d in sorted(definitions.values(), key=lambda d: d.role_name)
        if d.custom
    ]
