"""Least-privilege GCP output per identity: a custom role and the bindings change plan.

The custom role YAML pastes into ``gcloud iam roles create ROLE_ID --project P --file role.yaml``
(``title``, ``description``, ``stage``, ``includedPermissions``). It holds exactly the permissions
used in the window, plus the unobservable ones unless ``--drop-unobservable``, within Google's
limits: 3,000 permissions and 64 KB of title + description + permission names per role (larger
sets are split into "(1 of N)" roles), no wildcards, role IDs ``[a-zA-Z0-9_.]{3,64}``.

The bindings plan removes the identity's project bindings and binds the new role instead: as an
RFC 6902 JSON patch of the exported project policy (guarded by a ``test`` of its etag) and as the
equivalent ``gcloud`` commands. Inherited (folder / organization) bindings are listed with their
commands, which affect every project below; resource-level bindings are left as they are. Where a
predefined role (or two) covers every used permission, it is reported as the alternative, as
Google's IAM recommender would suggest.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from auditor import __version__
from auditor.audit import AuditResult
from auditor.connectors.gcp.rules import GcpRules
from auditor.diff import IdentityAudit, Statement
from auditor.emit.least_privilege import IdentityPolicies, PolicyFile, kept_permissions
from auditor.policy_files import slug
from auditor.timefmt import iso

MAX_PERMISSIONS = 3000
#: Google: "the maximum total size of the title, description, and permission names is 64 KB";
#: counted here in bytes with a margin, 64,000.
MAX_ROLE_BYTES = 64_000
MAX_TITLE_BYTES = 100
MAX_DESCRIPTION_BYTES = 300
ROLE_ID = re.compile(r"^[a-zA-Z0-9_.]{3,64}$")
BASIC_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
_CONTAINER_PREFIXES = ("projects/", "folders/", "organizations/")


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

    def yaml(self, project: str, path: str) -> str:
        header = f"# gcloud iam roles create {self.role_id} --project {project} --file {path}\n"
        return header + yaml.safe_dump(self.document(), sort_keys=False, width=1000, allow_unicode=True)


def _truncate(text: str, limit: int) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[: limit - 3].decode(errors="ignore") + "..."


def role_id(identity: str, project: str) -> str:
    """``auditor_<account name>_<hash>``: unique per identity and project, stable across runs."""
    digest = hashlib.sha256(f"{project}/{identity}".encode()).hexdigest()[:6]
    name = re.sub(r"[^a-zA-Z0-9_]+", "_", identity.split("@", 1)[0].rsplit("/", 1)[-1]).strip("_") or "identity"
    return f"auditor_{name[:45]}_{digest}"


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


@dataclass
class _Plan:
    patch: list[dict[str, Any]]
    commands: list[str]
    notes: list[str]


def _pointer(statement: Statement) -> tuple[int, int]:
    """(binding index, member index) from a statement id ``<resource>#/bindings/<i>/members/<j>``."""
    parts = statement.statement_id.rsplit("#", 1)[-1].split("/")
    return int(parts[2]), int(parts[4])


def _role_of(statement: Statement) -> str:
    return statement.source.split(" on ", 1)[0]


def _bindings_plan(
    audit: IdentityAudit,
    attributes: Mapping[str, Any],
    roles: Sequence[CustomRole],
    condition: dict[str, Any] | None,
    condition_file: str | None,
) -> _Plan:
    project = audit.account
    member = attributes.get("member") or f"serviceAccount:{audit.identity}"
    here = f"projects/{project}"
    sole = set(attributes.get("sole_member") or [])
    on_project = [s for s in audit.statements if s.resources and s.resources[0] == here]
    patch: list[dict[str, Any]] = []
    etag = (attributes.get("policy_etags") or {}).get(here)
    if etag:
        patch.append({"op": "test", "path": "/etag", "value": etag})
    for statement in sorted(on_project, key=_pointer, reverse=True):
        binding, position = _pointer(statement)
        whole = statement.statement_id in sole
        patch.append({"op": "remove", "path": f"/bindings/{binding}" + ("" if whole else f"/members/{position}")})
    for role in roles:
        value: dict[str, Any] = {"role": f"projects/{project}/roles/{role.role_id}", "members": [member]}
        if condition:
            value["condition"] = condition
        patch.append({"op": "add", "path": "/bindings/-", "value": value})
    quoted = shlex.quote(member)
    commands = [
        f"gcloud projects add-iam-policy-binding {project} --member={quoted} "
        f"--role=projects/{project}/roles/{role.role_id} "
        + (f"--condition-from-file={condition_file}" if condition_file else "--condition=None")
        for role in roles
    ]
    removed: dict[tuple[str, bool], None] = {}
    for statement in on_project:
        removed[(_role_of(statement), statement.condition is not None)] = None
    for role_name, conditional in removed:
        commands.append(
            f"gcloud projects remove-iam-policy-binding {project} --member={quoted} --role={role_name} "
            + ("--all" if conditional else "--condition=None")
        )
    notes = []
    inherited = [
        s for s in audit.statements if s.resources and s.resources[0].startswith(("folders/", "organizations/"))
    ]
    for statement in inherited:
        resource = statement.resources[0]
        kind, ident = resource.split("/", 1)
        group = "resource-manager folders" if kind == "folders" else "organizations"
        commands.append(
            f"gcloud {group} remove-iam-policy-binding {ident} --member={quoted} --role={_role_of(statement)} "
            + ("--all" if statement.condition else "--condition=None")
        )
    if inherited:
        notes.append(
            "inherited bindings on "
            + ", ".join(sorted({s.resources[0] for s in inherited}))
            + ": removing them affects every project below"
        )
    local = [s for s in audit.statements if s.resources and not s.resources[0].startswith(_CONTAINER_PREFIXES)]
    if local:
        notes.append(f"{len(local)} resource-level binding(s) left as they are: " + ", ".join(s.source for s in local))
    return _Plan(patch, commands, notes)


def _granted_at_container(audit: IdentityAudit, permission: str) -> bool:
    grant = audit.effective.get(permission)
    return grant is not None and any(
        s.resources and s.resources[0].startswith(_CONTAINER_PREFIXES) for s in grant.statements
    )


def _carried_condition(audit: IdentityAudit, permissions: Sequence[str]) -> dict[str, Any] | None:
    """The one condition every kept permission is granted under, if there is exactly one."""
    conditions = {s.condition for p in permissions for s in audit.effective[p].statements}
    if len(conditions) == 1 and None not in conditions:
        return json.loads(next(iter(conditions)))
    return None


def _identity_output(
    result: AuditResult, audit: IdentityAudit, attributes: Mapping[str, Any], base: str, rules: GcpRules
) -> IdentityPolicies:
    kept = kept_permissions(result, "gcp", audit.identity)
    entry = IdentityPolicies("gcp", audit.account, audit.identity, audit.name)
    notes: list[str] = []
    outside = sorted(k.action for k in kept if not _granted_at_container(audit, k.action))
    if outside:
        notes.append(
            f"{len(outside)} permission(s) granted only by resource-level bindings stay there: "
            + ", ".join(outside[:10])
        )
    unfit = sorted(k.action for k in kept if k.action not in outside and not rules.fits_project_role(k.action))
    if unfit:
        notes.append(
            "cannot be in a project-level custom role (keep the folder/organization grant): " + ", ".join(unfit)
        )
    in_role = [k for k in kept if k.action not in outside and k.action not in unfit]
    permissions = sorted(k.action for k in in_role)
    window = result.data.window
    span = f"{iso(window.start)[:10]}..{iso(window.end)[:10]}" if window else "the audit window"
    unobservable = [k for k in in_role if k.state == "unobservable"]
    roles = split_roles(
        role_id(audit.identity, audit.account),
        f"{audit.identity.split('@', 1)[0]} least privilege",
        f"Generated by auditor {__version__} from Cloud Audit Logs {span} for {audit.identity}: "
        f"{len(permissions) - len(unobservable)} used, {len(unobservable)} unobservable kept.",
        permissions,
    )
    condition = _carried_condition(audit, permissions) if permissions else None
    conditional = sorted(p for p in permissions if all(s.condition for s in audit.effective[p].statements))
    if conditional and condition is None:
        notes.append(
            f"{len(conditional)} kept permission(s) were granted only under a condition "
            f"({', '.join(conditional[:5])}): "
            "the new binding is unconditional, add the condition back if it must still hold"
        )
    condition_file = f"{base}.condition.yaml" if condition else None
    for index, role in enumerate(roles, start=1):
        path = f"{base}.role.yaml" if index == 1 else f"{base}.{index}.role.yaml"
        entry.files.append(PolicyFile(path, role.yaml(audit.account, path)))
        entry.apply.append(f"gcloud iam roles create {role.role_id} --project {audit.account} --file {path}")
    if condition_file:
        entry.files.append(PolicyFile(condition_file, yaml.safe_dump(condition, sort_keys=False, width=1000)))
    plan = _bindings_plan(audit, attributes, roles, condition, condition_file)
    entry.files.append(PolicyFile(f"{base}.bindings.json", json.dumps(plan.patch, indent=2) + "\n"))
    entry.apply += plan.commands
    if not roles:
        notes.insert(0, "nothing was used in the window: remove every binding instead of adding a role")
    entry.note = "; ".join(notes + plan.notes) or None
    entry.kept_unobservable = [{"permission": k.action, "reason": k.reason or ""} for k in unobservable]
    used = {k.action for k in kept if k.state == "used"}
    catalog = result.data.catalogs.get("gcp")
    best = predefined_alternative(used, catalog.roles if catalog else {}, len(audit.effective))
    if best:
        names, extra = best
        entry.alternative = (
            f"predefined {' + '.join(names)} cover{'s' if len(names) == 1 else ''} all {len(used)} used "
            f"permission(s) with {extra} more (instead of {len(audit.effective):,} granted now)"
        )
    return entry


def gcp_roles(result: AuditResult) -> list[IdentityPolicies]:
    rules = GcpRules.load(result.rules.dirs)
    attributes = {
        identity: json.loads(raw or "{}")
        for provider, identity, raw in result.data.identities.select("provider", "identity", "attributes").iter_rows()
        if provider == "gcp"
    }
    taken: set[str] = set()
    out = []
    for audit in (a for a in result.audits if a.provider == "gcp"):
        name = slug(audit.identity.split("@", 1)[0].rsplit("/", 1)[-1])
        base = f"policies/gcp/{slug(audit.account)}/{name}"
        if base in taken:
            base += "-" + hashlib.sha256(audit.identity.encode()).hexdigest()[:6]
        taken.add(base)
        out.append(_identity_output(result, audit, attributes.get(audit.identity, {}), base, rules))
    return out
