"""Findings: what a reviewer must act on, derived from the permission states of each identity."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from auditor.catalog import Catalog, aws_resource_arn_formats
from auditor.diff import DiffResult, IdentityAudit, wildcard_patterns
from auditor.escalation import (
    AdminClass,
    EscalationPath,
    Principal,
    classify_admin,
    find_paths,
    statements_from_grants,
    trust_from_rows,
)
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


def _grant_findings(
    out: _Collector, audit: IdentityAudit, sev: Mapping[str, str], catalog: Catalog, admin: AdminClass | None
) -> None:
    """Admin and wildcard grants, judged on the effective grant: a Deny or a boundary that takes the
    power away leaves no admin finding, a ``NotAction`` grant short of IAM writes is broad, not admin."""
    live = set(audit.statements) - {s for s, _ in audit.expansion.expired}
    basic = sorted({s.source for s in live if s.source_kind == "admin-role" and s.effect == "Allow"})
    conditions = f" (if: {'; '.join(admin.conditions)})" if admin and admin.conditions else ""
    if admin is not None and admin.level == "admin":
        out.add("admin-grant", sev["admin-grant"], f"full administrator grant: {admin.reason}{conditions}", [])
    elif basic and audit.effective:
        out.add(
            "admin-grant",
            sev["admin-grant"],
            f"basic role granting nearly every permission from {', '.join(basic)}",
            [],
        )
    wild = wildcard_patterns(live, catalog)
    if admin is not None and admin.level == "broad":
        out.add("wildcard-grant", sev["wildcard-grant"], f"broad grant: {admin.reason}{conditions}", wild)
    elif wild:
        out.add("wildcard-grant", sev["wildcard-grant"], f"wildcard grants: {', '.join(wild)}", wild)


def _escalation_findings(out: _Collector, paths: Sequence[EscalationPath], used_actions: AbstractSet[str]) -> None:
    """One finding per identity listing every escalation path it can really use."""
    if not paths:
        return
    ranked = sorted(paths, key=lambda p: (-SEVERITY_RANK[p.severity], p.method, p.via))
    lines, actions = [], set()
    for path in ranked:
        mine = {g.action for g in path.grants}
        actions |= mine
        used = sorted(mine & used_actions)
        lines.append(path.describe() + (f" (used: {', '.join(used)})" if used else ""))
    methods = list(dict.fromkeys(p.method for p in ranked))
    title = (
        f"{_plural(len(ranked), 'privilege-escalation path')}: "
        + ", ".join(methods[:3])
        + (" …" if len(methods) > 3 else "")
    )
    out.add("privilege-escalation", ranked[0].severity, title, sorted(actions), ",".join(methods), "; ".join(lines))


def _principals(data: AuditInput, provider: str) -> list[Principal]:
    """Every identity of one provider as the escalation engine sees it (agents and the others:
    they are the targets and the links of role chains)."""
    grants: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in data.grants.filter(pl.col("provider") == provider).iter_rows(named=True):
        grants[row["identity"]].append(row)
    trusts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in data.trusts.filter(pl.col("provider") == provider).iter_rows(named=True):
        trusts[row["identity"]].append(row)
    found = []
    for ident in data.identities.filter(pl.col("provider") == provider).iter_rows(named=True):
        kind = ident["kind"] if ident["kind"] in ("role", "user", "group", "service_account") else "user"
        found.append(
            Principal(
                provider,
                ident["identity"],
                ident["account"],
                kind,
                statements_from_grants(grants.get(ident["identity"], ())),
                trust_from_rows(trusts.get(ident["identity"], ())),
                tuple(ident["groups"] or ()),
                tuple(ident["instance_profiles"] or ()),
            )
        )
    return found


def escalation_paths(
    data: AuditInput, result: DiffResult, rules: Rules, now: datetime
) -> tuple[dict[tuple[str, str], list[EscalationPath]], dict[tuple[str, str], AdminClass | None]]:
    """(paths, admin class) of every audited identity, per (provider, identity)."""
    paths: dict[tuple[str, str], list[EscalationPath]] = {}
    admin: dict[tuple[str, str], AdminClass | None] = {}
    for provider in sorted({a.provider for a in result.identities}):
        catalog = data.catalogs[provider]
        principals = _principals(data, provider)
        formats = aws_resource_arn_formats() if provider == "aws" else None
        found = find_paths(principals, rules.methods_for(provider), catalog, now, formats)
        by_id = {p.id: p for p in principals}
        for audit in (a for a in result.identities if a.provider == provider):
            paths[(provider, audit.identity)] = found.get(audit.identity, [])
            principal = by_id.get(audit.identity)
            admin[(provider, audit.identity)] = classify_admin(principal, catalog, now) if principal else None
    return paths, admin


@dataclass
class _States:
    """The permission table folded once per identity (a group-by each), for the state findings."""

    unused_destructive: dict[tuple[str, str], list[tuple[str, str, str, list[str]]]]
    used_destructive: dict[tuple[str, str], list[dict[str, Any]]]
    lists: dict[str, dict[tuple[str, str], dict[str, Any]]]  # finding kind -> identity -> aggregate
    granted: dict[tuple[str, str], int]
    used: dict[tuple[str, str], set[str]]  # identity -> the permissions it used

    @classmethod
    def of(cls, perms: pl.DataFrame) -> _States:
        keys = ["provider", "identity"]
        table = perms.lazy()
        destructive = pl.col("granted") & pl.col("destructive")
        selections = {
            "denied-attempt": pl.col("state") == "denied",
            "unused-grant": pl.col("granted") & ~pl.col("destructive") & (pl.col("state") == "unused"),
            "unobservable-grant": pl.col("state") == "unobservable",
            "used-not-granted": ~pl.col("granted") & (pl.col("state") == "used"),
        }
        # One collect_all: the group-bys share the scan of the table and run side by side.
        unused_rows, used_rows, granted_rows, used_actions, *list_rows = pl.collect_all(
            [
                table.filter(destructive & (pl.col("state") == "unused"))
                .group_by(
                    [*keys, "destructive_rule", "destructive_severity", "destructive_reason"], maintain_order=True
                )
                .agg("action"),
                table.filter(destructive & (pl.col("state") == "used")),
                table.group_by(keys).agg(pl.col("granted").sum()),
                table.filter(pl.col("state") == "used").group_by(keys).agg("action"),
                *(
                    table.filter(where)
                    .group_by(keys, maintain_order=True)
                    .agg(
                        pl.col("action"),
                        pl.col("denied_calls").sum(),
                        pl.col("unobservable_reason").drop_nulls().unique().sort(),
                    )
                    for where in selections.values()
                ),
            ]
        )
        unused_destructive: dict[tuple[str, str], list[tuple[str, str, str, list[str]]]] = defaultdict(list)
        for provider, identity, rule, severity, reason, actions in unused_rows.iter_rows():
            unused_destructive[(provider, identity)].append((rule, severity, reason, actions))
        used_destructive: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in used_rows.iter_rows(named=True):
            used_destructive[(row["provider"], row["identity"])].append(row)
        lists = {
            kind: {(r["provider"], r["identity"]): r for r in rows.iter_rows(named=True)}
            for kind, rows in zip(selections, list_rows, strict=True)
        }
        return cls(
            unused_destructive,
            used_destructive,
            lists,
            {(p, i): int(n) for p, i, n in granted_rows.iter_rows()},
            {(p, i): set(actions) for p, i, actions in used_actions.iter_rows()},
        )


def _state_findings(out: _Collector, key: tuple[str, str], folded: _States, sev: Mapping[str, str]) -> None:
    ranked = sorted(folded.unused_destructive.get(key, []), key=lambda g: (-SEVERITY_RANK[g[1]], g[0]))
    for rule, severity, reason, actions in ranked:
        out.add(
            "unused-destructive",
            severity,
            f"{_plural(len(actions), 'destructive permission')} never used: {reason}",
            actions,
            rule=rule,
            detail="block in code (blocklist deny) and remove from the policy",
        )
    for row in folded.used_destructive.get(key, []):
        out.add(
            "used-destructive",
            _cap(sev["used-destructive"], row["destructive_severity"]),
            f"{row['action']} used {row['calls']:,} time(s): {row['destructive_reason']}",
            [row["action"]],
            rule=row["destructive_rule"],
            detail="route through a human approval gate",
        )
    lists = folded.lists
    if denied := lists["denied-attempt"].get(key):
        out.add(
            "denied-attempt",
            sev["denied-attempt"],
            f"{_plural(len(denied['action']), 'permission')} attempted and refused by authorization",
            denied["action"],
            detail=f"{int(denied['denied_calls']):,} refused call(s)",
        )
    if unused := lists["unused-grant"].get(key):
        out.add(
            "unused-grant",
            sev["unused-grant"],
            f"{_plural(len(unused['action']), 'granted permission')} of {folded.granted.get(key, 0):,} never used",
            unused["action"],
        )
    if blind := lists["unobservable-grant"].get(key):
        out.add(
            "unobservable-grant",
            sev["unobservable-grant"],
            f"{_plural(len(blind['action']), 'granted permission')} the logs cannot show (kept, not called unused)",
            blind["action"],
            detail="; ".join(blind["unobservable_reason"]),
        )
    if stray := lists["used-not-granted"].get(key):
        out.add(
            "used-not-granted",
            sev["used-not-granted"],
            f"{_plural(len(stray['action']), 'permission')} used without an identity-policy grant",
            stray["action"],
            detail="granted by a resource policy or lost in expansion; check",
        )


def build_findings(data: AuditInput, result: DiffResult, rules: Rules, now: datetime) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    sev = rules.severities
    paths, admin = escalation_paths(data, result, rules, now)
    folded = _States.of(result.permissions)
    unmapped = data.unmapped.group_by(["provider", "identity"]).agg(
        pl.col("event").unique().sort(), pl.col("calls").sum()
    )
    unmapped_by = {(r["provider"], r["identity"]): r for r in unmapped.iter_rows(named=True)}
    stated_by: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in data.source_findings.iter_rows(named=True):
        stated_by[(row["provider"], row["identity"])].append(row)
    # Accounts with days missing from the logs: no activity there is no evidence of dormancy.
    blind = {
        (p, a)
        for p, a, i, actions in data.observability.select("provider", "account", "identity", "actions").iter_rows()
        if i is None and actions == ["*"]
    }
    for audit in result.identities:
        out = _Collector(audit)
        key = (audit.provider, audit.identity)
        used = folded.used.get(key, set())
        _grant_findings(out, audit, sev, data.catalogs[audit.provider], admin.get(key))
        _escalation_findings(out, paths.get(key, []), used)
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
        _state_findings(out, key, folded, sev)
        for stated in stated_by.get(key, ()):
            out.add(stated["kind"], sev[stated["kind"]], stated["title"], stated["actions"], detail=stated["detail"])
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
    # Built from columns: from row dicts, polars takes three times as long over the long action lists.
    df = pl.DataFrame({column: [row[column] for row in rows] for column in FINDINGS}, schema=FINDINGS)
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
