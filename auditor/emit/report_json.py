"""``report.json``: the machine-readable report (stable schema ``auditor.report/v1``).

The Markdown report and the terminal summary are rendered from this same document, so the three
never disagree. Nothing secret goes in: no access keys, no request parameters, no credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from auditor import __version__
from auditor.diff import IdentityAudit
from auditor.emit.base import IdentityPolicies
from auditor.exceptions import open_findings
from auditor.ruleset import SEVERITIES
from auditor.timefmt import iso, window_dict

if TYPE_CHECKING:
    from auditor.audit import AuditResult

SCHEMA = "auditor.report/v1"
COUNTED_SEVERITIES = tuple(reversed(SEVERITIES))  # critical first


def _severity_counts(findings: pl.DataFrame) -> dict[str, int]:
    """Open findings per severity (those an exception accepts are not counted)."""
    counts = dict.fromkeys(COUNTED_SEVERITIES, 0)
    for severity in open_findings(findings)["severity"].to_list():
        counts[severity] += 1
    return counts


def _records(df: pl.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in df.iter_rows(named=True):
        out.append({k: iso(v) if hasattr(v, "strftime") else v for k, v in row.items()})
    return out


@dataclass(frozen=True)
class _Folded:
    """The permission table folded once per identity (group-bys over the whole table)."""

    counts: dict[tuple[str, str], dict[str, Any]]
    used: dict[tuple[str, str], pl.DataFrame]
    blind: dict[tuple[str, str], list[dict[str, Any]]]

    @classmethod
    def of(cls, perms: pl.DataFrame) -> _Folded:
        keys = ["provider", "identity"]
        granted = pl.col("granted")
        state = pl.col("state")
        counts = perms.group_by(keys).agg(
            granted.sum().alias("granted"),
            (granted & (state == "used")).sum().alias("used"),
            (granted & (state == "unused")).sum().alias("unused"),
            (granted & (state == "unobservable")).sum().alias("unobservable"),
            (state == "denied").sum().alias("denied"),
            (granted & pl.col("destructive")).sum().alias("destructive_granted"),
            pl.col("evidence").list.explode(keep_nulls=False, empty_as_null=False).unique().sort().alias("evidence"),
        )
        used = perms.filter(state == "used").select(
            *keys, "action", "granted", "calls", "first_seen", "last_seen", "evidence", "resources_seen", "destructive"
        )
        blind: dict[tuple[str, str], list[dict[str, Any]]] = {}
        reasons = (
            perms.filter(granted & (state == "unobservable"))
            .group_by([*keys, "unobservable_reason"])
            .len()
            .sort(["len", "unobservable_reason"], descending=[True, False])
        )
        for provider, identity, reason, count in reasons.iter_rows():
            blind.setdefault((provider, identity), []).append({"reason": reason, "permissions": count})
        return cls(
            {(r["provider"], r["identity"]): r for r in counts.iter_rows(named=True)},
            {k: v.drop(keys) for k, v in used.partition_by(keys, as_dict=True).items()},
            blind,
        )


def _identity(
    audit: IdentityAudit,
    ident: dict[str, Any],
    policy: IdentityPolicies | None,
    sources: list[str],
    folded: _Folded,
    findings: pl.DataFrame,
) -> dict[str, Any]:
    key = (audit.provider, audit.identity)
    counts = folded.counts.get(key) or dict.fromkeys(
        ("granted", "used", "unused", "unobservable", "denied", "destructive_granted"), 0
    )
    used = folded.used.get(key)
    granted, unused = counts["granted"], counts["unused"]
    return {
        "provider": audit.provider,
        "account": audit.account,
        "identity": audit.identity,
        "name": audit.name,
        "kind": ident["kind"],
        "selected_by": ident["selected_by"],
        "grant_sources": sorted({s.source for s in audit.statements}),
        "granted": granted,
        "used": counts["used"],
        "denied": counts["denied"],
        "unused": unused,
        "unobservable": counts["unobservable"],
        "unused_percent": round(100 * unused / granted, 1) if granted else 0.0,
        "destructive_granted": counts["destructive_granted"],
        "findings": _severity_counts(findings),
        "coverage": {
            "sources": sources,
            "evidence": list(counts.get("evidence") or []),
            "unobservable": folded.blind.get(key, []),
        },
        "used_permissions": _records(used) if used is not None else [],
        "policy_folder": policy.folder if policy else None,
        "policy_files": [f.path for f in policy.files] if policy else [],
        "apply_commands": policy.apply if policy else [],
        "exception_commands": policy.exceptions if policy else [],
        "dormant": policy.dormant if policy else False,
        "policy_note": policy.note if policy else None,
        "kept_unobservable": len(policy.kept_unobservable) if policy else 0,
        "policy_alternative": policy.alternative if policy else None,
        "notes": list(ident["notes"] or []),
    }


def _not_audited(result: AuditResult) -> list[dict[str, Any]]:
    """Identities the connectors report but exclude from the audit on purpose (service agents,
    deleted service accounts ...): ``selected_by`` says why, ``is_agent`` is false."""
    rows = result.data.identities.filter(~pl.col("is_agent") & pl.col("selected_by").is_not_null())
    return [
        {k: r[k] for k in ("provider", "account", "identity", "kind", "selected_by")}
        for r in rows.sort(["provider", "account", "identity"]).iter_rows(named=True)
    ]


def report(result: AuditResult, policies: list[IdentityPolicies], written: list[str]) -> dict[str, Any]:
    by_key = {(p.provider, p.identity): p for p in policies}
    folded = _Folded.of(result.permissions)
    findings = result.findings.partition_by(["provider", "identity"], as_dict=True)
    rows = {(r["provider"], r["identity"]): r for r in result.data.identities.iter_rows(named=True)}
    sources: dict[tuple[str, str], set[str]] = {}
    for provider, account, source in result.data.coverage.select("provider", "account", "source").iter_rows():
        sources.setdefault((provider, account), set()).add(source)
    identities = [
        _identity(
            audit,
            rows[(audit.provider, audit.identity)],
            by_key.get((audit.provider, audit.identity)),
            sorted(sources.get((audit.provider, audit.account), ())),
            folded,
            findings.get((audit.provider, audit.identity), result.findings.clear()),
        )
        for audit in result.audits
    ]
    counts = _severity_counts(result.findings)
    dormant = result.findings.filter(pl.col("kind") == "dormant-identity").unique(["provider", "identity"])
    worst = next((s for s in COUNTED_SEVERITIES if counts[s]), None)
    data = result.data
    return {
        "schema": SCHEMA,
        "tool": {"name": "auditor", "version": __version__},
        "generated_at": iso(result.generated_at),
        "windows": {provider: window_dict(w) for provider, w in sorted(data.windows.items())},
        "inputs": list(data.sources),
        "catalogs": {name: catalog.version for name, catalog in sorted(data.catalogs.items())},
        "rules": [str(p) for p in result.rules.sources],
        "options": {"drop_unobservable": result.options.drop_unobservable, "strict": result.options.strict},
        "summary": {
            "identities": len(identities),
            # dormant as the plans are (no activity in a window the logs cover), not "no call seen": an
            # identity the logs cannot see is not dormant, and the plans do not remove its grants
            "agents_dormant": dormant.height,
            "granted": sum(i["granted"] for i in identities),
            "used": sum(i["used"] for i in identities),
            "unused": sum(i["unused"] for i in identities),
            "unobservable": sum(i["unobservable"] for i in identities),
            "findings": counts,
            "accepted": result.findings.height - sum(counts.values()),
            "worst_severity": worst,
        },
        "identities": identities,
        "not_audited": _not_audited(result),
        "findings": _records(result.findings),
        "exceptions": [status.as_dict() for status in result.exceptions],
        "coverage": _records(data.coverage),
        "observability": _records(
            data.observability.with_columns(pl.col("actions").list.len().alias("permission_patterns")).drop("actions")
        ),
        "unmapped": _records(data.unmapped.sort("calls", descending=True)),
        "gaps": _records(data.gaps),
        "outputs": sorted(written),
    }
