"""Orchestration: run connectors, combine their frames, run the diff engine, derive findings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from auditor.connectors.base import AuditRequest, Connector, Progress, no_progress
from auditor.diff import IdentityAudit, diff
from auditor.errors import InputError
from auditor.findings import build_findings
from auditor.model import AuditInput, combine
from auditor.ruleset import SEVERITY_RANK, RuleSet


@dataclass(frozen=True)
class AuditOptions:
    drop_unobservable: bool = False
    strict: bool = False


@dataclass(frozen=True)
class AuditResult:
    data: AuditInput
    rules: RuleSet
    options: AuditOptions
    permissions: pl.DataFrame
    findings: pl.DataFrame
    audits: tuple[IdentityAudit, ...]
    generated_at: datetime

    def audit_of(self, provider: str, identity: str) -> IdentityAudit:
        return next(a for a in self.audits if a.provider == provider and a.identity == identity)

    def findings_at_or_above(self, level: str) -> pl.DataFrame:
        rank = SEVERITY_RANK[level]
        return self.findings.filter(pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int8) >= rank)


def gather(connectors: Sequence[Connector], request: AuditRequest, progress: Progress = no_progress) -> AuditInput:
    if not connectors:
        raise InputError(
            "nothing to audit",
            "pass --aws-dir DIR and/or --gcp-dir DIR (or the single-file options of auditor audit --help)",
        )
    return combine([c.collect(request, progress) for c in connectors])


def analyze(data: AuditInput, rules: RuleSet, options: AuditOptions) -> AuditResult:
    if options.strict:
        errors = data.gaps.filter(pl.col("severity") == "error")
        if errors.height:
            first = errors.row(0, named=True)
            raise InputError(
                f"{first['scope']}: {first['reason']} ({errors.height} input problem(s) in all)",
                "fix the input, or drop --strict to audit what could be read",
            )
    if data.identities.filter(pl.col("is_agent")).is_empty():
        raise InputError(
            "no agent identities selected",
            "tag them (default tag key 'agent'), or pass --agent GLOB, --agents-file FILE or --all-identities",
        )
    result = diff(data, rules)
    findings = build_findings(data, result, rules, data.window)
    return AuditResult(data, rules, options, result.permissions, findings, tuple(result.identities), datetime.now(UTC))
