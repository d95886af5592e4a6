"""The normalized frame model shared by connectors, the core, the diff engine and emitters.

Connectors turn their raw sources into these frames (fixed schemas, typed columns); the core, the
diff engine and the emitters never look at cloud-specific raw JSON, and ``attributes`` is for
display only. What a connector could not read is a row in ``gaps``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from auditor.catalog import Catalog
from auditor.window import Window

Provider = Literal["aws", "gcp", "azure", "tool"]
EvidenceState = Literal["used", "denied", "unused", "unobservable"]
EVIDENCE_STATES: tuple[EvidenceState, ...] = ("used", "denied", "unused", "unobservable")

UTC_TIME = pl.Datetime("us", "UTC")
TAGS = pl.List(pl.Struct({"key": pl.Utf8, "value": pl.Utf8}))

#: One row per identity the connector knows (agents and non-agents alike).
IDENTITIES = {
    "provider": pl.Utf8,
    "account": pl.Utf8,  # AWS account id, GCP project, Azure subscription, agent namespace
    "identity": pl.Utf8,  # stable id: role/user ARN, service-account email, principal object id
    "name": pl.Utf8,  # short human name (role name, SA email, display name)
    "kind": pl.Utf8,  # role | user | service_account | principal | managed_identity | service_principal | agent
    "path": pl.Utf8,  # AWS IAM path ("/agents/"), null elsewhere
    "is_agent": pl.Boolean,
    "selected_by": pl.Utf8,  # why it is (not) audited as an agent: "tag agent=true", "name glob ...", null
    "created": UTC_TIME,
    "last_used": UTC_TIME,  # provider-reported last use (AWS RoleLastUsed), when known
    "tags": TAGS,  # tags / labels (GCP: key=value words of the description)
    "service_linked": pl.Boolean,  # managed by the cloud itself: never audited
    "disabled": pl.Boolean,
    "member": pl.Utf8,  # how policies name it (GCP "serviceAccount:x@p.iam.gserviceaccount.com")
    "groups": pl.List(pl.Utf8),  # AWS users: the ARNs of their groups (groups are identities of kind "group")
    "instance_profiles": pl.List(pl.Utf8),  # AWS roles: the instance profiles holding them (EC2 can run as them)
    "notes": pl.List(pl.Utf8),  # facts for the report (impersonation chains, disabled, ...)
    "attributes": pl.Utf8,  # JSON of extras shown in the report only (description, ...)
}

#: One row per policy statement / role binding (unexpanded: may hold wildcards).
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
    "condition": pl.Utf8,  # JSON: AWS Condition block, GCP {"expression", "title", ...}
    "source": pl.Utf8,  # display: policy ARN / inline policy / "role on resource"
    # aws-managed | customer-managed | inline | group-inline | group-managed | boundary;
    # binding (GCP role binding) | admin-role (binding of a basic role that grants nearly everything)
    "source_kind": pl.Utf8,
    "policy": pl.Utf8,  # AWS managed policy ARN or inline policy name; GCP role name
    "scope": pl.Utf8,  # where it is attached: AWS group ARN (null: the identity itself); GCP resource of the binding
    "member": pl.Utf8,  # GCP binding member
}

#: Who may become an identity (AWS role trust policies): one row per statement.
TRUSTS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "statement_id": pl.Utf8,
    "effect": pl.Utf8,
    "principals": pl.List(pl.Utf8),  # "AWS:<arn or account>", "Service:<name>", "Federated:<idp>", "*"
    "not_principal": pl.Boolean,
    "actions": pl.List(pl.Utf8),
    "not_action": pl.Boolean,
    "condition": pl.Utf8,
}

#: Objects that already exist in the cloud (so a monthly re-run updates instead of creating).
MANAGED = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "kind": pl.Utf8,  # policy (AWS managed policy) | role (GCP custom role)
    "name": pl.Utf8,  # policy name / role id
    "id": pl.Utf8,  # policy ARN / full role name
    "path": pl.Utf8,
    "versions": pl.List(pl.Utf8),  # AWS policy versions, oldest first
    "default_version": pl.Utf8,
    "etag": pl.Utf8,  # GCP role etag: an update from the snapshot replaces exactly that version
}

#: Aggregated observations: one row per (identity, action, outcome, evidence).
USAGE = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "action": pl.Utf8,  # catalog spelling
    "outcome": pl.Utf8,  # "used" (permission check passed) | "denied" (refused by authorization)
    "evidence": pl.Utf8,  # cloudtrail | access-advisor | implied | audit-log | audit-log-method | recommender
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
    "source": pl.Utf8,  # e.g. "CloudTrail fixtures/aws/AWSLogs"
    "first_event": UTC_TIME,
    "last_event": UTC_TIME,
    "days_with_events": pl.UInt32,
    "events_read": pl.UInt64,
    "events_in_window": pl.UInt64,
    "files_read": pl.UInt64,
    "detail": pl.Utf8,
}

#: What could not be read, and why: every row is an input problem (fatal with --strict).
GAPS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "scope": pl.Utf8,  # file path, API call or identity concerned
    "reason": pl.Utf8,
    "severity": pl.Utf8,  # "error" (data lost) | "warning"
    "count": pl.UInt64,  # how many records/files this row stands for
}

#: Findings a source states itself, about its own configuration (a rule the enforcement point accepts
#: but never applies, an allow rule wider than its use); their severity is the kind's in findings.yaml.
SOURCE_FINDINGS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "kind": pl.Utf8,  # a finding kind of auditor.ruleset.FINDING_KINDS
    "title": pl.Utf8,
    "actions": pl.List(pl.Utf8),
    "detail": pl.Utf8,
}

FRAME_SCHEMAS: dict[str, dict[str, Any]] = {
    "identities": IDENTITIES,
    "grants": GRANTS,
    "trusts": TRUSTS,
    "managed": MANAGED,
    "usage": USAGE,
    "unmapped": UNMAPPED,
    "observability": OBSERVABILITY,
    "coverage": COVERAGE,
    "gaps": GAPS,
    "source_findings": SOURCE_FINDINGS,
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


def concat(frames: Iterable[pl.DataFrame], schema: Mapping[str, Any], name: str) -> pl.DataFrame:
    parts = [conform(f, schema, name) for f in frames]
    return pl.concat(parts, how="vertical") if parts else empty(schema)


def gap(
    provider: str | None, account: str | None, scope: str, reason: str, severity: str = "error", count: int = 1
) -> dict[str, Any]:
    """One GAPS row."""
    return {
        "provider": provider,
        "account": account,
        "scope": scope,
        "reason": reason,
        "severity": severity,
        "count": count,
    }


@dataclass(frozen=True)
class AuditInput:
    """Everything gathered, in normalized frames, plus one catalog and one window per provider."""

    identities: pl.DataFrame = field(default_factory=lambda: empty(IDENTITIES))
    grants: pl.DataFrame = field(default_factory=lambda: empty(GRANTS))
    trusts: pl.DataFrame = field(default_factory=lambda: empty(TRUSTS))
    managed: pl.DataFrame = field(default_factory=lambda: empty(MANAGED))
    usage: pl.DataFrame = field(default_factory=lambda: empty(USAGE))
    unmapped: pl.DataFrame = field(default_factory=lambda: empty(UNMAPPED))
    observability: pl.DataFrame = field(default_factory=lambda: empty(OBSERVABILITY))
    coverage: pl.DataFrame = field(default_factory=lambda: empty(COVERAGE))
    gaps: pl.DataFrame = field(default_factory=lambda: empty(GAPS))
    source_findings: pl.DataFrame = field(default_factory=lambda: empty(SOURCE_FINDINGS))
    catalogs: Mapping[str, Catalog] = field(default_factory=dict)
    windows: Mapping[str, Window] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, schema in FRAME_SCHEMAS.items():
            object.__setattr__(self, name, conform(getattr(self, name), schema, name))
