"""Azure RBAC inputs: role assignments, role definitions, provider operations, service principals.

Shapes read (what ``az ... -o json`` prints, the ARM REST pages ``{"value": [...]}`` and, for
assignments, ``Get-AzRoleAssignment | ConvertTo-Json``): the user's own export is the catalog, so
nothing here is typed by hand. Everything is parsed into small frozen records; :mod:`grants` turns
them into the normalized frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.errors import InputError
from auditor.fileio import load_json

ASSIGNMENTS_HINT = "export them with `az role assignment list --all --include-inherited --include-groups -o json`"
DEFINITIONS_HINT = "export them with `az role definition list -o json`"
OPERATIONS_HINT = "export them with `az provider operation list -o json`"


def _items(doc: Any, path: Path, what: str, hint: str) -> list[Any]:
    """The entries of a list export, an ARM page ``{"value": [...]}`` or one entry alone."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("value"), list):
        return doc["value"]
    if isinstance(doc, dict):
        return [doc]
    raise InputError(f"{path}: not {what} (a JSON {type(doc).__name__})", hint)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str) and v) if isinstance(value, list) else ()


def guid_of(definition_id: str) -> str:
    """The GUID at the end of a role definition id (the same in every subscription for built-ins)."""
    return definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


# ----------------------------------------------------------------------------- role definitions


@dataclass(frozen=True)
class Permission:
    """One ``permissions[]`` entry of a role definition."""

    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]
    condition: str | None = None
    condition_version: str | None = None


@dataclass(frozen=True)
class RoleDefinition:
    guid: str
    id: str
    role_name: str
    custom: bool
    permissions: tuple[Permission, ...]
    assignable_scopes: tuple[str, ...]


class _Malformed(ValueError):
    """What makes an entry unusable as it is: read it otherwise and the grant could come out wider."""


def _optional_text(key: str, value: Any) -> str | None:
    """A string field that may be absent, null or empty; anything else is malformed (a condition read as
    absent would make its grant unconditional)."""
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"{key} {str(value)[:60]!r} is not a string")
    return value or None


def _permission(raw: Any, index: int) -> Permission:
    if not isinstance(raw, dict):
        raise _Malformed(f"permissions[{index}] is not an object")

    def get(*keys: str) -> tuple[str, ...]:
        key = next((k for k in keys if k in raw), None)
        if key is None or raw[key] is None:
            return ()
        value = raw[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Malformed(f"permissions[{index}].{key} is not a list of strings")
        return tuple(v for v in value if v)

    return Permission(
        get("actions", "Actions"),
        get("notActions", "NotActions", "not_actions"),
        get("dataActions", "DataActions", "data_actions"),
        get("notDataActions", "NotDataActions", "not_data_actions"),
        _optional_text("condition", raw.get("condition")),
        _optional_text("conditionVersion", raw.get("conditionVersion")),
    )


def load_definitions(paths: Iterable[Path]) -> tuple[dict[str, RoleDefinition], list[dict[str, Any]]]:
    """Role definitions by GUID (lower-case), and GAPS rows for entries that are not definitions."""
    found: dict[str, RoleDefinition] = {}
    gaps: list[dict[str, Any]] = []
    for path in paths:
        doc = load_json(path, "the output of `az role definition list -o json`")
        for index, raw in enumerate(_items(doc, path, "a role definition list", DEFINITIONS_HINT)):
            props = raw.get("properties") if isinstance(raw, dict) and isinstance(raw.get("properties"), dict) else raw
            name = _text(raw.get("name")) if isinstance(raw, dict) else None
            role_name = _text(props.get("roleName")) if isinstance(props, dict) else None
            permissions = props.get("permissions") if isinstance(props, dict) else None
            if not name or not role_name or not isinstance(permissions, list):
                gaps.append(_gap(f"{path}[{index}]", "not a role definition (no name / roleName / permissions)"))
                continue
            try:
                parsed = tuple(_permission(p, n) for n, p in enumerate(permissions))
            except _Malformed as exc:
                gaps.append(_gap(f"{path}[{index}] ({role_name})", f"not a role definition as it is: {exc}"))
                continue
            kind = props.get("roleType") or props.get("type")
            found[name.lower()] = RoleDefinition(
                name.lower(),
                _text(raw.get("id")) or f"/providers/Microsoft.Authorization/roleDefinitions/{name.lower()}",
                role_name,
                kind == "CustomRole",
                parsed,
                _strings(props.get("assignableScopes")),
            )
    return found, gaps


# ----------------------------------------------------------------------------- provider operations


def load_operations(paths: Iterable[Path]) -> dict[str, bool]:
    """Every operation name of ``az provider operation list -o json``: name -> isDataAction."""
    found: dict[str, bool] = {}
    for path in paths:
        doc = load_json(path, "the output of `az provider operation list -o json`")
        for provider in _items(doc, path, "a provider operation list", OPERATIONS_HINT):
            if not isinstance(provider, dict):
                continue
            groups = [provider.get("operations")]
            groups += [t.get("operations") for t in provider.get("resourceTypes") or [] if isinstance(t, dict)]
            for group in groups:
                for operation in group or []:
                    name = _text(operation.get("name")) if isinstance(operation, dict) else None
                    if name:
                        found[name] = bool(operation.get("isDataAction"))
    if not found:
        raise InputError(f"{', '.join(map(str, paths))}: no provider operations found", OPERATIONS_HINT)
    return found


# ----------------------------------------------------------------------------- role assignments


@dataclass(frozen=True)
class Assignment:
    id: str
    principal_id: str  # Entra object id, lower-case
    principal_type: str  # ServicePrincipal | User | Group | ForeignGroup | Device | ""
    principal_name: str | None
    role_guid: str
    role_name: str | None
    scope: str
    condition: str | None
    condition_version: str | None

    @property
    def inherited(self) -> bool:
        """Set above any subscription: on the root ``/`` or on a management group."""
        return not self.scope.lower().startswith("/subscriptions/")


def _assignment(raw: Any) -> Assignment | None:
    """The assignment an entry holds; None when it holds none; ``_Malformed`` when it holds one that
    cannot be read as it is (a condition of another shape, a scope that is no ARM scope)."""
    if not isinstance(raw, dict):
        return None
    props = raw.get("properties") if isinstance(raw.get("properties"), dict) else raw
    if "ObjectId" in raw or "RoleAssignmentId" in raw:  # Get-AzRoleAssignment | ConvertTo-Json
        principal, role, scope, ident = raw.get("ObjectId"), raw.get("RoleDefinitionId"), raw.get("Scope"), None
        ident = raw.get("RoleAssignmentId")
        kind, name = raw.get("ObjectType"), raw.get("SignInName") or raw.get("DisplayName")
        role_name, condition, version = raw.get("RoleDefinitionName"), raw.get("Condition"), raw.get("ConditionVersion")
    else:
        principal, role, scope = props.get("principalId"), props.get("roleDefinitionId"), props.get("scope")
        ident, kind, name = raw.get("id"), props.get("principalType"), raw.get("principalName")
        role_name, condition, version = (
            raw.get("roleDefinitionName"),
            props.get("condition"),
            props.get("conditionVersion"),
        )
    if not (_text(principal) and _text(role) and _text(scope)):
        return None
    if not is_scope(scope):
        raise _Malformed(f"scope {scope[:120]!r} is not an ARM scope (/, a management group, a subscription or below)")
    return Assignment(
        _text(ident) or f"{scope}/providers/Microsoft.Authorization/roleAssignments/{raw.get('name', '?')}",
        principal.lower(),
        _text(kind) or "",
        _text(name),
        guid_of(role),
        _text(role_name),
        scope,
        _optional_text("condition", condition),
        _optional_text("conditionVersion", version),
    )


def load_assignments(paths: Iterable[Path]) -> tuple[list[Assignment], list[dict[str, Any]]]:
    found: list[Assignment] = []
    gaps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for path in paths:
        doc = load_json(path, "the output of `az role assignment list --all -o json`")
        for index, raw in enumerate(_items(doc, path, "a role assignment list", ASSIGNMENTS_HINT)):
            try:
                assignment = _assignment(raw)
            except _Malformed as exc:
                gaps.append(
                    _gap(f"{path}[{index}]", f"role assignment not audited, the plans leave it as it is: {exc}")
                )
                continue
            if assignment is None:
                gaps.append(
                    _gap(f"{path}[{index}]", "not a role assignment (no principalId / roleDefinitionId / scope)")
                )
            elif assignment.id.lower() not in seen:
                seen.add(assignment.id.lower())
                found.append(assignment)
    return found, gaps


_MANAGEMENT_GROUPS = "/providers/microsoft.management/managementgroups/"


def is_scope(scope: str) -> bool:
    """``/``, a management group, or a subscription and what lies below it, with no empty, ``.`` or
    ``..`` segment: plans are made at the scopes assignments name, so a scope must mean one place."""
    if scope == "/":
        return True
    parts = scope.split("/")
    if parts[0] != "" or any(part in ("", ".", "..") for part in parts[1:]):
        return False
    lowered = scope.lower()
    return (lowered.startswith("/subscriptions/") and len(parts) >= 3) or (
        lowered.startswith(_MANAGEMENT_GROUPS) and len(parts) == 5
    )


# ----------------------------------------------------------------------------- principals


@dataclass(frozen=True)
class ServicePrincipal:
    object_id: str
    app_id: str | None
    display_name: str | None
    kind: str  # managed_identity | service_principal
    user_assigned: bool
    tags: tuple[tuple[str, str], ...]


def _tags(raw: Any) -> tuple[tuple[str, str], ...]:
    """Service-principal tags are plain strings; ``key=value`` / ``key:value`` become pairs."""
    pairs = []
    for tag in _strings(raw):
        for sep in ("=", ":"):
            if sep in tag:
                key, _, value = tag.partition(sep)
                pairs.append((key.strip(), value.strip()))
                break
        else:
            pairs.append((tag, "true"))
    return tuple(pairs)


def load_service_principals(paths: Iterable[Path]) -> dict[str, ServicePrincipal]:
    """``az ad sp list --all -o json`` (or a Graph page): object id (lower-case) -> principal."""
    found: dict[str, ServicePrincipal] = {}
    for path in paths:
        doc = load_json(path, "the output of `az ad sp list --all -o json`")
        for raw in _items(doc, path, "a service principal list", "export it with `az ad sp list --all -o json`"):
            object_id = _text(raw.get("id")) if isinstance(raw, dict) else None
            if not object_id:
                continue
            names = _strings(raw.get("alternativeNames"))
            managed = raw.get("servicePrincipalType") == "ManagedIdentity"
            found[object_id.lower()] = ServicePrincipal(
                object_id.lower(),
                (_text(raw.get("appId")) or "").lower() or None,
                _text(raw.get("displayName")),
                "managed_identity" if managed else "service_principal",
                managed and any(n.lower() == "isexplicit=true" for n in names),
                _tags(raw.get("tags")),
            )
    return found


def load_resource_tags(paths: Iterable[Path]) -> dict[str, tuple[tuple[str, str], ...]]:
    """ARM tags of managed identities: object id (lower-case) -> tags, from ``managed-identities.json``
    (ARM resources as ``az resource list`` / ``az identity list`` print them). A resource with a
    system-assigned identity lends it its tags; a user-assigned identity is a resource with its own."""
    found: dict[str, tuple[tuple[str, str], ...]] = {}
    hint = 'export them with `az identity list -o json` and `az resource list --query "[?identity]" -o json`'
    for path in paths:
        doc = load_json(path, "ARM resources with managed identities")
        for raw in _items(doc, path, "a resource list", hint):
            if not isinstance(raw, dict) or not isinstance(raw.get("tags"), dict):
                continue
            identity = raw.get("identity") if isinstance(raw.get("identity"), dict) else {}
            props = raw.get("properties") if isinstance(raw.get("properties"), dict) else {}
            principal = _text(identity.get("principalId"))
            if str(raw.get("type", "")).lower() == "microsoft.managedidentity/userassignedidentities":
                principal = _text(props.get("principalId")) or _text(raw.get("principalId"))
            tags = tuple((str(k), str(v)) for k, v in sorted(raw["tags"].items()) if isinstance(k, str))
            if principal and tags:
                found[principal.lower()] = tags
    return found


def load_group_members(paths: Iterable[Path]) -> dict[str, tuple[str, ...]]:
    """``group-members/<group object id>.json`` = ``az ad group member list --group G -o json``."""
    found: dict[str, tuple[str, ...]] = {}
    for path in paths:
        doc = load_json(path, "the output of `az ad group member list --group G -o json`")
        members = _items(doc, path, "a group member list", "export it with `az ad group member list --group G -o json`")
        ids = tuple(m["id"].lower() for m in members if isinstance(m, dict) and _text(m.get("id")))
        found[path.name.split(".", 1)[0].lower()] = ids
    return found


def _gap(scope: str, reason: str, severity: str = "error") -> dict[str, Any]:
    return {"provider": "azure", "account": None, "scope": scope, "reason": reason, "severity": severity, "count": 1}
