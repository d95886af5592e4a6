"""Least-privilege policy files per identity, in each provider's own format (registry by provider)."""

from __future__ import annotations

import json
from collections.abc import Callable

from auditor.audit import AuditResult
from auditor.emit.aws_iam_policy import NarrowingRules, build_policy
from auditor.emit.gcp_role import gcp_roles
from auditor.emit.least_privilege import IdentityPolicies, PolicyFile, kept_permissions
from auditor.policy_files import slug

__all__ = ["POLICY_EMITTERS", "IdentityPolicies", "PolicyFile", "all_policies", "kept_permissions"]


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
POLICY_EMITTERS: dict[str, Callable[[AuditResult], list[IdentityPolicies]]] = {
    "aws": aws_policies,
    "gcp": gcp_roles,
}


def all_policies(result: AuditResult) -> list[IdentityPolicies]:
    providers = sorted({a.provider for a in result.audits})
    return [p for provider in providers if provider in POLICY_EMITTERS for p in POLICY_EMITTERS[provider](result)]
