"""Findings: what a reviewer must act on, derived from the permission states of each identity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import polars as pl

from auditor.catalog import Catalog
from auditor.diff import DiffResult, IdentityAudit, wildcard_patterns
from auditor.model import AuditInput
from auditor.ruleset import SEVERITY_RANK, Rules

FINDINGS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "name": pl.Utf8,
    "kind": pl.Utf8,
    "severity": pl.Utf8,
    "title": pl.Utf8,
    "actions": pl.List(pl.Utf8),
    "rule": pl.Utf8,
    "detail": pl.Utf8,
}


def _cap(severity: str, limit: str) -> str:
    return severity if SEVERITY_RANK[severity] <= SEVERITY_RANK[limit] else limit


class _Collector:
    def __init__(self, audit: IdentityAudit) -> None:
        self.audit = audit
        self.rows: list[dict[str, Any]] = []

    def add(
        self,
        kind: str,
        severity: str,
        title: str,
        actions: list[str],
        rule: str | None = None,
        detail: str | None = None,
    ) -> None:
        a = self.audit
        self.rows.append(
            {
                "provider": a.provider,
                "account": a.account,
                "identity": a.identity,
                "name": a.name,
                "kind": kind,
                "severity": severity,
                "title": title,
                "actions": sorted(actions),
                "rule": rule,
                "detail": detail,
            }
        )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _grant_findings(out: _Collector, audit: IdentityAudit, sev: Mapping[str, str], catalog: Catalog) -> None:
    admin = [s for s in audit.statements if s.layer == "identity" and s.is_admin]
    if admin:
        capped = bool(audit.boundary_sources)
        detail = f"capped by permissions boundary {', '.join(audit.boundary_sources)}" if capped else None
        sources = sorted({s.source for s in admin})
        basic = all(s.source_kind == "admin-role" for s in admin)
        out.add(
            "admin-grant",
            _cap(sev["admin-grant"], "medium") if capped else sev["admin-grant"],
            f"{'basic role granting nearly every permission' if basic else 'full administrator grant'} "
            f"from {', '.join(sources)}",
            [],
            detail=detail,
        )
    wild = wildcard_patterns(audit.statements, catalog)
    if wild:
        out.add("wildcard-grant", sev["wildcard-grant"], f"wildcard grants: {', '.join(wild)}", wild)


def _escalation_findings(
    out: _Collector, audit: IdentityAudit, rules: Rules, states: dict[str, str], catalog: Catalog
) -> None:
    """One finding per identity listing every escalation method whose permissions are all granted."""
    fired: list[tuple[str, str, str, list[str]]] = []
    for method in rules.methods_for(audit.provider):
        hits: list[str] = []
        for pattern in method.requires:
            granted = sorted(catalog.expand([pattern]) & audit.effective.keys())
            if pattern in method.resource_star:
                granted = [
                    a
                    for a in granted
                    if any("*" in s.resources and not s.condition for s in audit.effective[a].statements)
                ]
            if not granted:
                break
            hits += granted
        else:
            fired.append((method.id, method.severity, method.reason, hits))
    if not fired:
        return
    fired.sort(key=lambda m: (-SEVERITY_RANK[m[1]], m[0]))
    lines = []
    for method_id, _, reason, hits in fired:
        used = sorted(a for a in hits if states.get(a) == "used")
        lines.append(f"{method_id}: {reason}" + (f" (used: {', '.join(used)})" if used else ""))
    title = (
        f"{_plural(len(fired), 'privilege-escalation path')} granted: "
        + ", ".join(m[0] for m in fired[:3])
        + (" …" if len(fired) > 3 else "")
    )
    out.add(
        "privilege-escalation",
        fired[0][1],
        title,
        sorted({a for m in fired for a in m[3]}),
        rule=",".join(m[0] for m in fired),
        detail="; ".join(lines),
    )


def _state_findings(out: _Collector, perms: pl.DataFrame, sev: Mapping[str, str]) -> None:
    by_rule: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for row in perms.filter(pl.col("granted") & pl.col("destructive") & (pl.col("state") == "unused")).iter_rows(
        named=True
    ):
        by_rule[(row["destructive_rule"], row["destructive_severity"], row["destructive_reason"])].append(row["action"])
    for (rule, severity, reason), actions in sorted(by_rule.items(), key=lambda kv: -SEVERITY_RANK[kv[0][1]]):
        out.add(
            "unused-destructive",
            severity,
            f"{_plural(len(actions), 'destructive permission')} never used: {reason}",
            actions,
            rule=rule,
            detail="block in code (blocklist deny) and remove from the policy",
        )
    for row in perms.filter(pl.col("granted") & pl.col("destructive") & (pl.col("state") == "used")).iter_rows(
        named=True
    ):
        out.add(
            "used-destructive",
            _cap(sev["used-destructive"], row["destructive_severity"]),
            f"{row['action']} used {row['calls']:,} time(s): {row['destructive_reason']}",
            [row["action"]],
            rule=row["destructive_rule"],
            detail="route through a human approval gate",
        )
    denied = perms.filter(pl.col("state") == "denied")
    if denied.height:
        out.add(
            "denied-attempt",
            sev["denied-attempt"],
            f"{_plural(denied.height, 'permission')} attempted and refused by authorization",
            denied["action"].to_list(),
            detail=f"{int(denied['denied_calls'].sum()):,} refused call(s)",
        )
    unused = perms.filter(pl.col("granted") & ~pl.col("destructive") & (pl.col("state") == "unused"))
    if unused.height:
        granted = int(perms["granted"].sum())
        out.add(
            "unused-grant",
            sev["unused-grant"],
            f"{_plural(unused.height, 'granted permission')} of {granted:,} never used",
            unused["action"].to_list(),
        )
    unobservable = perms.filter(pl.col("state") == "unobservable")
    if unobservable.height:
        reasons = sorted(set(unobservable["unobservable_reason"].to_list()))
        out.add(
            "unobservable-grant",
            sev["unobservable-grant"],
            f"{_plural(unobservable.height, 'granted permission')} the logs cannot show (kept, not called unused)",
            unobservable["action"].to_list(),
            detail="; ".join(reasons),
        )
    stray = perms.filter(~pl.col("granted") & (pl.col("state") == "used"))
    if stray.height:
        out.add(
            "used-not-granted",
            sev["used-not-granted"],
            f"{_plural(stray.height, 'permission')} used without an identity-policy grant",
            stray["action"].to_list(),
            detail="granted by a resource policy or lost in expansion; check",
        )


def build_findings(data: AuditInput, result: DiffResult, rules: Rules) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    sev = rules.severities
    perms_by_identity = result.permissions.partition_by(["provider", "identity"], as_dict=True)
    unmapped = data.unmapped.group_by(["provider", "identity"]).agg(
        pl.col("event").unique().sort(), pl.col("calls").sum()
    )
    unmapped_by = {(r["provider"], r["identity"]): r for r in unmapped.iter_rows(named=True)}
    # Accounts with days missing from the logs: no activity there is no evidence of dormancy.
    blind = {
        (p, a)
        for p, a, i, actions in data.observability.select("provider", "account", "identity", "actions").iter_rows()
        if i is None and actions == ["*"]
    }
    for audit in result.identities:
        out = _Collector(audit)
        perms = perms_by_identity.get((audit.provider, audit.identity))
        if perms is None:
            perms = result.permissions.clear()
        states = dict(zip(perms["action"], perms["state"], strict=True))
        _grant_findings(out, audit, sev, data.catalogs[audit.provider])
        _escalation_findings(out, audit, rules, states, data.catalogs[audit.provider])
        if not audit.any_activity and (audit.provider, audit.account) not in blind:
            window = data.windows.get(audit.provider)
            span = (
                f" in the {window.days:.0f}-day window ({window.start:%Y-%m-%d}..{window.end:%Y-%m-%d})"
                if window
                else ""
            )
            out.add(
                "dormant-identity",
                sev["dormant-identity"],
                f"no activity{span}",
                [],
                detail="remove the identity or all of its grants (the plan in policies/index.json does)",
            )
        _state_findings(out, perms, sev)
        extra = unmapped_by.get((audit.provider, audit.identity))
        if extra:
            out.add(
                "unmapped-events",
                sev["unmapped-events"],
                f"{extra['calls']:,} call(s) could not be mapped to a permission",
                [],
                detail=", ".join(extra["event"][:20]),
            )
        rows += out.rows
    df = pl.DataFrame(rows, schema=FINDINGS) if rows else pl.DataFrame(schema=FINDINGS)
    rank = {k: -v for k, v in SEVERITY_RANK.items()}
    return (
        df.with_columns(pl.col("severity").replace_strict(rank, return_dtype=pl.Int8).alias("_r"))
        .sort(["_r", "provider", "account", "name", "kind"])
        .drop("_r")
    )


def worst_severity(findings: pl.DataFrame) -> str | None:
    if findings.is_empty():
        return None
    return max(findings["severity"].to_list(), key=SEVERITY_RANK.__getitem__)
