"""Least-privilege GCP output per identity: custom roles and a bindings plan keyed by role + member.

A custom role YAML pastes into ``gcloud iam roles create ROLE_ID --project=P --file=role.yaml``
(``title``, ``description``, ``stage``, ``includedPermissions``), or ``gcloud iam roles update``
when the snapshot shows that a previous run created it (with the snapshot's ``etag``, so the update
replaces exactly that version). It holds the permissions used in the window, plus the unobservable
ones unless ``--drop-unobservable``, within Google's limits: 3,000 permissions and 64 KB of title +
description + permission names per role (larger sets are split into "(1 of N)" roles), no
wildcards, role IDs ``[a-zA-Z0-9_.]{3,64}``.

Never wider than today's grant: a permission granted only under a condition goes into a role bound
with that same condition (one role per distinct condition); only permissions granted without one go
into the unconditional role.

``bindings.json`` is the change plan for one member: which (role, condition) bindings it leaves and
which it joins. It names no array positions, so the plans of one audit apply to the same policy
independently and in any order (:func:`apply_bindings_plan` applies one to an exported policy for
``gcloud projects set-iam-policy``); the ``gcloud`` commands in ``policies/index.json`` do the same
one binding at a time. Inherited (folder / organization) bindings are listed with their commands,
which affect every project below; resource-level bindings are left as they are. A dormant service
account loses every binding and is disabled.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from auditor import __version__
from auditor.diff import IdentityAudit, Statement
from auditor.emit import base
from auditor.emit.base import IdentityPolicies, KeptPermission, PolicyFile, json_text, sh, short_hash
from auditor.timefmt import iso

if TYPE_CHECKING:
    from auditor.audit import AuditResult

PLAN_SCHEMA = "auditor.gcp-bindings-plan/v1"

MAX_PERMISSIONS = 3000
#: Google: "the maximum total size of the title, description, and permission names is 64 KB";
#: counted here in bytes with a margin, 64,000.
MAX_ROLE_BYTES = 64_000
MAX_TITLE_BYTES = 100
MAX_DESCRIPTION_BYTES = 300
ROLE_ID = re.compile(r"^[a-zA-Z0-9_.]{3,64}$")
MAX_ROLE_ID = 64
BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
_CONTAINER_PREFIXES = ("projects/", "folders/", "organizations/")


def _yaml(document: dict[str, Any], allow_unicode: bool = False) -> str:
    """``document`` as YAML in its own key order, lines unwrapped (what ``gcloud --file`` reads)."""
    import yaml  # imported here: only GCP audits write YAML this way, and PyYAML takes 10 ms to import

    return yaml.safe_dump(document, sort_keys=False, width=1000, allow_unicode=allow_unicode)


@dataclass(frozen=True)
class CustomRole:
    role_id: str
    title: str
    description: str
    permissions: tuple[str, ...]
    stage: str = "GA"

    def size(self) -> int:
        """Bytes of title + description + permission names, the quantity Google limits to 64 KB."""
        return len(self.title.encode()) + len(self.description.encode()) + sum(len(p) for p in self.permissions)

    def document(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "description": self.description,
            "stage": self.stage,
            "includedPermissions": list(self.permissions),
        }

    def yaml(self, command: str, etag: str | None = None) -> str:
        document = {**self.document(), **({"etag": etag} if etag else {})}
        return f"# {command}\n" + _yaml(document, allow_unicode=True)


def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "..."


def role_id(identity: str, project: str) -> str:
    """``auditor_<account name>_<hash>``: unique per identity and project, stable across runs."""
    digest = short_hash(f"{project}/{identity}", 6)
    name = re.sub(r"[^a-zA-Z0-9_]+", "_", identity.split("@", 1)[0].rsplit("/", 1)[-1]).strip("_") or "identity"
    return f"auditor_{name[:36]}_{digest}"


def split_roles(base_id: str, title: str, description: str, permissions: Sequence[str]) -> list[CustomRole]:
    """Roles of at most MAX_PERMISSIONS permissions and MAX_ROLE_BYTES bytes each, titled "(i of N)"
    when there are several."""
    title = _truncate(title, MAX_TITLE_BYTES - len(" (99 of 99)"))
    description = _truncate(description, MAX_DESCRIPTION_BYTES)
    budget = MAX_ROLE_BYTES - len(title.encode()) - len(" (99 of 99)") - len(description.encode())
    chunks: list[list[str]] = []
    used = 0
    for permission in sorted(set(permissions)):
        if not chunks or len(chunks[-1]) >= MAX_PERMISSIONS or used + len(permission) > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(permission)
        used += len(permission)
    total = len(chunks)
    return [
        CustomRole(
            base_id if index == 1 else f"{base_id}_{index}",
            title if total == 1 else f"{title} ({index} of {total})",
            description,
            tuple(chunk),
        )
        for index, chunk in enumerate(chunks, start=1)
    ]


def predefined_alternative(
    used: set[str], roles: Mapping[str, Sequence[str]], smaller_than: int
) -> tuple[tuple[str, ...], int] | None:
    """One predefined role, else two, covering every permission in ``used`` with the fewest other
    permissions and fewer than ``smaller_than`` in all: (role names, extra permissions). Basic roles
    and service-agent roles (granted to Google's own identities) are never suggested."""
    if not used:
        return None
    pool = {
        n: frozenset(p)
        for n, p in roles.items()
        if n.startswith("roles/") and n not in BASIC_ROLES and not n.endswith(".serviceAgent")
    }
    singles = sorted((len(p - used), (n,)) for n, p in pool.items() if used <= p and len(p) < smaller_than)
    if singles:
        return singles[0][1], singles[0][0]
    holders: dict[str, set[str]] = {permission: set() for permission in used}
    for name, perms in pool.items():
        for permission in perms & used:
            holders[permission].add(name)
    if not all(holders.values()):
        return None
    pairs = []
    for first in sorted({n for names in holders.values() for n in names}):
        rest = used - pool[first]
        for second in set.intersection(*(holders[p] for p in rest)) if rest else ():
            union = pool[first] | pool[second]
            if first < second and len(union) < smaller_than:
                pairs.append((len(union - used), (first, second)))
    return (min(pairs)[1], min(pairs)[0]) if pairs else None


def _container(statement: Statement) -> str | None:
    """The project / folder / organization a binding is set on (None: resource-level)."""
    scope = statement.scope or (statement.resources[0] if statement.resources else "")
    return scope if scope.startswith(_CONTAINER_PREFIXES) else None


def _condition_key(condition: Any) -> str:
    return json.dumps(condition, sort_keys=True) if condition else ""


@dataclass
class _RoleGroup:
    """Kept permissions granted under one condition (``None``: granted without a condition)."""

    condition: dict[str, Any] | None
    permissions: list[str] = field(default_factory=list)


def _role_groups(audit: IdentityAudit, kept: Sequence[KeptPermission]) -> dict[str, _RoleGroup]:
    """Kept permissions by the condition they are granted under. A permission granted without a
    condition anywhere goes in the unconditional group; one granted only under conditions goes in the
    group of each of its conditions (so the new bindings allow it exactly when the old ones did)."""
    groups: dict[str, _RoleGroup] = {}
    for perm in kept:
        containers = [s for s in audit.effective[perm.action].statements if _container(s)]
        if not containers:
            continue
        conditions = {None} if any(s.condition is None for s in containers) else {s.condition for s in containers}
        for condition in sorted(conditions, key=lambda c: c or ""):
            parsed = json.loads(condition) if condition else None
            groups.setdefault(_condition_key(parsed), _RoleGroup(parsed)).permissions.append(perm.action)
    return dict(sorted(groups.items()))


def _bindings(audit: IdentityAudit, level: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(resource, role, condition) of the identity's bindings on projects / folders+organizations."""
    found: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    for stmt in audit.statements:
        container = _container(stmt)
        if container is None or (container.startswith("projects/")) != (level == "project"):
            continue
        condition = stmt.condition_json()
        found[(container, stmt.policy or "", _condition_key(condition))] = condition
    return [(resource, role, condition) for (resource, role, _), condition in sorted(found.items())]


def apply_bindings_plan(policy: dict[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    """``policy`` (an exported IAM policy) with ``plan`` applied: the member leaves the bindings of
    ``remove`` and joins those of ``add``. Touches nothing but that member, so plans commute."""
    member = plan["member"]
    bindings = [dict(b, members=list(b.get("members") or [])) for b in policy.get("bindings") or []]
    leave = {(r["role"], _condition_key(r.get("condition"))) for r in plan.get("remove") or []}
    for binding in bindings:
        if (binding.get("role"), _condition_key(binding.get("condition"))) in leave and member in binding["members"]:
            binding["members"].remove(member)
    for item in plan.get("add") or []:
        key = (item["role"], _condition_key(item.get("condition")))
        target = next((b for b in bindings if (b.get("role"), _condition_key(b.get("condition"))) == key), None)
        if target is None:
            target = {"role": item["role"], "members": []}
            if item.get("condition"):
                target["condition"] = item["condition"]
            bindings.append(target)
        if member not in target["members"]:
            target["members"].append(member)
    out = {**policy, "bindings": [b for b in bindings if b["members"]]}
    if any(b.get("condition") for b in out["bindings"]):
        out["version"] = 3
    return out


@dataclass(frozen=True)
class _Context:
    project: str
    member: str
    span: str
    existing: Mapping[tuple[str, str], str | None]  # (project, role id) -> etag


def _role_files(
    audit: IdentityAudit, entry: IdentityPolicies, groups: dict[str, _RoleGroup], ids: Sequence[str], ctx: _Context
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Role files, their create/update commands, the bindings to add and their commands."""
    publish, add, bind = [], [], []
    stem = "exception" if entry.dormant else "role"
    short = audit.identity.split("@", 1)[0]
    conditional = 0
    for (key, group), base_id in zip(groups.items(), ids, strict=True):
        kept = len(group.permissions)
        title = f"{short} least privilege" + (f" under {group.condition.get('title') or 'a condition'}" if key else "")
        description = (
            f"Generated by auditor {__version__} from Cloud Audit Logs {ctx.span} for {audit.identity}: "
            f"{kept} permission(s)" + (" granted under a condition; bind it with that condition." if key else ".")
        )
        conditional += bool(key)
        label = f".condition-{conditional}" if key else ""
        condition_file = f"{entry.folder}/condition-{conditional}.yaml" if key else None
        if condition_file:
            entry.files.append(PolicyFile(condition_file, _yaml(group.condition)))
        for part, role in enumerate(split_roles(base_id, title, description, group.permissions), start=1):
            path = f"{entry.folder}/{stem}{label}" + (f".{part}" if part > 1 else "") + ".yaml"
            exists = (ctx.project, role.role_id) in ctx.existing
            verb = "update" if exists else "create"
            command = sh("gcloud", "iam", "roles", verb, role.role_id, f"--project={ctx.project}", f"--file={path}")
            entry.files.append(PolicyFile(path, role.yaml(command, ctx.existing.get((ctx.project, role.role_id)))))
            publish.append(command)
            full = f"projects/{ctx.project}/roles/{role.role_id}"
            add.append({"role": full, "condition": group.condition})
            how = f"--condition-from-file={condition_file}" if condition_file else "--condition=None"
            bind.append(
                sh(
                    "gcloud",
                    "projects",
                    "add-iam-policy-binding",
                    ctx.project,
                    f"--member={ctx.member}",
                    f"--role={full}",
                    how,
                )
            )
    return publish, add, bind


def _remove_commands(
    audit: IdentityAudit, member: str, keep: set[tuple[str, str]]
) -> tuple[list[dict[str, Any]], list[str], list[str], list[str]]:
    """(plan removals, commands to run before binding the new roles, after it, notes): every project
    binding goes but the (role, condition) bindings in ``keep`` (a re-run's own, which it updates and
    binds again); an old binding of a role bound again under another condition is removed first, since
    ``--all`` would take the new one too; inherited bindings are listed."""
    remove, first, commands, notes = [], [], [], []
    again = {role for role, _ in keep}
    for resource, role, condition in _bindings(audit, "project"):
        if (role, _condition_key(condition)) in keep:
            continue
        remove.append({"role": role, "condition": condition})
        project = resource.split("/", 1)[1]
        which = "--all" if condition else "--condition=None"
        (first if role in again else commands).append(
            sh(
                "gcloud",
                "projects",
                "remove-iam-policy-binding",
                project,
                f"--member={member}",
                f"--role={role}",
                which,
            )
        )
    inherited = _bindings(audit, "inherited")
    for resource, role, condition in inherited:
        kind, ident = resource.split("/", 1)
        group = ["resource-manager", "folders"] if kind == "folders" else ["organizations"]
        which = "--all" if condition else "--condition=None"
        commands.append(
            sh("gcloud", *group, "remove-iam-policy-binding", ident, f"--member={member}", f"--role={role}", which)
        )
    if inherited:
        notes.append(
            "inherited bindings on "
            + ", ".join(sorted({r for r, _, _ in inherited}))
            + ": removing them affects every project below"
        )
    local = sorted({s.source for s in audit.statements if _container(s) is None})
    if local:
        notes.append(f"{len(local)} resource-level binding(s) left as they are: " + ", ".join(local))
    return remove, first, commands, notes


def _identity_output(
    result: AuditResult,
    audit: IdentityAudit,
    entry: IdentityPolicies,
    kept: Sequence[KeptPermission],
    ids: Sequence[str],
    ctx: _Context,
) -> None:
    catalog = result.data.catalogs["gcp"]
    notes: list[str] = []
    outside = sorted(k.action for k in kept if not any(_container(s) for s in audit.effective[k.action].statements))
    if outside:
        notes.append(
            f"{len(outside)} permission(s) granted only by resource-level bindings stay there: "
            + ", ".join(outside[:10])
        )
    unfit = sorted(k.action for k in kept if k.action not in outside and k.action in catalog.restricted)
    if unfit:
        notes.append(
            "cannot be in a project-level custom role (keep the folder/organization grant): " + ", ".join(unfit)
        )
    in_role = [k for k in kept if k.action not in outside and k.action not in unfit]
    groups = _role_groups(audit, in_role)
    publish, add, bind = _role_files(audit, entry, groups, ids, ctx)
    ours = set() if entry.dormant else {(item["role"], _condition_key(item["condition"])) for item in add}
    remove, rebind, remove_commands, remove_notes = _remove_commands(audit, ctx.member, ours)
    plan = {"schema": PLAN_SCHEMA, "resource": f"projects/{ctx.project}", "member": ctx.member}
    unobservable = [k for k in in_role if k.state == "unobservable"]
    entry.kept_unobservable = [{"permission": k.action, "reason": k.reason or ""} for k in unobservable]
    if entry.dormant:
        disable = []
        if audit.kind == "service_account":
            disable.append(
                sh("gcloud", "iam", "service-accounts", "disable", audit.identity, f"--project={ctx.project}")
            )
        entry.apply = rebind + remove_commands + disable
        entry.exceptions = publish + bind
        plan.update(remove=remove, add=[])
        notes.insert(
            0,
            "no activity at all in the window: the plan removes every binding and disables the service account"
            + (
                f"; to keep the {len(unobservable)} permission(s) the logs cannot show, run the exception commands"
                if publish
                else ""
            ),
        )
    else:
        entry.apply = publish + rebind + bind + remove_commands
        plan.update(remove=remove, add=add)
        if not groups:
            notes.insert(0, "nothing was used in the window: the plan removes every binding instead of adding a role")
    entry.files.append(PolicyFile(f"{entry.folder}/bindings.json", json_text(plan)))
    entry.note = "; ".join(notes + remove_notes) or None
    used = {k.action for k in kept if k.state == "used"}
    best = predefined_alternative(used, catalog.roles, len(audit.effective))
    if best:
        names, extra = best
        entry.alternative = (
            f"predefined {' + '.join(names)} cover{'s' if len(names) == 1 else ''} all {len(used)} used "
            f"permission(s) with {extra} more (instead of {len(audit.effective):,} granted now)"
        )


def _role_ids(audits: Sequence[IdentityAudit], groups: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Role IDs per identity (one per condition group), unique per project for every split part."""
    out: dict[str, list[str]] = {}
    for project in sorted({a.account for a in audits}):
        mine = {a.identity: role_id(a.identity, project) for a in audits if a.account == project}

        def ids(identity: str, stem: str) -> list[str]:
            return [stem if not key else f"{stem}_c{short_hash(key, 6)}" for key in groups[identity]]

        def names(identity: str, stem: str) -> list[str]:
            return [f"{i}{suffix}" for i in ids(identity, stem) for suffix in ("", *(f"_{n}" for n in range(2, 10)))]

        for identity, stem in base.allocate(mine, names, limit=MAX_ROLE_ID - 12, separator="_").items():
            out[identity] = ids(identity, stem)
    return out


def gcp_roles(result: AuditResult, folders: Mapping[str, str]) -> list[IdentityPolicies]:
    """The custom roles and bindings plan of every audited GCP identity."""
    kept = base.kept_permissions(result)
    audits = [a for a in result.audits if a.provider == "gcp"]
    window = result.window("gcp")
    span = f"{iso(window.start)[:10]}..{iso(window.end)[:10]}" if window else "the audit window"
    managed = result.data.managed.filter((pl.col("provider") == "gcp") & (pl.col("kind") == "role"))
    existing = {(a, n): e for a, n, e in managed.select("account", "name", "etag").iter_rows()}
    members = dict(result.data.identities.filter(pl.col("provider") == "gcp").select("identity", "member").iter_rows())
    dormant = set(result.findings.filter(pl.col("kind") == "dormant-identity")["identity"].to_list())
    in_roles = {
        a.identity: [k for k in kept.get(("gcp", a.identity), []) if a.identity and k.action in a.effective]
        for a in audits
    }
    groups = {a.identity: list(_role_groups(a, in_roles[a.identity])) for a in audits}
    ids = _role_ids(audits, groups)
    out = []
    for audit in audits:
        entry = IdentityPolicies("gcp", audit.account, audit.identity, audit.name, folders[audit.identity])
        entry.dormant = audit.identity in dormant
        member = members.get(audit.identity) or f"serviceAccount:{audit.identity}"
        ctx = _Context(audit.account, member, span, existing)
        _identity_output(result, audit, entry, kept.get(("gcp", audit.identity), []), ids[audit.identity], ctx)
        out.append(entry)
    return out


base.register("gcp", gcp_roles)
