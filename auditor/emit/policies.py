"""Least-privilege policy files per identity, in each provider's own format (registry by provider)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from auditor.audit import AuditResult
from auditor.emit.aws_iam_policy import KeptPermission, NarrowingRules, build_policy
from auditor.policy_files import slug


@dataclass(frozen=True)
class PolicyFile:
    path: str  # relative to the output directory
    content: str


@dataclass
class IdentityPolicies:
    """The least-privilege output for one identity."""

    provider: str
    account: str
    identity: str
    name: str
    files: list[PolicyFile] = field(default_factory=list)
    apply: list[str] = field(default_factory=list)  # commands that apply the files
    kept_unobservable: list[dict[str, str]] = field(default_factory=list)
    note: str | None = None


def kept_permissions(result: AuditResult, provider: str, identity: str) -> list[KeptPermission]:
    """Permissions the least-privilege output keeps: used ones, plus unobservable ones unless dropped."""
    states = ["used"] if result.options.drop_unobservable else ["used", "unobservable"]
    rows = result.permissions.filter(
        (pl.col("provider") == provider)
        & (pl.col("identity") == identity)
        & pl.col("granted")
        & pl.col("state").is_in(states)
    )
    return [
        KeptPermission(r["action"], r["state"], r["resources_seen"], r["narrowable"], r["unobservable_reason"])
        for r in rows.iter_rows(named=True)
    ]


def aws_policies(result: AuditResult) -> list[IdentityPolicies]:
    rules = NarrowingRules.load(result.rules.dirs)
    out = []
    for audit in (a for a in result.audits if a.provider == "aws"):
        plan = build_policy(kept_permissions(result, "aws", audit.identity), audit, rules)
        entry = IdentityPolicies("aws", audit.account, audit.identity, audit.name)
        base = f"policies/aws/{slug(audit.account)}/{slug(audit.name)}"
        for index, document in enumerate(plan.documents, start=1):
            path = f"{base}.json" if index == 1 else f"{base}.{index}.json"
            policy_name = f"{slug(audit.name)}-least-privilege" + (f"-{index}" if index > 1 else "")
            entry.files.append(PolicyFile(path, json.dumps(document, indent=2) + "\n"))
            entry.apply.append(f"aws iam create-policy --policy-name {policy_name} --policy-document file://{path}")
        if not plan.documents:
            entry.note = "nothing was used in the window: detach every policy instead of attaching a new one"
        elif len(plan.documents) > 10:
            entry.note = f"{len(plan.documents)} documents exceed the default quota of 10 managed policies per role"
        entry.kept_unobservable = [{"permission": k.action, "reason": k.reason or ""} for k in plan.unobservable]
        out.append(entry)
    return out


#: One emitter per provider; each returns the least-privilege output of that provider's identities.
POLICY_EMITTERS: dict[str, Callable[[AuditResult], list[IdentityPolicies]]] = {"aws": aws_policies}


def all_policies(result: AuditResult) -> list[IdentityPolicies]:
    providers = sorted({a.provider for a in result.audits})
    return [p for provider in providers if provider in POLICY_EMITTERS for p in POLICY_EMITTERS[provider](result)]
