"""AWS grants: parse ``aws iam get-account-authorization-details`` output into identities and grants.

Accepts both what the CLI / boto3 print (policy documents as objects) and the raw API form
(URL-encoded JSON strings). Users inherit their groups' policies; managed policies resolve to their
default version; permissions boundaries become ``layer="boundary"`` statements.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from auditor import model
from auditor.connectors.base import GrantSet
from auditor.errors import InputError
from auditor.fileio import load_json
from auditor.selection import AgentSelector

AUTH_KEYS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")


class PolicyError(ValueError):
    """A policy document that is not valid IAM policy JSON."""


def decode_document(document: Any) -> dict[str, Any]:
    """A policy document as a dict, from a dict or the API's URL-encoded JSON string."""
    if isinstance(document, str):
        text = urllib.parse.unquote(document) if document.lstrip().startswith("%") else document
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            try:
                document = orjson.loads(urllib.parse.unquote(text))
            except orjson.JSONDecodeError as exc:
                raise PolicyError(f"policy document is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise PolicyError(f"policy document is a {type(document).__name__}, expected an object")
    return document


def _as_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise PolicyError(f"{what} must be a string or a list of strings")


def statements(document: Any) -> Iterator[dict[str, Any]]:
    """Normalized statements of one policy document (``Statement`` may be an object or a list)."""
    doc = decode_document(document)
    raw = doc.get("Statement", [])
    for index, stmt in enumerate(raw if isinstance(raw, list) else [raw]):
        if not isinstance(stmt, dict):
            raise PolicyError(f"Statement[{index}] is not an object")
        effect = stmt.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"Statement[{index}] has Effect {effect!r}, expected Allow or Deny")
        if ("Action" in stmt) == ("NotAction" in stmt):
            raise PolicyError(f"Statement[{index}] needs exactly one of Action / NotAction")
        not_resource = "NotResource" in stmt
        resources = _as_list(stmt.get("NotResource" if not_resource else "Resource"), "Resource")
        condition = stmt.get("Condition")
        yield {
            "index": index,
            "sid": stmt.get("Sid"),
            "effect": effect,
            "not_action": "NotAction" in stmt,
            "actions": _as_list(stmt.get("NotAction", stmt.get("Action")), "Action"),
            "not_resource": not_resource,
            "resources": resources or (["*"] if not not_resource else []),
            "condition": json.dumps(condition, sort_keys=True) if condition else None,
        }


def _time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    """A string field, or None when the export holds something else there (``null``, a number)."""
    return value if isinstance(value, str) and value else None


def _arn_path(arn: str) -> str:
    """``arn:aws:iam::1:role/a/b/name`` -> ``/a/b/``: IAM names hold no ``/``, so the ARN fixes the path."""
    parts = arn.split(":", 5)[5].split("/")
    return "/" + "".join(f"{part}/" for part in parts[1:-1])


def _tags(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        return []
    return [
        (str(t.get("Key", "")), str(t.get("Value", "")))
        for t in value
        if isinstance(t, dict) and isinstance(t.get("Key"), str)
    ]


def _instance_profiles(role: Mapping[str, Any]) -> list[str]:
    profiles = role.get("InstanceProfileList")
    if not isinstance(profiles, list):
        return []
    return [p["Arn"] for p in profiles if isinstance(p, dict) and isinstance(p.get("Arn"), str)]


def _version_order(version: Mapping[str, Any]) -> tuple[int, str]:
    text = str(version.get("VersionId") or "")
    return (int(text[1:]) if text[1:].isdigit() else 0, text)


def _principals(value: Any) -> list[str]:
    """``Principal`` as "AWS:<arn>", "Service:<name>", "Federated:<idp>", "CanonicalUser:..." or "*"."""
    if value == "*":
        return ["*"]
    if not isinstance(value, dict):
        raise PolicyError('Principal must be "*" or an object')
    out = []
    for kind, names in value.items():
        out += [f"{kind}:{name}" for name in _as_list(names, f"Principal.{kind}")]
    return out


def trust_statements(document: Any) -> Iterator[dict[str, Any]]:
    """Normalized statements of a role trust policy (``AssumeRolePolicyDocument``)."""
    doc = decode_document(document)
    raw = doc.get("Statement", [])
    for index, stmt in enumerate(raw if isinstance(raw, list) else [raw]):
        if not isinstance(stmt, dict) or stmt.get("Effect") not in ("Allow", "Deny"):
            raise PolicyError(f"Statement[{index}] is not an Allow/Deny statement")
        not_principal = "NotPrincipal" in stmt
        condition = stmt.get("Condition")
        yield {
            "index": index,
            "effect": stmt["Effect"],
            "principals": _principals(stmt.get("NotPrincipal" if not_principal else "Principal")),
            "not_principal": not_principal,
            "actions": _as_list(stmt.get("NotAction", stmt.get("Action")), "Action"),
            "not_action": "NotAction" in stmt,
            "condition": json.dumps(condition, sort_keys=True) if condition else None,
        }


class AuthorizationDetails:
    """One parsed authorization-details export."""

    def __init__(self, data: Any, origin: str) -> None:
        if not isinstance(data, dict) or not any(k in data for k in AUTH_KEYS):
            raise InputError(
                f"{origin}: not an authorization-details export (none of {', '.join(AUTH_KEYS)})",
                "create it with `aws iam get-account-authorization-details --output json > auth.json`",
            )
        self.origin = origin
        self.data = data
        self.policies: dict[str, dict[str, Any]] = {}
        for policy in self._list("Policies"):
            if isinstance(policy, dict) and isinstance(policy.get("Arn"), str):
                self.policies[policy["Arn"]] = policy
        self.groups = {g.get("GroupName"): g for g in self._list("GroupDetailList") if isinstance(g, dict)}
        self.gaps: list[dict[str, Any]] = []

    @classmethod
    def from_file(cls, path: Path) -> AuthorizationDetails:
        return cls(load_json(path, "the output of `aws iam get-account-authorization-details`"), str(path))

    def _list(self, key: str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise InputError(f"{self.origin}: {key} is a {type(value).__name__}, expected a list")
        return value

    def _gap(self, account: str, scope: str, reason: str) -> None:
        self.gaps.append(
            {"provider": "aws", "account": account, "scope": scope, "reason": reason, "severity": "error", "count": 1}
        )

    def _path(self, account: str, scope: str, arn: str, entry: Mapping[str, Any]) -> str:
        """The entity's path as its ARN names it (``role/agents/name``: ``/agents/``); a ``Path`` field
        that says otherwise (``null``, a number, another path) is an input problem, since the plans
        name policies by it."""
        path = _arn_path(arn)
        if "Path" in entry and entry["Path"] != path:
            self._gap(account, scope, f"Path {str(entry['Path'])[:80]!r} does not match the Arn: {path!r} used")
        return path

    def _tag_list(self, account: str, scope: str, value: Any) -> list[tuple[str, str]]:
        """The entity's tags; tags the export holds in another shape are an input problem, since
        agents may be selected by tag."""
        tags = _tags(value)
        if value is not None and (not isinstance(value, list) or len(tags) != len(value)):
            self._gap(account, scope, "Tags is not a list of {Key, Value} objects: the tags it holds are not read")
        return tags

    def default_document(self, arn: str) -> Any | None:
        policy = self.policies.get(arn)
        if policy is None:
            return None
        versions = policy.get("PolicyVersionList") or []
        default_id = policy.get("DefaultVersionId")
        for version in versions:
            if version.get("IsDefaultVersion") or version.get("VersionId") == default_id:
                return version.get("Document")
        return None

    def _grant_rows(
        self,
        account: str,
        identity: str,
        document: Any,
        source: str,
        kind: str,
        layer: str = "identity",
        policy: str | None = None,
        scope: str | None = None,
    ) -> list[dict[str, Any]]:
        try:
            return [
                {
                    "provider": "aws",
                    "account": account,
                    "identity": identity,
                    "statement_id": f"{source}#{stmt['sid'] or stmt['index']}",
                    "layer": layer,
                    "effect": stmt["effect"],
                    "actions": stmt["actions"],
                    "not_action": stmt["not_action"],
                    "resources": stmt["resources"],
                    "not_resource": stmt["not_resource"],
                    "condition": stmt["condition"],
                    "source": source,
                    "source_kind": kind,
                    "policy": policy or source,
                    "scope": scope,  # None: attached to the identity itself (lets identities share an expansion)
                }
                for stmt in statements(document)
            ]
        except PolicyError as exc:
            self._gap(account, f"{self.origin}: {source}", f"policy skipped: {exc}")
            return []

    def _managed(
        self, account: str, identity: str, attached: Any, kind_prefix: str = "", scope: str | None = None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for item in attached or []:
            arn = item.get("PolicyArn") if isinstance(item, dict) else None
            if not arn:
                continue
            document = self.default_document(arn)
            if document is None:
                self._gap(
                    account, f"{self.origin}: {arn}", f"managed policy attached to {identity} is not in the export"
                )
                continue
            kind = "aws-managed" if ":iam::aws:policy/" in arn else "customer-managed"
            rows += self._grant_rows(account, identity, document, arn, kind_prefix + kind, scope=scope)
        return rows

    def _inline(self, account: str, identity: str, policies: Any, owner: str, kind: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for item in policies or []:
            if isinstance(item, dict):
                name = str(item.get("PolicyName"))
                source = f"{owner}/inline/{name}"
                rows += self._grant_rows(
                    account,
                    identity,
                    item.get("PolicyDocument"),
                    source,
                    kind,
                    policy=name,
                    scope=None if owner == identity else owner,
                )
        return rows

    def _boundary(self, account: str, identity: str, entity: Mapping[str, Any]) -> list[dict[str, Any]]:
        boundary = entity.get("PermissionsBoundary") or {}
        arn = boundary.get("PermissionsBoundaryArn")
        if not arn:
            return []
        document = self.default_document(arn)
        if document is None:
            self._gap(account, f"{self.origin}: {arn}", f"permissions boundary of {identity} is not in the export")
            # An unknown boundary could only narrow the grant; keeping the grant unbounded over-reports.
            return []
        return self._grant_rows(account, identity, document, arn, "boundary", layer="boundary")

    def frames(self, selector: AgentSelector) -> GrantSet:
        """Identities, grants, trust policies and managed policies of every role and user."""
        identities: list[dict[str, Any]] = []
        grants: list[dict[str, Any]] = []
        trusts: list[dict[str, Any]] = []
        for kind, key in (("role", "RoleDetailList"), ("user", "UserDetailList")):
            for index, entity in enumerate(self._list(key)):
                arn = entity.get("Arn") if isinstance(entity, dict) else None
                if not isinstance(arn, str) or arn.count(":") < 5:
                    self._gap("?", f"{self.origin}: {key}[{index}]", "entry without a valid Arn skipped")
                    continue
                account = arn.split(":")[4]
                name = _text(entity.get("RoleName" if kind == "role" else "UserName")) or arn.rsplit("/", 1)[-1]
                scope = f"{self.origin}: {key}[{index}] ({arn})"
                tags = self._tag_list(account, scope, entity.get("Tags"))
                path = self._path(account, scope, arn, entity)
                service_linked = path.startswith("/aws-service-role/")
                reason = None if service_linked else selector.reason(arn, name, dict(tags))
                last_used = entity.get("RoleLastUsed")
                identities.append(
                    {
                        "provider": "aws",
                        "account": account,
                        "identity": arn,
                        "name": name,
                        "kind": kind,
                        "path": path,
                        "is_agent": reason is not None,
                        "selected_by": "service-linked role: managed by AWS, not audited" if service_linked else reason,
                        "created": _time(entity.get("CreateDate")),
                        "last_used": _time(last_used.get("LastUsedDate") if isinstance(last_used, dict) else None),
                        "tags": [{"key": k, "value": v} for k, v in tags],
                        "service_linked": service_linked,
                        "disabled": False,
                        "member": None,
                        "groups": self._group_arns(entity) if kind == "user" else [],
                        "instance_profiles": _instance_profiles(entity) if kind == "role" else [],
                        "notes": [],
                        "attributes": None,
                    }
                )
                grants += self._entity_grants(kind, account, arn, name, entity)
                if kind == "role":
                    trusts += self._trust_rows(account, arn, entity.get("AssumeRolePolicyDocument"))
        for group in self.groups.values():
            identities_row, rows = self._group(group)
            if identities_row is not None:
                identities.append(identities_row)
                grants += rows
        return GrantSet(
            identities=model.frame(identities, model.IDENTITIES),
            grants=model.frame(grants, model.GRANTS),
            trusts=model.frame(trusts, model.TRUSTS),
            managed=model.frame(self._managed_rows(), model.MANAGED),
            gaps=model.frame(self.gaps, model.GAPS),
        )

    def _group_arns(self, user: Mapping[str, Any]) -> list[str]:
        names = user.get("GroupList")
        found = (self.groups.get(n) for n in names if isinstance(n, str)) if isinstance(names, list) else ()
        return [g["Arn"] for g in found if g is not None and isinstance(g.get("Arn"), str)]

    def _group(self, group: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """A group as an identity of its own (never an agent: the targets of group-based escalation)."""
        arn = group.get("Arn")
        if not isinstance(arn, str) or arn.count(":") < 5:
            return None, []
        account = arn.split(":")[4]
        row = {
            "provider": "aws",
            "account": account,
            "identity": arn,
            "name": _text(group.get("GroupName")) or arn.rsplit("/", 1)[-1],
            "kind": "group",
            "path": self._path(account, f"{self.origin}: GroupDetailList ({arn})", arn, group),
            "is_agent": False,
            "tags": [],
            "service_linked": False,
            "disabled": False,
            "groups": [],
            "instance_profiles": [],
            "notes": [],
        }
        grants = self._inline(account, arn, group.get("GroupPolicyList"), arn, "inline")
        grants += self._managed(account, arn, group.get("AttachedManagedPolicies"))
        return row, grants

    def _trust_rows(self, account: str, arn: str, document: Any) -> list[dict[str, Any]]:
        if document is None:
            return []
        try:
            return [
                {
                    "provider": "aws",
                    "account": account,
                    "identity": arn,
                    "statement_id": f"{arn}#trust#{stmt['index']}",
                    **stmt,
                }
                for stmt in trust_statements(document)
            ]
        except PolicyError as exc:
            self._gap(account, f"{self.origin}: {arn} AssumeRolePolicyDocument", f"trust policy skipped: {exc}")
            return []

    def _managed_rows(self) -> list[dict[str, Any]]:
        rows = []
        for arn, policy in self.policies.items():
            if ":iam::aws:policy/" in arn or arn.count(":") < 5:
                continue
            versions = [v for v in policy.get("PolicyVersionList") or [] if isinstance(v, dict)]
            rows.append(
                {
                    "provider": "aws",
                    "account": arn.split(":")[4],
                    "kind": "policy",
                    "name": _text(policy.get("PolicyName")) or arn.rsplit("/", 1)[-1],
                    "id": arn,
                    "path": self._path(arn.split(":")[4], f"{self.origin}: Policies ({arn})", arn, policy),
                    "versions": [str(v.get("VersionId")) for v in sorted(versions, key=_version_order)],
                    "default_version": _text(policy.get("DefaultVersionId")),
                }
            )
        return rows

    def _entity_grants(
        self, kind: str, account: str, arn: str, name: str, entity: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        inline_key = "RolePolicyList" if kind == "role" else "UserPolicyList"
        rows = self._inline(account, arn, entity.get(inline_key), arn, "inline")
        rows += self._managed(account, arn, entity.get("AttachedManagedPolicies"))
        rows += self._boundary(account, arn, entity)
        groups = entity.get("GroupList") if kind == "user" else None
        for group_name in groups if isinstance(groups, list) else []:
            if not isinstance(group_name, str):
                continue
            group = self.groups.get(group_name)
            if group is None:
                self._gap(account, f"{self.origin}: group {group_name}", f"group of user {name} is not in the export")
                continue
            rows += self._inline(
                account, arn, group.get("GroupPolicyList"), group.get("Arn", group_name), "group-inline"
            )
            rows += self._managed(
                account, arn, group.get("AttachedManagedPolicies"), kind_prefix="group-", scope=group.get("Arn")
            )
        return rows
