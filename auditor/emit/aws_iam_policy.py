"""Least-privilege AWS IAM policy per identity, ready for ``aws iam create-policy``.

Allows exactly the permissions used in the window (plus, unless dropped, the unobservable ones,
in separate statements whose Sid says so), grouped by service, with Resource narrowed to the ARNs
seen where that is sound and otherwise the Resource of the statement that granted it — never
wider than the original grant. Conditions of conditional grants are carried over, as are the
explicit Deny statements that touch a kept permission. Documents over the managed-policy size
limit are split.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from auditor.catalog import service_of
from auditor.diff import Grant, IdentityAudit, Statement
from auditor.matching import glob_regex, resource_matches
from auditor.narrowing import NarrowingRules

#: Managed policy document limit: 6,144 characters, white space not counted.
MANAGED_POLICY_LIMIT = 6144
POLICY_VERSION = "2012-10-17"


@dataclass
class KeptPermission:
    """A permission row of the diff that the least-privilege policy keeps."""

    action: str
    state: str  # used | unobservable
    resources_seen: list[str]
    narrowable: bool
    reason: str | None = None  # why unobservable


@dataclass
class PolicyPlan:
    documents: list[dict[str, Any]]
    unobservable: list[KeptPermission] = field(default_factory=list)


def _preferred(statements: list[Statement]) -> list[Statement]:
    """The unconditional statements if any, else every conditional one (each grants on its own)."""
    unconditional = [s for s in statements if not s.condition]
    return unconditional or statements


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
    if cap is None or cap.not_resource or "*" in cap.resources:
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
            groups[(service_of("aws", perm.action), label, resources, not_resource, condition)].add(perm.action)
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


def _deny_statements(kept_actions: set[str], audit: IdentityAudit) -> list[dict[str, Any]]:
    """Explicit denies of the original policies and boundary that still matter for a kept permission."""
    out = []
    for index, stmt in enumerate(s for s in audit.statements if s.effect == "Deny"):
        if stmt.not_action:
            actions: list[str] = list(stmt.actions)
        else:
            actions = sorted(a for a in kept_actions if any(glob_regex(p).fullmatch(a) for p in stmt.actions))
            if not actions:
                continue
        statement: dict[str, Any] = {
            "Sid": f"CarriedDeny{index}",
            "Effect": "Deny",
            ("NotAction" if stmt.not_action else "Action"): actions,
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

    No statements gives no document: AWS rejects a policy without statements, and an identity that
    needs nothing should have its policies detached instead.
    """
    budget = limit - (_size(denies) - _size([]))
    documents: list[list[dict[str, Any]]] = []
    for piece in (p for s in statements for p in _split_statement(s, budget)):
        if documents and _size([*documents[-1], piece]) <= budget:
            documents[-1].append(piece)
        else:
            documents.append([piece])
    return [{"Version": POLICY_VERSION, "Statement": doc + denies} for doc in documents]


def build_policy(kept: Sequence[KeptPermission], audit: IdentityAudit, rules: NarrowingRules) -> PolicyPlan:
    allows = _allow_statements(kept, audit, rules)
    denies = _deny_statements({k.action for k in kept}, audit) if allows else []
    return PolicyPlan(pack(allows, denies), [k for k in kept if k.state == "unobservable"])
