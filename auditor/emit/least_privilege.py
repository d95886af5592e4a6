"""What every provider's least-privilege emitter produces, and which permissions it keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from auditor.audit import AuditResult
from auditor.emit.aws_iam_policy import KeptPermission


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
    alternative: str | None = None  # a smaller predefined grant that covers what was used, if any


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
