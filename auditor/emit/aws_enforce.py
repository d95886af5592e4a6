"""Defence in depth for AWS: the blocklist's ``deny`` as an explicit-Deny policy the cloud enforces,
and the least-privilege policy as the identity's permissions boundary.

An explicit Deny beats every Allow (AdministratorAccess included), so ``deny.json`` protects even
before the least-privilege plan is applied. Its actions are exactly the identity's ``deny``
permissions: runs of them are written as ``prefix*`` only where every action of the catalog with
that prefix is denied, so a wildcard never reaches a permission the agent uses or is gated on.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from typing import Any

from auditor.catalog import Catalog
from auditor.diff import IdentityAudit
from auditor.emit.base import IdentityPolicies, PolicyFile, sh

#: Inline policy size limits (characters, white space not counted): roles 10,240, users 2,048.
INLINE_LIMIT = {"role": 10240, "user": 2048}
DENY_POLICY_NAME = "auditor-blocklist-deny"
MANAGED_LIMIT = 6144  # managed policy document, characters


def compact(actions: Iterable[str], catalog: Catalog) -> list[str]:
    """``actions`` as few patterns as possible that match exactly them among the catalog's actions."""
    wanted = sorted(set(actions), key=str.lower)
    by_service: dict[str, list[str]] = {}
    for action in wanted:
        by_service.setdefault(action.split(":", 1)[0].lower(), []).append(action)
    out: list[str] = []
    for service, denied in sorted(by_service.items()):
        known = sorted((a.lower() for a in catalog.actions_of_service(service)), key=str)
        chosen = {a.lower() for a in denied}
        if not known or not chosen <= set(known):  # outside the catalog: name each one
            out += denied
            continue
        if len(chosen) == len(known):
            out.append(f"{denied[0].split(':', 1)[0]}:*")
            continue
        out += _runs(denied, known, chosen)
    return out


def _count(names: Sequence[str], prefix: str) -> int:
    return bisect.bisect_left(names, prefix + "\uffff") - bisect.bisect_left(names, prefix)


def _runs(denied: list[str], known: list[str], chosen: set[str]) -> list[str]:
    """Per denied action the shortest prefix whose catalog actions are all denied."""
    mine = sorted(chosen)
    patterns: list[str] = []
    covered: set[str] = set()
    for action in denied:
        lower = action.lower()
        if lower in covered:
            continue
        start = lower.index(":") + 2
        for end in range(start, len(lower)):
            prefix = lower[:end]
            if _count(known, prefix) == _count(mine, prefix):  # every catalog action with it is denied
                patterns.append(action[:end] + "*")
                covered.update(a for a in mine if a.startswith(prefix))
                break
        else:  # no prefix is exact (longer names share it): the action itself
            patterns.append(action)
            covered.add(lower)
    return patterns


def _document(sid: str, effect: str, actions: list[str]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Sid": sid, "Effect": effect, "Action": actions, "Resource": "*"}]}


def _size(document: dict[str, Any]) -> int:
    return len(json.dumps(document, separators=(",", ":")))


def _chunks(patterns: list[str]) -> list[dict[str, Any]]:
    """Deny documents of at most MANAGED_LIMIT characters each, the patterns in order."""
    documents: list[dict[str, Any]] = []
    current: list[str] = []
    for pattern in patterns:
        if current and _size(_document("AuditorBlocklistDeny", "Deny", [*current, pattern])) > MANAGED_LIMIT:
            documents.append(_document("AuditorBlocklistDeny", "Deny", current))
            current = []
        current.append(pattern)
    return [*documents, _document("AuditorBlocklistDeny", "Deny", current)] if current else documents


def add_enforcement(
    entry: IdentityPolicies,
    audit: IdentityAudit,
    deny_actions: Sequence[str],
    catalog: Catalog,
    boundary: dict[str, Any] | None,
    boundary_name: str,
    policy_path: str,
) -> None:
    """Write ``deny.json`` (and ``boundary.json``) into the identity's folder, with their commands."""
    kind = "user" if audit.kind == "user" else "role"
    if deny_actions:
        patterns = compact(deny_actions, catalog)
        document = _document("AuditorBlocklistDeny", "Deny", patterns)
        if _size(document) <= INLINE_LIMIT[kind]:
            path = f"{entry.folder}/deny.json"
            entry.files.append(PolicyFile(path, json.dumps(document, indent=2) + "\n"))
            entry.enforce.append(
                sh(
                    "aws",
                    "iam",
                    f"put-{kind}-policy",
                    f"--{kind}-name={audit.name}",
                    f"--policy-name={DENY_POLICY_NAME}",
                    f"--policy-document=file://{path}",
                )
            )
        else:  # too large for an inline policy: managed policies of at most 6,144 characters each
            parts = _chunks(patterns)
            partition = audit.identity.split(":", 2)[1] if audit.identity.startswith("arn:") else "aws"
            for index, part in enumerate(parts, start=1):
                path = f"{entry.folder}/deny.json" if index == 1 else f"{entry.folder}/deny.{index}.json"
                name = f"{boundary_name.removesuffix('-boundary')}-deny" + ("" if index == 1 else f"-{index}")
                entry.files.append(PolicyFile(path, json.dumps(part, indent=2) + "\n"))
                arn = f"arn:{partition}:iam::{audit.account}:policy{policy_path}{name}"
                entry.enforce += [
                    sh(
                        "aws",
                        "iam",
                        "create-policy",
                        f"--policy-name={name}",
                        f"--path={policy_path}",
                        f"--policy-document=file://{path}",
                    ),
                    sh("aws", "iam", f"attach-{kind}-policy", f"--{kind}-name={audit.name}", f"--policy-arn={arn}"),
                ]
            if len(parts) > 1:
                entry.enforce_note = (
                    f"the deny list needs {len(parts)} managed policies (over the inline limit for a {kind}); "
                    "the default quota is 10 attached per identity: apply the least-privilege plan first"
                )
    if boundary is not None:
        path = f"{entry.folder}/boundary.json"
        entry.files.append(PolicyFile(path, json.dumps(boundary, indent=2) + "\n"))
        partition = audit.identity.split(":", 2)[1] if audit.identity.startswith("arn:") else "aws"
        arn = f"arn:{partition}:iam::{audit.account}:policy{policy_path}{boundary_name}"
        entry.enforce += [
            sh(
                "aws",
                "iam",
                "create-policy",
                f"--policy-name={boundary_name}",
                f"--path={policy_path}",
                f"--policy-document=file://{path}",
            ),
            sh(
                "aws",
                "iam",
                f"put-{kind}-permissions-boundary",
                f"--{kind}-name={audit.name}",
                f"--permissions-boundary={arn}",
            ),
        ]
