"""The diff engine: effective grants joined with usage, one evidence state per permission.

Provider-neutral: it reads only the normalized frames of :mod:`auditor.model` and a
:class:`~auditor.catalog.Catalog` per provider. For every audited identity it

1. expands each statement (wildcards, ``NotAction``) against the catalog,
2. removes what unconditional explicit ``Deny`` statements remove and caps the result with the
   permissions boundary (intersection), so "granted" means effectively granted,
3. joins the result with usage and gives each permission exactly one state — ``used``,
   ``denied``, ``unused`` or ``unobservable`` — never calling unused what the logs cannot show.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from auditor.catalog import Catalog, service_of
from auditor.matching import any_glob_regex, has_wildcard
from auditor.model import UTC_TIME, AuditInput
from auditor.ruleset import RuleSet

PERMISSIONS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "name": pl.Utf8,
    "action": pl.Utf8,
    "service": pl.Utf8,
    "access_level": pl.Utf8,
    "granted": pl.Boolean,
    "state": pl.Utf8,
    "calls": pl.UInt64,
    "denied_calls": pl.UInt64,
    "first_seen": UTC_TIME,
    "last_seen": UTC_TIME,
    "evidence": pl.List(pl.Utf8),
    "resources_seen": pl.List(pl.Utf8),
    "narrowable": pl.Boolean,
    "grant_sources": pl.List(pl.Utf8),
    "unobservable_reason": pl.Utf8,
    "destructive": pl.Boolean,
    "destructive_rule": pl.Utf8,
    "destructive_category": pl.Utf8,
    "destructive_severity": pl.Utf8,
    "destructive_reason": pl.Utf8,
    "note": pl.Utf8,
}


@dataclass(frozen=True)
class Statement:
    """One grant statement of one identity (a row of the GRANTS frame)."""

    statement_id: str
    layer: str
    effect: str
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    condition: str | None
    source: str
    source_kind: str

    @property
    def unconditional_everywhere(self) -> bool:
        return self.condition is None and not self.not_resource and "*" in self.resources

    @property
    def is_admin(self) -> bool:
        return self.effect == "Allow" and "*" in self.resources and (self.not_action or "*" in self.actions)


@dataclass
class Grant:
    """How one effective permission is granted: the statements that allow it."""

    statements: list[Statement] = field(default_factory=list)
    partial_denies: list[Statement] = field(default_factory=list)
    caps: list[Statement] = field(default_factory=list)  # boundary statements that let it through


@dataclass
class IdentityAudit:
    """Everything the diff engine decided about one identity."""

    provider: str
    account: str
    identity: str
    name: str
    statements: list[Statement]
    effective: dict[str, Grant]
    removed_by_deny: dict[str, str]
    removed_by_boundary: set[str]
    boundary_sources: list[str]
    any_activity: bool


@dataclass
class DiffResult:
    permissions: pl.DataFrame
    identities: list[IdentityAudit]


def _statements(rows: Iterable[dict[str, Any]]) -> list[Statement]:
    return [
        Statement(
            statement_id=r["statement_id"],
            layer=r["layer"],
            effect=r["effect"],
            actions=tuple(r["actions"] or ()),
            not_action=bool(r["not_action"]),
            resources=tuple(r["resources"] or ("*",)),
            not_resource=bool(r["not_resource"]),
            condition=r["condition"],
            source=r["source"],
            source_kind=r["source_kind"],
        )
        for r in rows
    ]


def effective_grants(
    statements: list[Statement], catalog: Catalog
) -> tuple[dict[str, Grant], dict[str, str], set[str], list[str]]:
    """Expand statements to concrete permissions and apply Deny and the boundary.

    Returns (effective, removed_by_deny {action: source}, removed_by_boundary, boundary sources).
    """
    allowed: dict[str, Grant] = defaultdict(Grant)
    for stmt in statements:
        if stmt.layer == "identity" and stmt.effect == "Allow":
            for action in catalog.expand(stmt.actions, stmt.not_action):
                allowed[action].statements.append(stmt)
    removed_by_deny: dict[str, str] = {}
    for stmt in statements:
        if stmt.effect != "Deny":
            continue
        for action in catalog.expand(stmt.actions, stmt.not_action) & allowed.keys():
            if stmt.unconditional_everywhere:
                removed_by_deny.setdefault(action, stmt.source)
            else:
                allowed[action].partial_denies.append(stmt)
    for action in removed_by_deny:
        allowed.pop(action, None)
    boundary = [s for s in statements if s.layer == "boundary"]
    removed_by_boundary: set[str] = set()
    if boundary:
        for stmt in boundary:
            if stmt.effect == "Allow":
                for action in catalog.expand(stmt.actions, stmt.not_action) & allowed.keys():
                    allowed[action].caps.append(stmt)
        removed_by_boundary = {a for a, g in allowed.items() if not g.caps}
        for action in removed_by_boundary:
            del allowed[action]
    return dict(allowed), removed_by_deny, removed_by_boundary, sorted({s.source for s in boundary})


class _UsageIndex:
    """Usage rows of one identity folded per action."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.by_action: dict[str, dict[str, Any]] = {}
        for row in rows:
            entry = self.by_action.setdefault(
                row["action"],
                {
                    "calls": 0,
                    "denied": 0,
                    "first": None,
                    "last": None,
                    "evidence": set(),
                    "resources": set(),
                    "narrowable": True,
                },
            )
            if row["outcome"] == "denied":
                entry["denied"] += row["calls"]
            else:
                entry["calls"] += row["calls"]
                entry["evidence"].add(row["evidence"])
                entry["resources"].update(row["resources"] or ())
                entry["narrowable"] = entry["narrowable"] and bool(row["all_with_resource"])
            entry["first"] = _min_time(entry["first"], row["first_seen"])
            entry["last"] = _max_time(entry["last"], row["last_seen"])


def _min_time(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max_time(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


class _Observability:
    """Which permissions of one identity the evidence cannot show, and why."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rules = [(any_glob_regex(r["actions"]), r["reason"]) for r in rows if r["actions"]]

    def reason(self, action: str) -> str | None:
        for regex, reason in self.rules:
            if regex.fullmatch(action):
                return reason
        return None


def _grouped(df: pl.DataFrame, keys: list[str]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    grouped: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in df.iter_rows(named=True):
        grouped[tuple(row[k] for k in keys)].append(row)
    return grouped


def diff(data: AuditInput, rules: RuleSet) -> DiffResult:
    """Run the engine over every agent identity in ``data``."""
    agents = data.identities.filter(pl.col("is_agent"))
    keys = ["provider", "identity"]
    agent_keys = set(zip(agents["provider"], agents["identity"], strict=True))
    grants = _grouped(
        data.grants.filter(pl.struct(keys).is_in([dict(zip(keys, k, strict=True)) for k in agent_keys])), keys
    )
    usage = _grouped(data.usage, keys)
    unmapped_ids = set(zip(data.unmapped["provider"], data.unmapped["identity"], strict=True))
    observability = _grouped(data.observability, ["provider", "account"])
    rows: list[dict[str, Any]] = []
    audits: list[IdentityAudit] = []
    for ident in agents.sort(["provider", "account", "name"]).iter_rows(named=True):
        provider, identity = ident["provider"], ident["identity"]
        catalog = data.catalogs[provider]
        statements = _statements(grants.get((provider, identity), []))
        effective, by_deny, by_boundary, boundary_sources = effective_grants(statements, catalog)
        used = _UsageIndex(usage.get((provider, identity), []))
        observable = _Observability(
            [r for r in observability.get((provider, ident["account"]), []) if r["identity"] in (None, identity)]
        )
        audit = IdentityAudit(
            provider,
            ident["account"],
            identity,
            ident["name"],
            statements,
            effective,
            by_deny,
            by_boundary,
            boundary_sources,
            any_activity=bool(used.by_action) or (provider, identity) in unmapped_ids,
        )
        audits.append(audit)
        rows += _permission_rows(audit, used, observable, catalog, rules)
    return DiffResult(
        pl.DataFrame(rows, schema=PERMISSIONS, orient="row") if rows else pl.DataFrame(schema=PERMISSIONS), audits
    )


def _state(granted: bool, use: dict[str, Any] | None, unobservable: str | None) -> str:
    if use is not None and use["calls"]:
        return "used"
    if use is not None and use["denied"]:
        return "denied"
    return "unobservable" if unobservable and granted else "unused"


def _note(audit: IdentityAudit, action: str, grant: Grant | None, use: dict[str, Any] | None) -> str | None:
    if grant is None:
        if action in audit.removed_by_deny:
            return f"explicitly denied by {audit.removed_by_deny[action]}"
        if action in audit.removed_by_boundary:
            return f"outside permissions boundary {', '.join(audit.boundary_sources)}"
        if use is not None and use["calls"]:
            return "used but not granted by an identity policy (resource policy or session grant?)"
        return "not granted"
    notes = []
    conditions = sorted({s.condition for s in grant.statements if s.condition})
    if conditions and all(s.condition for s in grant.statements):
        notes.append("granted only under condition " + "; ".join(conditions))
    if grant.partial_denies:
        notes.append("partly denied by " + ", ".join(sorted({s.source for s in grant.partial_denies})))
    return "; ".join(notes) or None


def _permission_rows(
    audit: IdentityAudit,
    used: _UsageIndex,
    observable: _Observability,
    catalog: Catalog,
    rules: RuleSet,
) -> list[dict[str, Any]]:
    rows = []
    for action in sorted(set(audit.effective) | set(used.by_action)):
        grant = audit.effective.get(action)
        use = used.by_action.get(action)
        unobservable = observable.reason(action)
        state = _state(grant is not None, use, unobservable)
        cls = rules.classify(audit.provider, action, catalog)
        rows.append(
            (
                audit.provider,
                audit.account,
                audit.identity,
                audit.name,
                action,
                service_of(audit.provider, action),
                catalog.access_level(action),
                grant is not None,
                state,
                use["calls"] if use else 0,
                use["denied"] if use else 0,
                use["first"] if use else None,
                use["last"] if use else None,
                sorted(use["evidence"]) if use else [],
                sorted(use["resources"]) if use else [],
                bool(use and use["calls"] and use["narrowable"] and use["resources"]),
                sorted({s.source for s in grant.statements}) if grant else [],
                unobservable if state == "unobservable" else None,
                cls is not None,
                cls.rule if cls else None,
                cls.category if cls else None,
                cls.severity if cls else None,
                cls.reason if cls else None,
                _note(audit, action, grant, use),
            )
        )
    return rows


def wildcard_patterns(statements: Iterable[Statement]) -> list[str]:
    """Allow patterns that grant a whole service or match across services (``s3:*``, ``*:Get*``)."""
    found = set()
    for stmt in statements:
        if stmt.effect != "Allow" or stmt.layer != "identity" or stmt.is_admin:
            continue
        for pattern in stmt.actions:
            if stmt.not_action:
                found.add(f"NotAction {pattern}")
                continue
            head, _, tail = pattern.partition(":") if ":" in pattern else pattern.partition(".")
            if has_wildcard(head) or tail in ("*", ""):
                found.add(pattern)
    return sorted(found)


def condition_json(statement: Statement) -> Any:
    return json.loads(statement.condition) if statement.condition else None
