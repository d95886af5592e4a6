"""The normalized frame model shared by connectors, the diff engine and emitters.

Connectors turn their raw sources into these frames (fixed schemas); the diff engine and the
emitters never look at cloud-specific raw JSON. A connector that cannot read something records a
row in ``gaps`` instead of failing the audit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal

import polars as pl

from auditor.catalog import Catalog

Provider = Literal["aws", "gcp", "azure", "tool"]
EvidenceState = Literal["used", "denied", "unused", "unobservable"]
EVIDENCE_STATES: tuple[EvidenceState, ...] = ("used", "denied", "unused", "unobservable")

UTC_TIME = pl.Datetime("us", "UTC")

#: One row per identity the connector knows (agents and non-agents alike).
IDENTITIES = {
    "provider": pl.Utf8,
    "account": pl.Utf8,  # AWS account id, GCP project, Azure subscription, agent namespace
    "identity": pl.Utf8,  # stable id: role/user ARN, service-account email, principal object id
    "name": pl.Utf8,  # short human name (role name, SA email, display name)
    "kind": pl.Utf8,  # role | user | service_account | managed_identity | service_principal | agent
    "is_agent": pl.Boolean,
    "selected_by": pl.Utf8,  # why it is (not) audited as an agent: "tag agent=true", "name glob ...", null
    "created": UTC_TIME,
    "last_used": UTC_TIME,  # provider-reported last use (AWS RoleLastUsed), when known
    "attributes": pl.Utf8,  # JSON of provider-specific extras shown in the report (tags, path, ...)
}

#: One row per policy statement / role binding / role assignment (unexpanded: may hold wildcards).
GRANTS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "statement_id": pl.Utf8,  # unique per statement, e.g. "<policy arn>#2"
    "layer": pl.Utf8,  # "identity" (grants) | "boundary" (caps the grants: intersection)
    "effect": pl.Utf8,  # "Allow" | "Deny"
    "actions": pl.List(pl.Utf8),
    "not_action": pl.Boolean,  # True: the statement covers every action EXCEPT `actions`
    "resources": pl.List(pl.Utf8),
    "not_resource": pl.Boolean,
    "condition": pl.Utf8,  # JSON, kept and shown, never evaluated
    "source": pl.Utf8,  # policy ARN / policy name / role binding the statement comes from
    # aws-managed | customer-managed | inline | group-inline | group-managed | boundary;
    # binding (GCP role binding) | admin-role (binding of a basic role that grants nearly everything)
    "source_kind": pl.Utf8,
}

#: Aggregated observations: one row per (identity, action, outcome, evidence).
USAGE = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "action": pl.Utf8,  # catalog spelling
    "outcome": pl.Utf8,  # "used" (permission check passed) | "denied" (refused by authorization)
    "evidence": pl.Utf8,  # cloudtrail | access-advisor | implied | audit-log | recommender | ...
    "calls": pl.UInt64,
    "first_seen": UTC_TIME,
    "last_seen": UTC_TIME,
    "resources": pl.List(pl.Utf8),  # distinct resources seen (capped), for narrowing
    "all_with_resource": pl.Boolean,  # every counted call carried a resource: narrowing is sound
}

#: Calls that could not be mapped to a permission: counted and listed, never guessed.
UNMAPPED = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "event": pl.Utf8,  # e.g. "s3.amazonaws.com:FooBar"
    "calls": pl.UInt64,
    "reason": pl.Utf8,
}

#: What the evidence cannot show. `identity` null = every identity of the account.
OBSERVABILITY = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "actions": pl.List(pl.Utf8),  # globs over catalog actions
    "reason": pl.Utf8,
}

#: Which evidence covers which time span, for the report (per account and source).
COVERAGE = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "source": pl.Utf8,  # e.g. "cloudtrail files fixtures/aws/AWSLogs"
    "first_event": UTC_TIME,
    "last_event": UTC_TIME,
    "days_with_events": pl.UInt32,
    "events_read": pl.UInt64,
    "events_in_window": pl.UInt64,
    "files_read": pl.UInt64,
    "detail": pl.Utf8,
}

#: What could not be read, and why. Shown in the report; fatal only with --strict.
GAPS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "scope": pl.Utf8,  # file path, API call or identity concerned
    "reason": pl.Utf8,
    "severity": pl.Utf8,  # "error" (data lost) | "warning"
    "count": pl.UInt64,  # how many records/files this row stands for
}

FRAME_SCHEMAS: dict[str, dict[str, Any]] = {
    "identities": IDENTITIES,
    "grants": GRANTS,
    "usage": USAGE,
    "unmapped": UNMAPPED,
    "observability": OBSERVABILITY,
    "coverage": COVERAGE,
    "gaps": GAPS,
}


def empty(schema: Mapping[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(schema=dict(schema))


def frame(rows: Iterable[Mapping[str, Any]], schema: Mapping[str, Any]) -> pl.DataFrame:
    """Build a frame with exactly ``schema`` from row dicts (missing keys become null)."""
    rows = list(rows)
    if not rows:
        return empty(schema)
    columns = {name: [row.get(name) for row in rows] for name in schema}
    return pl.DataFrame(columns, schema=dict(schema), strict=False)


def conform(df: pl.DataFrame, schema: Mapping[str, Any], name: str) -> pl.DataFrame:
    """Check a connector's frame against its schema and return it with exactly those columns."""
    missing = [c for c in schema if c not in df.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}")
    return df.select([pl.col(c).cast(t) for c, t in schema.items()])


@dataclass(frozen=True)
class Window:
    """The audit window [start, end] in UTC."""

    start: datetime
    end: datetime

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


@dataclass(frozen=True)
class AuditInput:
    """Everything connectors gathered, in normalized frames, plus one catalog per provider."""

    identities: pl.DataFrame = field(default_factory=lambda: empty(IDENTITIES))
    grants: pl.DataFrame = field(default_factory=lambda: empty(GRANTS))
    usage: pl.DataFrame = field(default_factory=lambda: empty(USAGE))
    unmapped: pl.DataFrame = field(default_factory=lambda: empty(UNMAPPED))
    observability: pl.DataFrame = field(default_factory=lambda: empty(OBSERVABILITY))
    coverage: pl.DataFrame = field(default_factory=lambda: empty(COVERAGE))
    gaps: pl.DataFrame = field(default_factory=lambda: empty(GAPS))
    catalogs: Mapping[str, Catalog] = field(default_factory=dict)
    window: Window | None = None
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, schema in FRAME_SCHEMAS.items():
            object.__setattr__(self, name, conform(getattr(self, name), schema, name))


def combine(parts: Sequence[AuditInput]) -> AuditInput:
    """Merge what several connectors gathered into one input."""
    if not parts:
        return AuditInput()
    frames = {
        f.name: pl.concat([getattr(p, f.name) for p in parts], how="vertical")
        for f in fields(AuditInput)
        if f.name in FRAME_SCHEMAS
    }
    catalogs: dict[str, Catalog] = {}
    for part in parts:
        for provider, catalog in part.catalogs.items():
            known = catalogs.get(provider)
            catalogs[provider] = catalog if known is None else known.merged(catalog)
    windows = [p.window for p in parts if p.window is not None]
    return replace(
        parts[0],
        **frames,
        catalogs=catalogs,
        window=windows[0] if windows else None,
        sources=tuple(s for p in parts for s in p.sources),
    )
