"""Least-privilege Azure output per identity: custom roles and a role-assignment change plan.

Each ``role.json`` pastes into ``az role definition create --role-definition @role.json`` (``Name``,
``IsCustom``, ``Description``, ``Actions``, ``NotActions``, ``DataActions``, ``NotDataActions``,
``AssignableScopes``), or ``az role definition update`` when the snapshot shows that a previous run
created it. It holds the operations used in the window, plus the unobservable ones (reads,
dataActions) unless ``--drop-unobservable``.

Never wider than today's grant: an operation is assigned only where it is granted now (an inherited
management-group or root assignment counts as the audited subscription), narrowed to the resource
groups where every use was seen; one granted only under an ABAC condition goes into a role assigned
with that same condition. Operations with the same (condition, scopes) share one role.

``assignments.json`` is the change plan: the role assignments to create, then the old ones to delete
(``az role assignment delete --ids``). A re-run next month finds its own roles and assignments in the
snapshot: it updates the roles, creates only missing assignments and never deletes its own.
Assignments through a group are left as they are (they hold other members); inherited ones are
listed, with a note that deleting them affects every subscription below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from auditor import __version__
from auditor.connectors.azure.normalized import DATA_ACTIONS, condition_of
from auditor.diff import IdentityAudit, Statement
from auditor.emit import base
from auditor.emit.base import IdentityPolicies, KeptPermission, PolicyFile, json_text, sh, short_hash
from auditor.timefmt import iso

if TYPE_CHECKING:
    from auditor.audit import AuditResult

PLAN_SCHEMA = "auditor.azure-assignment-plan/v1"
PRINCIPAL_TYPES = {"managed_identity": "ServicePrincipal", "service_principal": "ServicePrincipal", "user": "User"}


def role_name(identity: str, name: str, account: str) -> str:
    """``auditor <name> <hash>``: unique per identity and subscription, stable across runs."""
    short = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:48].strip("-") or "identity"
    return f"auditor {short} {short_hash(f'{account}/{identity}', 8)}"


def _lower(scope: str) -> str:
    return scope.rstrip("/").lower()


def within(scope: str, outer: str) -> bool:
    """Whether ``scope`` is ``outer`` or below it (ARM scopes are case-insensitive paths)."""
    inner, outer = _lower(scope), _lower(outer)
    return inner == outer or inner.startswith(outer + "/")


def grant_scope(statement: Statement, subscription: str) -> str:
    """Where a statement grants, as a scope a custom role may name: inherited assignments (root,
    management group) are narrowed to the audited subscription (it is below them)."""
    scope = statement.scope or "/"
    return scope if scope.lower().startswith("/subscriptions/") else f"/subscriptions/{subscription}"


def resource_group_of(scope: str) -> str:
    """``/subscriptions/S/resourceGroups/RG/...`` -> ``/subscriptions/S/resourceGroups/RG``; else the
    subscription of the scope."""
    parts = scope.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if len(parts) >= 4 and lowered[0] == "subscriptions" and lowered[2] == "resourcegroups":
        return "/" + "/".join(parts[:4])
    return "/" + "/".join(parts[:2]) if len(parts) >= 2 and lowered[0] == "subscriptions" else scope


def _minimal(scopes: set[str]) -> tuple[str, ...]:
    """The scopes no other one of the set contains, sorted."""
    return tuple(sorted(s for s in scopes if not any(o != s and within(s, o) for o in scopes)))


def target_scopes(perm: KeptPermission, granted: Sequence[str]) -> tuple[str, ...]:
    """Where to assign a kept operation: the resource groups of every use when all of them lie in
    the grant, else the grant's own scopes."""
    if perm.state == "used" and perm.resources_seen:
        seen = {resource_group_of(s) for s in perm.resources_seen}
        if all(any(within(s, g) for g in granted) for s in seen):
            return _minimal(seen)
    return _minimal(set(granted))


@dataclass
class _Group:
    condition: str | None  # the normalized condition JSON of the grant (None: unconditional)
    scopes: tuple[str, ...]
    control: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)


def via_group(statement: Statement) -> bool:
    """Granted through a group's assignment: it stays with the group (it holds other members)."""
    return " via group " in statement.source


def _groups(audit: IdentityAudit, kept: Sequence[KeptPermission], data: frozenset[str]) -> list[_Group]:
    groups: dict[tuple[str, tuple[str, ...]], _Group] = {}
    for perm in kept:
        statements = [s for s in audit.effective[perm.action].statements if not via_group(s)]
        free = [s for s in statements if s.condition is None]
        by_condition = {None: free} if free else {}
        if not free:
            for s in statements:
                by_condition.setdefault(s.condition, []).append(s)
        for condition, granting in by_condition.items():
            scopes = target_scopes(perm, sorted({grant_scope(s, audit.account) for s in granting}))
            group = groups.setdefault((condition or "", scopes), _Group(condition, scopes))
            (group.data if perm.action in data else group.control).append(perm.action)
    return [groups[k] for k in sorted(groups)]


@dataclass(frozen=True)
class _Context:
    span: str
    existing: Mapping[str, str]  # custom role name -> definition id
    principal_type: str | None


def _role_document(name: str, description: str, group: _Group, role_id: str | None) -> dict[str, Any]:
    document: dict[str, Any] = {"Name": name}
    if role_id:
        document["Id"] = role_id.rstrip("/").rsplit("/", 1)[-1]
    document.update(
        IsCustom=True,
        Description=description,
        Actions=sorted(group.control),
        NotActions=[],
        DataActions=sorted(group.data),
        NotDataActions=[],
        AssignableScopes=list(group.scopes),
    )
    return document


def _create(audit: IdentityAudit, name: str, scope: str, condition: str | None, ctx: _Context) -> str:
    words = ["az", "role", "assignment", "create", f"--assignee-object-id={audit.identity}"]
    if ctx.principal_type:
        words.append(f"--assignee-principal-type={ctx.principal_type}")
    words += [f"--role={name}", f"--scope={scope}"]
    for text, version in condition_of(condition):
        words += [f"--condition={text}", f"--condition-version={version}"]
    return sh(*words)


def _identity_output(
    audit: IdentityAudit, entry: IdentityPolicies, kept: Sequence[KeptPermission], data: frozenset[str], ctx: _Context
) -> None:
    groups = _groups(audit, kept, data)
    stem = role_name(audit.identity, audit.name, audit.account)
    names = [stem if i == 1 else f"{stem} ({i})" for i in range(1, len(groups) + 1)]
    ours = {ctx.existing[n].lower(): n for n in names if n in ctx.existing}
    roles, creates, publish, assign = [], [], [], []
    have = {
        (ours[s.policy.lower()], _lower(s.scope or ""), s.condition or "")
        for s in audit.statements
        if s.policy and s.policy.lower() in ours and not via_group(s)
    }
    for index, (group, name) in enumerate(zip(groups, names, strict=True), start=1):
        path = f"{entry.folder}/role{'' if index == 1 else f'.{index}'}.json"
        exists = name in ctx.existing
        description = (
            f"Generated by auditor {__version__} from the Activity Log {ctx.span} for {audit.identity}: "
            f"{len(group.control) + len(group.data)} operation(s)"
            + ("; assign it with the same condition." if group.condition else ".")
        )
        document = _role_document(name, description, group, ctx.existing.get(name))
        entry.files.append(PolicyFile(path, json_text(document)))
        publish.append(sh("az", "role", "definition", "update" if exists else "create", f"--role-definition=@{path}"))
        roles.append({"file": path, "name": name, "exists": exists})
        for scope in group.scopes:
            if (name, _lower(scope), group.condition or "") in have:
                continue
            conditions = [{"condition": c, "conditionVersion": v} for c, v in condition_of(group.condition)]
            creates.append({"role": name, "scope": scope, "conditions": conditions})
            assign.append(_create(audit, name, scope, group.condition, ctx))
    deletes, delete_commands, notes = _deletes(audit, ours, groups, names)
    entry.kept_unobservable = [
        {"permission": k.action, "reason": k.reason or ""} for k in kept if k.state == "unobservable"
    ]
    plan = {
        "schema": PLAN_SCHEMA,
        "principalId": audit.identity,
        "subscription": audit.account,
        "roles": roles,
        "create": [] if entry.dormant else creates,
        "delete": deletes,
    }
    if entry.dormant:
        entry.apply = delete_commands
        entry.exceptions = publish + assign
        notes.insert(0, "no activity at all in the window: the plan deletes every direct role assignment")
    else:
        entry.apply = publish + assign + delete_commands
        if not groups:
            notes.insert(
                0, "nothing was used in the window: the plan deletes the role assignments instead of adding a role"
            )
    entry.files.append(PolicyFile(f"{entry.folder}/assignments.json", json_text(plan)))
    entry.note = "; ".join(notes) or None


def _deletes(
    audit: IdentityAudit, ours: Mapping[str, str], groups: Sequence[_Group], names: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(plan deletions, their commands, notes): every direct assignment but this plan's own roles'
    assignments that it keeps (same role, scope and condition)."""
    wanted = {
        (name, _lower(scope), g.condition or "") for g, name in zip(groups, names, strict=True) for scope in g.scopes
    }
    deletes, commands, grouped, inherited = [], [], set(), set()
    seen: set[str] = set()
    for stmt in audit.statements:
        assignment = stmt.member or ""
        if via_group(stmt):
            grouped.add(stmt.source)
            continue
        mine = ours.get((stmt.policy or "").lower())
        if mine and (mine, _lower(stmt.scope or ""), stmt.condition or "") in wanted:
            continue
        if assignment.lower() in seen:
            continue
        seen.add(assignment.lower())
        if not (stmt.scope or "").lower().startswith("/subscriptions/"):
            inherited.add(stmt.source)
        deletes.append({"id": assignment, "role": stmt.policy, "scope": stmt.scope, "source": stmt.source})
        commands.append(sh("az", "role", "assignment", "delete", f"--ids={assignment}"))
    notes = []
    if inherited:
        notes.append(
            f"inherited assignments ({'; '.join(sorted(inherited))}): deleting them affects every subscription below"
        )
    if grouped:
        notes.append(
            f"{len(grouped)} assignment(s) through a group left as they are (remove the identity from the group): "
            + "; ".join(sorted(grouped))
        )
    return deletes, commands, notes


def azure_roles(result: AuditResult, folders: Mapping[str, str]) -> list[IdentityPolicies]:
    """The custom roles and assignment plan of every audited Azure identity."""
    kept = base.kept_permissions(result)
    window = result.window("azure")
    span = f"{iso(window.start)[:10]}..{iso(window.end)[:10]}" if window else "the audit window"
    managed = result.data.managed.filter((pl.col("provider") == "azure") & (pl.col("kind") == "role"))
    existing = dict(managed.select("name", "id").iter_rows())
    catalog = result.data.catalogs.get("azure")
    data = frozenset(catalog.roles.get(DATA_ACTIONS, ())) if catalog else frozenset()
    dormant = set(result.findings.filter(pl.col("kind") == "dormant-identity")["identity"].to_list())
    out = []
    for audit in (a for a in result.audits if a.provider == "azure"):
        entry = IdentityPolicies("azure", audit.account, audit.identity, audit.name, folders[audit.identity])
        entry.dormant = audit.identity in dormant
        mine = [k for k in kept.get(("azure", audit.identity), []) if k.action in audit.effective]
        ctx = _Context(span, existing, PRINCIPAL_TYPES.get(audit.kind))
        _identity_output(audit, entry, mine, data, ctx)
        out.append(entry)
    return out


base.register("azure", azure_roles)
