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
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from auditor.catalog import Catalog
from auditor.diff import IdentityAudit
from auditor.emit.base import IdentityPolicies, PolicyFile, json_text, sh

#: Inline policy size limits (characters, white space not counted): roles 10,240, users 2,048.
INLINE_LIMIT = {"role": 10240, "user": 2048}
DENY_POLICY_NAME = "auditor-blocklist-deny"
MANAGED_LIMIT = 6144  # managed policy document, characters


def compact(actions: Iterable[str], catalog: Catalog) -> list[str]:
    """``actions`` as few patterns as possible that match exactly them among the catalog's actions."""
    # Agents holding the same grant (AdministratorAccess, say) deny the same set: compute it once.
    key = (id(catalog), frozenset(actions))
    hit = _COMPACTED.get(key)
    if hit is None or hit[0] is not catalog:
        if len(_COMPACTED) >= 256:
            _COMPACTED.clear()
        hit = _COMPACTED[key] = (catalog, _compact(key[1], catalog))
    return list(hit[1])


_COMPACTED: dict[tuple[int, frozenset[str]], tuple[Catalog, tuple[str, ...]]] = {}


def _compact(actions: frozenset[str], catalog: Catalog) -> tuple[str, ...]:
    wanted = sorted(actions, key=str.lower)
    by_service: dict[str, list[str]] = {}
    for action in wanted:
        by_service.setdefault(action.split(":", 1)[0].lower(), []).append(action)
    out: list[str] = []
    for service, denied in sorted(by_service.items()):
        known = sorted(a.lower() for a in catalog.actions_of_service(service))
        chosen = {a.lower() for a in denied}
        if not known or not chosen <= set(known):  # outside the catalog: name each one
            out += denied
            continue
        if len(chosen) == len(known):
            out.append(f"{denied[0].split(':', 1)[0]}:*")
            continue
        out += _runs(denied, known, sorted(chosen))
    return tuple(out)


def _span(names: Sequence[str], prefix: str) -> tuple[int, int]:
    """Where the names starting with ``prefix`` sit in the sorted ``names``."""
    return bisect.bisect_left(names, prefix), bisect.bisect_left(names, prefix + "\uffff")


def _runs(denied: list[str], known: list[str], mine: list[str]) -> list[str]:
    """Per denied action the shortest prefix whose catalog actions are all denied."""
    patterns: list[str] = []
    covered_to = 0  # ``mine[:covered_to]`` is matched by the patterns so far (both in sorted order)
    for action in denied:
        lower = action.lower()
        position = bisect.bisect_left(mine, lower)
        if position < covered_to:
            continue
        start = lower.index(":") + 2
        for end in range(start, len(lower)):
            prefix = lower[:end]
            first, last = _span(mine, prefix)
            known_first, known_last = _span(known, prefix)
            if known_last - known_first == last - first:  # every catalog action with it is denied
                patterns.append(action[:end] + "*")
                covered_to = last
                break
        else:  # no prefix is exact (longer names share it): the action itself
            patterns.append(action)
            covered_to = position + 1
    return patterns


def _document(sid: str, effect: str, actions: list[str]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [{"Sid": sid, "Effect": effect, "Action": actions, "Resource": "*"}]}


def _size(document: dict[str, Any]) -> int:
    return len(json.dumps(document, separators=(",", ":")))


def _json_length(text: str) -> int:
    """``len(json.dumps(text))``: a permission name has nothing to escape, so this is its length plus
    the quotes (json.dumps for anything else)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return len(text) + 2
    return len(json.dumps(text))


def _chunks(patterns: list[str], document: Callable[[list[str]], dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """Documents of at most ``limit`` characters each, holding the patterns in order.

    A document's size is that of its empty form plus each pattern's JSON string and a comma.
    """
    empty = _size(document([]))
    documents: list[dict[str, Any]] = []
    current: list[str] = []
    size = empty
    for pattern in patterns:
        grows = _json_length(pattern) + (1 if current else 0)
        if current and size + grows > limit:
            documents.append(document(current))
            current, size, grows = [], empty, grows - 1
        current.append(pattern)
        size += grows
    return [*documents, document(current)] if current else documents


def _deny_document(actions: list[str]) -> dict[str, Any]:
    return _document("AuditorBlocklistDeny", "Deny", actions)


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
            entry.files.append(PolicyFile(path, json_text(document)))
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
            parts = _chunks(patterns, _deny_document, MANAGED_LIMIT)
            partition = audit.identity.split(":", 2)[1] if audit.identity.startswith("arn:") else "aws"
            for index, part in enumerate(parts, start=1):
                path = f"{entry.folder}/deny.json" if index == 1 else f"{entry.folder}/deny.{index}.json"
                name = f"{boundary_name.removesuffix('-boundary')}-deny" + ("" if index == 1 else f"-{index}")
                entry.files.append(PolicyFile(path, json_text(part)))
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
        entry.files.append(PolicyFile(path, json_text(boundary)))
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


#: Service control policy document limit (characters).
SCP_LIMIT = 5120
SCPS_PER_TARGET = 5


def scp_plans(
    accounts: dict[str, list[tuple[IdentityAudit, str, list[str], set[str]]]], catalog: Catalog
) -> list[IdentityPolicies]:
    """Per account an Organizations SCP denying, for principals carrying the agents' tag, what every
    tagged agent is denied and none of them may use (an action one agent uses is never in it).

    ``accounts``: account -> [(audit, "key=value" tag it was selected by, its deny list, the destructive
    permissions it keeps)].
    """
    out = []
    for account, agents in sorted(accounts.items()):
        denied = set().union(*(set(d) for _, _, d, _ in agents))
        needed = set().union(*(kept for _, _, _, kept in agents))
        blocked = sorted(denied - needed)
        if not blocked:
            continue
        tags: dict[str, set[str]] = {}
        for _, tag, _, _ in agents:
            key, _, value = tag.partition("=")
            tags.setdefault(key, set()).add(value)
        condition = {"StringEquals": {f"aws:PrincipalTag/{k}": sorted(v) for k, v in sorted(tags.items())}}
        folder = f"policies/aws/{account}/organizations"
        entry = IdentityPolicies(
            "aws", account, f"arn:aws:organizations::{account}:scp/auditor-agents-deny", "agents-deny (SCP)", folder
        )
        for index, document in enumerate(_scp_chunks(compact(blocked, catalog), condition), start=1):
            path = f"{folder}/agents-deny.json" if index == 1 else f"{folder}/agents-deny.{index}.json"
            name = f"auditor-agents-deny-{account}" + ("" if index == 1 else f"-{index}")
            entry.files.append(PolicyFile(path, json.dumps(document, separators=(",", ":")) + "\n"))
            create = sh(
                "aws",
                "organizations",
                "create-policy",
                "--type=SERVICE_CONTROL_POLICY",
                f"--name={name}",
                f"--description=auditor: destructive actions no agent in {account} uses",
                f"--content=file://{path}",
                "--query=Policy.PolicySummary.Id",
                "--output=text",
            )
            entry.enforce.append(
                f'id=$({create}) && aws organizations attach-policy --policy-id="$id" {sh(f"--target-id={account}")}'
            )
        tagged = ", ".join(f"{k}={'|'.join(sorted(v))}" for k, v in sorted(tags.items()))
        entry.enforce_note = (
            f"applies to every principal of account {account} tagged {tagged}; run from the management account"
        )
        if len(entry.files) > SCPS_PER_TARGET - 1:
            entry.enforce_note += (
                f"; it needs {len(entry.files)} SCPs but an account takes {SCPS_PER_TARGET} (FullAWSAccess "
                "included): attach the rest to its parent OUs, or narrow the administrator agents first"
            )
        out.append(entry)
    return out


def _scp_chunks(patterns: list[str], condition: dict[str, Any]) -> list[dict[str, Any]]:
    def document(actions: list[str]) -> dict[str, Any]:
        statement = {
            "Sid": "AuditorAgentsDeny",
            "Effect": "Deny",
            "Action": actions,
            "Resource": "*",
            "Condition": condition,
        }
        return {"Version": "2012-10-17", "Statement": [statement]}

    return _chunks(patterns, document, SCP_LIMIT)
