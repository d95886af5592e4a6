"""GCP grants: IAM policies (project, folders, organization, resource-level) and role definitions.

Inputs are what ``gcloud`` prints with ``--format=json``: ``projects get-iam-policy`` (policy version
3: conditions and ``auditConfigs``), ``iam roles describe`` (one role per file, or a JSON array),
``asset search-all-iam-policies`` and ``iam service-accounts list``. Each (binding, member) that
names a caller becomes one GRANTS row whose actions are the role's ``includedPermissions``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from auditor import model
from auditor.connectors.base import GrantSet
from auditor.connectors.gcp.rules import GcpRules
from auditor.errors import InputError
from auditor.fileio import load_json
from auditor.selection import AgentSelector

#: ``key=value`` words in a service account's description: GCP service accounts have no labels.
_LABEL = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*)=([\w.-]*)")
_CONTAINERS = ("projects", "folders", "organizations")


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    title: str
    stage: str
    permissions: tuple[str, ...]
    etag: str | None = None


def _role_entries(doc: Any) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and isinstance(doc.get("roles"), list):  # a REST roles.list page
        return doc["roles"]
    return [doc]


def load_roles(paths: Sequence[Path]) -> tuple[dict[str, RoleDefinition], list[dict[str, Any]]]:
    """Role definitions from ``gcloud iam roles describe`` outputs (JSON or YAML; files or folders)."""
    roles: dict[str, RoleDefinition] = {}
    gaps: list[dict[str, Any]] = []
    for path in _files(paths, (".json", ".yaml", ".yml")):
        if path.suffix == ".json":
            doc = load_json(path, "the output of `gcloud iam roles describe ROLE --format=json`")
        else:
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{path}: not a readable role definition ({exc})") from None
        for index, entry in enumerate(_role_entries(doc)):
            name = entry.get("name") if isinstance(entry, dict) else None
            permissions = entry.get("includedPermissions", []) if isinstance(entry, dict) else None
            if not isinstance(name, str) or not isinstance(permissions, list):
                gaps.append(_gap(None, f"{path}[{index}]", "not a role definition (no name / includedPermissions)"))
                continue
            roles[name] = RoleDefinition(
                name,
                str(entry.get("title", "")),
                str(entry.get("stage", "")),
                tuple(sorted({p for p in permissions if isinstance(p, str)})),
                entry.get("etag") if isinstance(entry.get("etag"), str) else None,
            )
    return roles, gaps


def _files(paths: Sequence[Path], suffixes: tuple[str, ...]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    return found


def _gap(account: str | None, scope: str, reason: str, severity: str = "error") -> dict[str, Any]:
    return {"provider": "gcp", "account": account, "scope": scope, "reason": reason, "severity": severity, "count": 1}


@dataclass(frozen=True)
class Binding:
    role: str
    members: tuple[str, ...]
    condition: dict[str, Any] | None
    index: int


@dataclass(frozen=True)
class Policy:
    """One IAM policy and the resource it is set on."""

    resource: str  # projects/p1, folders/123, organizations/456, //storage.googleapis.com/... (resource level)
    bindings: tuple[Binding, ...]
    audit_configs: tuple[dict[str, Any], ...]
    etag: str | None
    origin: str
    problems: tuple[tuple[str, str], ...] = ()  # (where, what): bindings or members left out, and why

    @property
    def level(self) -> str:
        head = self.resource.split("/", 1)[0]
        return head if head in _CONTAINERS else "resource"


def parse_policy(doc: Any, resource: str, origin: str) -> Policy:
    if not isinstance(doc, dict) or not any(k in doc for k in ("bindings", "etag", "auditConfigs", "version")):
        raise InputError(
            f"{origin}: not an IAM policy (no bindings / etag)",
            "export it with `gcloud projects get-iam-policy PROJECT --format=json`",
        )
    bindings = []
    problems: list[tuple[str, str]] = []
    for index, raw in enumerate(doc.get("bindings") or []):
        if not isinstance(raw, dict) or not isinstance(raw.get("role"), str):
            raise InputError(f"{origin}: bindings[{index}] has no role")
        where = _binding_scope(origin, index, raw["role"], resource)
        members, condition = raw.get("members") or [], raw.get("condition")
        if condition is not None and not _is_condition(condition):
            # its grant may hold only under that condition: left out (and left as it is by the plans),
            # never read as unconditional
            problems.append(
                (
                    where,
                    f"condition {str(condition)[:80]!r} is not an {{expression, title}} object: "
                    "binding not audited, the plans leave it as it is",
                )
            )
            continue
        if not isinstance(members, list):
            problems.append((where, "members is not a list: binding not audited, the plans leave it as it is"))
            continue
        odd = [m for m in members if not isinstance(m, str)]
        if odd:
            problems.append((where, f"{len(odd)} member(s) that are not strings left out ({str(odd[0])[:40]!r}, ...)"))
        bindings.append(Binding(raw["role"], tuple(m for m in members if isinstance(m, str)), condition, index))
    configs = tuple(c for c in doc.get("auditConfigs") or [] if isinstance(c, dict))
    return Policy(resource, tuple(bindings), configs, doc.get("etag"), origin, tuple(problems))


def _binding_scope(origin: str, index: int, role: str, resource: str) -> str:
    """Where an input problem with one binding is: its file, position, role and resource."""
    return f"{origin}: bindings[{index}] ({role} on {resource})"


def _is_condition(value: Any) -> bool:
    """An IAM condition as Google returns it: a CEL ``expression``, optional ``title`` and ``description``."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("expression"), str)
        and bool(value["expression"].strip())
        and all(isinstance(value.get(k, ""), str) for k in ("title", "description"))
    )


def parse_asset_policies(doc: Any, origin: str) -> list[Policy]:
    """Resource-level policies from ``gcloud asset search-all-iam-policies --format=json``.

    Project, folder and organization policies in it are skipped: they come from their own exports
    (which carry ``auditConfigs``)."""
    if not isinstance(doc, list):
        raise InputError(f"{origin}: not `gcloud asset search-all-iam-policies --format=json` output (not a list)")
    policies = []
    for index, item in enumerate(doc):
        if not isinstance(item, dict) or not isinstance(item.get("resource"), str):
            raise InputError(f"{origin}: item {index} has no resource")
        if item["resource"].startswith("//cloudresourcemanager.googleapis.com/"):
            continue
        policies.append(parse_policy(item.get("policy") or {"bindings": []}, item["resource"], f"{origin}[{index}]"))
    return policies


def project_of_resource(resource: str, default: str) -> str:
    match = re.search(r"(?:^|/)projects/([^/]+)", resource)
    return match.group(1) if match and not match.group(1).isdigit() and match.group(1) != "_" else default


@dataclass(frozen=True)
class Principal:
    identity: str
    kind: str  # service_account | user | principal | deleted_service_account


def principal_of(member: str) -> Principal | None:
    """The caller a binding member names; None for groups, domains and public members."""
    kind, _, rest = member.partition(":")
    if member.startswith(("principal://", "principalSet://")):
        return Principal(member, "principal") if member.startswith("principal://") else None
    if kind == "serviceAccount":
        return Principal(rest, "service_account")
    if kind == "user":
        return Principal(rest, "user")
    if kind == "deleted" and rest.startswith("serviceAccount:"):
        # a principal of its own (another uid), never the live account that now has its email
        return Principal(member.split("?", 1)[0], "deleted_service_account")
    return None


def service_account_labels(account: Mapping[str, Any]) -> dict[str, str]:
    """Labels of an ``iam service-accounts list`` entry: ``labels`` if present, else ``key=value``
    words in the description (service accounts have no labels of their own)."""
    labels = account.get("labels")
    if isinstance(labels, dict):
        return {str(k): str(v) for k, v in labels.items()}
    return dict(_LABEL.findall(str(account.get("description") or "")))


def load_service_accounts(paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    accounts: dict[str, dict[str, Any]] = {}
    for path in paths:
        doc = load_json(path, "the output of `gcloud iam service-accounts list --format=json`")
        items = doc.get("accounts", [] if set(doc) <= {"nextPageToken"} else None) if isinstance(doc, dict) else doc
        if not isinstance(items, list):  # gcloud's list, or the API's page (`{}` when there are none)
            raise InputError(
                f"{path}: not a service-account list (a JSON list, or an object with an `accounts` list)",
                "export it with `gcloud iam service-accounts list --project P --format=json`",
            )
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("email"), str):
                accounts[item["email"]] = item
    return accounts


@dataclass
class _Identity:
    principal: Principal
    account: str
    member: str
    statements: list[dict[str, Any]] = field(default_factory=list)


def build_grants(
    project: str,
    policies: Sequence[Policy],
    roles: Mapping[str, RoleDefinition],
    service_accounts: Mapping[str, Mapping[str, Any]],
    selector: AgentSelector,
    rules: GcpRules,
) -> GrantSet:
    """One GRANTS row per (binding, caller member); ancestors' bindings attributed to where they are."""
    found: dict[str, _Identity] = {}
    gaps: list[dict[str, Any]] = []
    missing_roles: dict[str, set[str]] = {}
    for policy in policies:
        gaps += [_gap(project, where, what) for where, what in policy.problems]
        for binding in policy.bindings:
            role = roles.get(binding.role)
            if role is None:
                missing_roles.setdefault(binding.role, set()).add(policy.resource)
            for position, member in enumerate(binding.members):
                principal = principal_of(member)
                if principal is None:
                    continue
                if principal.kind == "user" and principal.identity.endswith(".gserviceaccount.com"):
                    where = _binding_scope(policy.origin, binding.index, binding.role, policy.resource)
                    gaps.append(_gap(project, where, f"member {member!r} names a service account as a user: left out"))
                    continue
                entry = found.setdefault(
                    principal.identity,
                    _Identity(principal, project_of_resource(policy.resource, project), member),
                )
                statement_id = f"{policy.resource}#/bindings/{binding.index}/members/{position}"
                where = " (inherited)" if policy.level in ("folders", "organizations") else ""
                entry.statements.append(
                    {
                        "provider": "gcp",
                        "account": entry.account,
                        "identity": principal.identity,
                        "statement_id": statement_id,
                        "layer": "identity",
                        "effect": "Allow",
                        "actions": list(role.permissions) if role else [],
                        "not_action": False,
                        "resources": [policy.resource],
                        "not_resource": False,
                        "condition": json.dumps(binding.condition, sort_keys=True) if binding.condition else None,
                        "source": f"{binding.role} on {policy.resource}{where}",
                        "source_kind": "admin-role" if binding.role in rules.admin_roles else "binding",
                        "policy": binding.role,
                        "scope": policy.resource,
                        "member": member,
                    }
                )
    for role_name, resources in sorted(missing_roles.items()):
        gaps.append(
            _gap(
                project,
                f"role {role_name}",
                f"bound on {', '.join(sorted(resources))} but not among the role definitions: its permissions "
                f"are not counted (export it: gcloud iam roles describe {role_name} --format=json)",
            )
        )
    identities = [_identity_row(e, service_accounts.get(e.principal.identity), selector, rules) for e in found.values()]
    return GrantSet(
        identities=model.frame(identities, model.IDENTITIES),
        grants=model.frame([s for e in found.values() for s in e.statements], model.GRANTS),
        managed=model.frame(_custom_roles(roles), model.MANAGED),
        gaps=model.frame(gaps, model.GAPS),
    )


def _custom_roles(roles: Mapping[str, RoleDefinition]) -> list[dict[str, Any]]:
    """Project and organization custom roles of the snapshot (a monthly re-run updates them)."""
    rows = []
    for name in sorted(roles):
        parts = name.split("/")
        if len(parts) == 4 and parts[0] in ("projects", "organizations") and parts[2] == "roles":
            rows.append(
                {
                    "provider": "gcp",
                    "account": parts[1],
                    "kind": "role",
                    "name": parts[3],
                    "id": name,
                    "etag": roles[name].etag,
                }
            )
    return rows


def _identity_row(
    entry: _Identity, account: Mapping[str, Any] | None, selector: AgentSelector, rules: GcpRules
) -> dict[str, Any]:
    principal = entry.principal
    labels = service_account_labels(account) if account else {}
    if principal.kind == "deleted_service_account":
        held = ", ".join(sorted({s["source"] for s in entry.statements}))
        reason, excluded = f"deleted service account still bound ({held}): remove the bindings", True
    elif principal.kind == "service_account" and rules.is_service_agent(principal.identity):
        reason, excluded = "Google-managed service agent: reported, not audited", True
    else:
        reason, excluded = selector.reason(principal.identity, principal.identity, labels), False
    disabled = bool(account and account.get("disabled"))
    description = (account or {}).get("description")
    return {
        "provider": "gcp",
        "account": entry.account,
        "identity": principal.identity,
        "name": principal.identity,
        "kind": principal.kind,
        "path": None,
        "is_agent": reason is not None and not excluded,
        "selected_by": reason,
        "created": None,
        "last_used": None,
        "tags": [{"key": k, "value": v} for k, v in sorted(labels.items())],
        "service_linked": excluded and principal.kind == "service_account",
        "disabled": disabled,
        "member": entry.member,
        "groups": [],
        "instance_profiles": [],
        "notes": ["the service account is disabled"] if disabled else [],
        "attributes": json.dumps({"description": description}, sort_keys=True) if description else None,
    }


def policy_resource_from_path(path: Path) -> str | None:
    """``policies/projects/p1.json`` -> ``projects/p1`` (also folders/, organizations/)."""
    if path.parent.name in _CONTAINERS:
        return f"{path.parent.name}/{path.name.split('.', 1)[0]}"
    return None


def audit_log_configs(policies: Iterable[Policy]) -> list[dict[str, Any]]:
    """Every auditConfigs entry of the project, folder and organization policies (they add up)."""
    return [config for policy in policies if policy.level != "resource" for config in policy.audit_configs]
