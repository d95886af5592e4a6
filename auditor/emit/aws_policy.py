"""Least-privilege AWS IAM policy per identity, and the plan that applies it.

Allows exactly the permissions used in the window (plus, unless dropped, the unobservable ones,
in separate statements whose Sid says so), grouped by service, with Resource narrowed to the ARNs
seen where that is sound and otherwise the Resource of the statement that granted it — never
wider than the original grant. Conditions of conditional grants are carried over, as are the
explicit Deny statements that touch a kept permission. Documents over the managed-policy size
limit are split.

The plan (``policies/index.json``): create the policy, or add a version to the one a previous run
created (``create-policy-version``, deleting the oldest version when all five are used), attach it,
then detach / delete what granted more. A dormant identity (no activity at all in a window the logs
cover) is stripped instead; what the logs cannot show is offered as an exception, not the default.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import polars as pl

from auditor.diff import Grant, IdentityAudit, Statement
from auditor.emit import base
from auditor.emit.aws_enforce import add_enforcement, scp_plans
from auditor.emit.base import IdentityPolicies, KeptPermission, PolicyFile, json_text, sh
from auditor.emit.blocklist import BLOCKED_STATES
from auditor.matching import resource_matches
from auditor.narrowing import NarrowingRules

if TYPE_CHECKING:
    from auditor.audit import AuditResult

#: Managed policy document limit: 6,144 characters, white space not counted.
MANAGED_POLICY_LIMIT = 6144
POLICY_VERSION = "2012-10-17"


@dataclass
class PolicyPlan:
    documents: list[dict[str, Any]]
    unobservable: list[KeptPermission] = field(default_factory=list)
    denies: list[dict[str, Any]] = field(default_factory=list)


def _preferred(statements: list[Statement]) -> list[Statement]:
    """The statements whose scopes together are exactly the grant: every one of them (each grants on
    its own, a conditional one may reach resources the others do not), unless one alone grants on
    every resource without a condition."""
    everywhere = [s for s in statements if not s.condition and not s.not_resource and "*" in s.resources]
    return everywhere[:1] or statements


def _merge_conditions(a: str | None, b: str | None) -> str | None:
    """Both conditions must hold: merge the blocks (AND); a clash keeps the stricter-looking first."""
    if not a or not b or a == b:
        return a or b
    merged = json.loads(a)
    for operator, keys in json.loads(b).items():
        target = merged.setdefault(operator, {})
        for key, value in keys.items():
            target.setdefault(key, value)
    return json.dumps(merged, sort_keys=True)


Scope = tuple[tuple[str, ...], bool, str | None]  # (resources, is NotResource, condition JSON)


def _intersect(grant: Statement, cap: Statement | None) -> Scope | None:
    """Where ``grant`` applies once the permissions boundary statement ``cap`` is applied."""
    condition = _merge_conditions(grant.condition, cap.condition if cap else None)
    if cap is None or cap.not_resource or "*" in cap.resources or grant.not_resource:
        # A NotResource grant stays as written: "the cap minus those" is no Resource list, and the
        # boundary, still attached, goes on capping it.
        return grant.resources, grant.not_resource, condition
    if grant.not_resource or "*" in grant.resources:
        return cap.resources, False, condition
    inside = {r for r in grant.resources if any(resource_matches(c, r) for c in cap.resources)}
    inside |= {c for c in cap.resources if any(resource_matches(r, c) for r in grant.resources)}
    return (tuple(sorted(inside)), False, condition) if inside else None


def _covers(scope: Scope, arn: str) -> bool:
    resources, not_resource, _ = scope
    return any(resource_matches(p, arn) for p in resources) != not_resource


def _scopes(kept: KeptPermission, grant: Grant, rules: NarrowingRules) -> list[Scope]:
    """Resource scopes to allow ``kept`` on: narrowed to the ARNs seen when sound, else as granted."""
    caps: list[Statement | None] = list(_preferred(grant.caps)) or [None]
    scopes = [s for g in _preferred(grant.statements) for c in caps if (s := _intersect(g, c)) is not None]
    if kept.state != "used" or not (kept.narrowable and kept.resources_seen):
        return scopes
    narrowed = tuple(sorted({rules.apply(arn) for arn in kept.resources_seen}))
    if len(narrowed) > rules.max_resources:
        return scopes
    fitting = [s for s in scopes if all(_covers(s, arn) for arn in narrowed)]
    return [(narrowed, False, s[2]) for s in fitting] or scopes


def _sid(service: str, label: str, index: int) -> str:
    words = re.split(r"[^A-Za-z0-9]+", service)
    return "".join(w[:1].upper() + w[1:] for w in words if w) + label + (str(index) if index else "")


def _allow_statements(
    kept: Sequence[KeptPermission], audit: IdentityAudit, rules: NarrowingRules
) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, tuple[str, ...], bool, str | None], set[str]] = defaultdict(set)
    for perm in kept:
        label = "Used" if perm.state == "used" else "KeptUnobservable"
        for resources, not_resource, condition in _scopes(perm, audit.effective[perm.action], rules):
            groups[(perm.action.split(":", 1)[0].lower(), label, resources, not_resource, condition)].add(perm.action)
    statements, counters = [], defaultdict(int)
    for (service, label, resources, not_resource, condition), actions in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "Used", kv[0][2], kv[0][3], kv[0][4] or "")
    ):
        index = counters[(service, label)]
        counters[(service, label)] += 1
        statement: dict[str, Any] = {
            "Sid": _sid(service, label, index),
            "Effect": "Allow",
            "Action": sorted(actions),
            ("NotResource" if not_resource else "Resource"): list(resources) if len(resources) > 1 else resources[0],
        }
        if condition:
            statement["Condition"] = json.loads(condition)
        statements.append(statement)
    return statements


def _deny_statements(audit: IdentityAudit) -> list[dict[str, Any]]:
    """Every explicit Deny of the identity's own policies, as written. They are carried whole: an
    identity Deny also blocks what resource policies grant, so dropping one could widen access even
    for actions the new policy does not allow (the permissions boundary stays attached as it is)."""
    out = []
    for index, stmt in enumerate(s for s in audit.statements if s.effect == "Deny" and s.layer == "identity"):
        statement: dict[str, Any] = {
            "Sid": f"CarriedDeny{index}",
            "Effect": "Deny",
            ("NotAction" if stmt.not_action else "Action"): list(stmt.actions),
            ("NotResource" if stmt.not_resource else "Resource"): list(stmt.resources),
        }
        if stmt.condition:
            statement["Condition"] = json.loads(stmt.condition)
        out.append(statement)
    return out


def _size(statements: list[dict[str, Any]]) -> int:
    return len(orjson.dumps({"Version": POLICY_VERSION, "Statement": statements}))


def _split_statement(statement: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Split one statement's Action list so each piece fits in a document."""
    if _size([statement]) <= limit or len(statement.get("Action", [])) <= 1:
        return [statement]
    actions = statement["Action"]
    half = len(actions) // 2
    parts = []
    for suffix, chunk in (("A", actions[:half]), ("B", actions[half:])):
        parts += _split_statement({**statement, "Sid": statement["Sid"] + suffix, "Action": chunk}, limit)
    return parts


def pack(
    statements: list[dict[str, Any]], denies: list[dict[str, Any]], limit: int = MANAGED_POLICY_LIMIT
) -> list[dict[str, Any]]:
    """Pack statements into as few documents as fit ``limit``; every document repeats the denies.

    Only denies give one deny-only document (they must stay in force); nothing at all gives none: AWS
    rejects a policy without statements.
    """
    if not statements:
        return [{"Version": POLICY_VERSION, "Statement": denies}] if denies else []
    budget = limit - (_size(denies) - _size([]))
    documents: list[list[dict[str, Any]]] = []
    for piece in (p for s in statements for p in _split_statement(s, budget)):
        if documents and _size([*documents[-1], piece]) <= budget:
            documents[-1].append(piece)
        else:
            documents.append([piece])
    return [{"Version": POLICY_VERSION, "Statement": doc + denies} for doc in documents]


def build_policy(kept: Sequence[KeptPermission], audit: IdentityAudit, rules: NarrowingRules) -> PolicyPlan:
    denies = _deny_statements(audit)
    return PolicyPlan(
        pack(_allow_statements(kept, audit, rules), denies), [k for k in kept if k.state == "unobservable"], denies
    )


# ----------------------------------------------------------------------------- the plan

MAX_POLICY_VERSIONS = 5
MAX_POLICY_NAME = 128
ATTACHED_POLICIES_QUOTA = 10


@dataclass(frozen=True)
class _Existing:
    """A managed policy of the export (a previous run's, when the name is ours)."""

    arn: str
    versions: tuple[str, ...]
    default: str | None


def _parts(base_name: str, count: int) -> list[str]:
    return [base_name if i == 1 else f"{base_name}-{i}" for i in range(1, count + 1)]


def _entity(audit: IdentityAudit) -> str:
    """``role`` or ``user``: the word of the aws iam sub-commands."""
    return "user" if audit.kind == "user" else "role"


def _detach_commands(audit: IdentityAudit, keep: set[str]) -> list[str]:
    """Remove what grants the identity its permissions today (the boundary stays: it only narrows)."""
    kind, name = _entity(audit), audit.name
    commands: dict[str, None] = {}
    for stmt in audit.statements:
        if stmt.layer != "identity" or stmt.source in keep:
            continue
        if stmt.source_kind in ("aws-managed", "customer-managed"):
            words = [f"detach-{kind}-policy", f"--{kind}-name={name}", f"--policy-arn={stmt.source}"]
        elif stmt.source_kind == "inline":
            words = [f"delete-{kind}-policy", f"--{kind}-name={name}", f"--policy-name={stmt.policy}"]
        elif stmt.source_kind.startswith("group-") and stmt.scope:
            words = ["remove-user-from-group", f"--user-name={name}", f"--group-name={stmt.scope.rsplit('/', 1)[-1]}"]
        else:
            continue
        commands[sh("aws", "iam", *words)] = None
    return list(commands)


def _publish_commands(name: str, path: str, document_path: str, existing: _Existing | None) -> list[str]:
    """Create the policy, or add a version to the one a previous run created."""
    document = f"--policy-document=file://{document_path}"
    if existing is None:
        return [sh("aws", "iam", "create-policy", f"--policy-name={name}", f"--path={path}", document)]
    commands = []
    if len(existing.versions) >= MAX_POLICY_VERSIONS:
        oldest = next(v for v in existing.versions if v != existing.default)
        commands.append(
            sh("aws", "iam", "delete-policy-version", f"--policy-arn={existing.arn}", f"--version-id={oldest}")
        )
    commands.append(
        sh("aws", "iam", "create-policy-version", f"--policy-arn={existing.arn}", document, "--set-as-default")
    )
    return commands


def _existing_policies(result: AuditResult) -> dict[tuple[str, str], _Existing]:
    """Managed policies of the export by (account, case-folded name)."""
    rows = result.data.managed.filter((pl.col("provider") == "aws") & (pl.col("kind") == "policy"))
    return {
        (account, name.casefold()): _Existing(arn, tuple(versions or ()), default)
        for account, name, arn, versions, default in rows.select(
            "account", "name", "id", "versions", "default_version"
        ).iter_rows()
    }


def _policy_names(audits: Sequence[IdentityAudit], parts: Mapping[str, int]) -> dict[str, str]:
    """A managed-policy name per identity, unique per account for every part (IAM compares names
    case-insensitively, and a role ``x-2`` must not meet part 2 of role ``x``)."""
    most = max(parts.values(), default=1)
    names: dict[str, str] = {}
    for account in sorted({a.account for a in audits}):
        bases = {a.identity: base.slug(f"auditor-{_entity(a)}-{a.name}") for a in audits if a.account == account}
        names.update(
            base.allocate(
                bases, lambda _, b: [*_parts(b, most), *_parts(f"{b}-exception", most)], limit=MAX_POLICY_NAME - 14
            )
        )
    return names


def _policy_path(path: str | None) -> str:
    return path if isinstance(path, str) and path.startswith("/") and path.endswith("/") else "/"


def _disable_commands(audit: IdentityAudit) -> list[str]:
    """A dormant user's access keys are deactivated too (the export does not list their ids)."""
    if audit.kind != "user":
        return []
    listing = sh(
        "aws",
        "iam",
        "list-access-keys",
        f"--user-name={audit.name}",
        "--query=AccessKeyMetadata[].AccessKeyId",
        "--output=text",
    )
    update = sh("aws", "iam", "update-access-key", f"--user-name={audit.name}", "--status=Inactive", "--access-key-id")
    return [f'for key in $({listing}); do {update} "$key"; done']


def _publish(
    audit: IdentityAudit,
    entry: IdentityPolicies,
    documents: Sequence[dict[str, Any]],
    names: Sequence[str],
    stem: str,
    path: str,
    existing: Mapping[tuple[str, str], _Existing],
) -> tuple[list[str], set[str]]:
    """Write ``documents`` as ``<stem>.json``, ``<stem>.2.json``, ...: the commands that create (or
    version) and attach them, and their ARNs."""
    kind = _entity(audit)
    partition = audit.identity.split(":", 2)[1] if audit.identity.startswith("arn:") else "aws"
    arns: set[str] = set()
    commands: list[str] = []
    for index, (document, name) in enumerate(zip(documents, names, strict=True), start=1):
        file_path = f"{entry.folder}/{stem}.json" if index == 1 else f"{entry.folder}/{stem}.{index}.json"
        entry.files.append(PolicyFile(file_path, json_text(document)))
        known = existing.get((audit.account, name.casefold()))
        arn = known.arn if known else f"arn:{partition}:iam::{audit.account}:policy{path}{name}"
        arns.add(arn)
        commands += _publish_commands(name, path, file_path, known)
        commands.append(sh("aws", "iam", f"attach-{kind}-policy", f"--{kind}-name={audit.name}", f"--policy-arn={arn}"))
    return commands, arns


def _identity_plan(
    audit: IdentityAudit,
    plan: PolicyPlan,
    entry: IdentityPolicies,
    base_name: str,
    path: str,
    existing: Mapping[tuple[str, str], _Existing],
) -> None:
    kind = _entity(audit)
    if entry.dormant:  # only the carried denies stay; what the logs cannot show is an exception
        denies = pack([], plan.denies)
        keep, ours = _publish(audit, entry, denies, _parts(base_name, len(denies)), "denies", path, existing)
        exception_names = _parts(f"{base_name}-exception", len(plan.documents))
        entry.exceptions = _publish(audit, entry, plan.documents, exception_names, "exception", path, existing)[0]
        entry.apply = keep + _detach_commands(audit, ours) + _disable_commands(audit)
        entry.note = "no activity at all in the window: the plan removes every grant" + (
            f"; to keep the {len(plan.unobservable)} permission(s) the logs cannot show, run the exception commands"
            if plan.unobservable
            else ""
        )
        return
    publish, ours = _publish(
        audit, entry, plan.documents, _parts(base_name, len(plan.documents)), "policy", path, existing
    )
    entry.apply = publish + _detach_commands(audit, ours)
    attached = {s.source for s in audit.statements if s.source_kind in ("aws-managed", "customer-managed")}
    if not any(st["Effect"] == "Allow" for doc in plan.documents for st in doc["Statement"]):
        entry.note = "nothing was used in the window: the plan detaches every policy instead of attaching a new one"
    elif len(plan.documents) + len(attached - ours) > ATTACHED_POLICIES_QUOTA:
        entry.note = (
            f"{len(plan.documents)} new document(s) next to {len(attached - ours)} attached managed policies exceed "
            f"the default quota of {ATTACHED_POLICIES_QUOTA} per {kind}: run the detach commands first"
        )


def _destructive_grants(result: AuditResult) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per AWS identity its granted destructive permissions in two lists: the blocklist's ``deny``
    (never used; sorted) and those it keeps, all an account's SCP needs of its other grants since a
    deny list holds destructive permissions only."""
    blocked = pl.col("state").is_in(BLOCKED_STATES)
    grouped = (
        result.permissions.lazy()
        .filter((pl.col("provider") == "aws") & pl.col("granted") & pl.col("destructive"))
        .group_by("identity")
        .agg(pl.col("action").filter(blocked).sort().alias("deny"), pl.col("action").filter(~blocked).alias("kept"))
        .collect()
    )
    denied, kept = {}, {}
    for identity, deny, keep in grouped.iter_rows():
        if deny:
            denied[identity] = deny
        if keep:
            kept[identity] = keep
    return denied, kept


def aws_policies(result: AuditResult, folders: Mapping[str, str]) -> list[IdentityPolicies]:
    """The least-privilege policy files and plan of every audited AWS identity."""
    rules = NarrowingRules.of(result.rules)
    kept = base.kept_permissions(result)
    audits = [a for a in result.audits if a.provider == "aws"]
    plans = {a.identity: build_policy(kept.get(("aws", a.identity), []), a, rules) for a in audits}
    names = _policy_names(audits, {i: len(p.documents) for i, p in plans.items()})
    existing = _existing_policies(result)
    dormant = set(result.findings.filter(pl.col("kind") == "dormant-identity")["identity"].to_list())
    denied, kept_destructive = _destructive_grants(result)
    catalog = result.data.catalogs.get("aws")
    identities = result.data.identities.filter(pl.col("provider") == "aws")
    selected_by = dict(identities.select("identity", "selected_by").iter_rows())
    tagged: dict[str, list[tuple[IdentityAudit, str, list[str], set[str]]]] = {}
    paths = dict(result.data.identities.filter(pl.col("provider") == "aws").select("identity", "path").iter_rows())
    out = []
    for audit in audits:
        plan = plans[audit.identity]
        entry = IdentityPolicies("aws", audit.account, audit.identity, audit.name, folders[audit.identity])
        entry.kept_unobservable = [{"permission": k.action, "reason": k.reason or ""} for k in plan.unobservable]
        entry.dormant = audit.identity in dormant
        path = _policy_path(paths.get(audit.identity))
        _identity_plan(audit, plan, entry, names[audit.identity], path, existing)
        if catalog is not None and audit.kind in ("role", "user"):
            boundary = plan.documents[0] if len(plan.documents) == 1 and not entry.dormant else None
            boundary_name = f"{names[audit.identity]}-boundary"
            add_enforcement(entry, audit, denied.get(audit.identity, []), catalog, boundary, boundary_name, path)
        if catalog is not None and (selected_by.get(audit.identity) or "").startswith("tag "):
            mine = denied.get(audit.identity, [])
            kept = set(kept_destructive.get(audit.identity, []))
            tagged.setdefault(audit.account, []).append((audit, selected_by[audit.identity][4:], mine, kept))
        out.append(entry)
    return out + (scp_plans(tagged, catalog) if catalog is not None else [])


base.register("aws", aws_policies)
