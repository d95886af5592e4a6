"""The frames of one audit: the sources' grants combined, the agents chosen, and everything
gathered assembled into :class:`auditor.model.AuditInput` (imported by :func:`auditor.audit.run_audit`
once the log scans have begun: this is where polars loads)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import polars as pl

from auditor import model
from auditor.catalog import Catalog
from auditor.connectors.base import Evidence, GrantSet, Source
from auditor.coverage import coverage_rows, input_problem_rows, missing_day_rows
from auditor.errors import InputError
from auditor.timefmt import iso_utc
from auditor.window import Window


def combined(parts: Sequence[GrantSet]) -> GrantSet:
    identities = model.concat([p.identities for p in parts], model.IDENTITIES, "identities")
    duplicated = identities.filter(pl.struct("provider", "identity").is_duplicated())
    gaps = [
        model.gap(p, a, i, "identity in several sources; the first one is kept", "warning")
        for p, a, i in duplicated.select("provider", "account", "identity").unique(maintain_order=True).iter_rows()
    ]
    keys = ["provider", "identity", "statement_id"]
    return GrantSet(
        identities=identities.unique(["provider", "identity"], keep="first", maintain_order=True),
        grants=model.concat([p.grants for p in parts], model.GRANTS, "grants").unique(keys, maintain_order=True),
        trusts=model.concat([p.trusts for p in parts], model.TRUSTS, "trusts").unique(keys, maintain_order=True),
        managed=model.concat([p.managed for p in parts], model.MANAGED, "managed").unique(
            ["provider", "id"], maintain_order=True
        ),
        gaps=model.concat([*(p.gaps for p in parts), model.frame(gaps, model.GAPS)], model.GAPS, "gaps"),
    )


def agents(identities: pl.DataFrame) -> dict[str, frozenset[str]]:
    chosen = identities.filter(pl.col("is_agent"))
    if chosen.is_empty():
        raise InputError(
            "no agent identities selected",
            "tag them (default tag key 'agent'), or pass --agent GLOB, --agents-file FILE or --all-identities",
        )
    return {
        provider: frozenset(group["identity"].to_list())
        for (provider,), group in chosen.group_by(["provider"], maintain_order=True)
    }


def assemble(
    sources: Sequence[Source],
    grants: GrantSet,
    evidence: Sequence[Evidence],
    catalogs: dict[str, Catalog],
    chosen: dict[str, Window],
    caps: Sequence[datetime],
    agents: dict[str, frozenset[str]],
) -> model.AuditInput:
    logs = [log for e in evidence for log in e.logs]
    identities = grants.identities
    accounts = {
        provider: set(identities.filter(pl.col("is_agent") & (pl.col("provider") == provider))["account"].to_list())
        for provider in agents
    }
    cap_of = {log.origin: iso_utc(cap) for e, cap in zip(evidence, caps, strict=True) for log in e.logs}
    notes = {i: n for e in evidence for i, n in e.notes.items()}
    if notes:
        identities = identities.with_columns(
            pl.struct("identity", "notes")
            .map_elements(lambda r: [*(r["notes"] or []), *notes.get(r["identity"], [])], return_dtype=pl.List(pl.Utf8))
            .alias("notes")
        )
    return model.AuditInput(
        identities=identities,
        grants=grants.grants,
        trusts=grants.trusts,
        managed=grants.managed,
        usage=model.concat([e.usage for e in evidence], model.USAGE, "usage"),
        unmapped=model.concat([e.unmapped for e in evidence], model.UNMAPPED, "unmapped"),
        observability=model.concat(
            [
                *(e.observability for e in evidence),
                model.frame(missing_day_rows(logs, chosen, accounts), model.OBSERVABILITY),
            ],
            model.OBSERVABILITY,
            "observability",
        ),
        coverage=model.concat(
            [model.frame(coverage_rows(logs, chosen, accounts), model.COVERAGE), *(e.coverage for e in evidence)],
            model.COVERAGE,
            "coverage",
        ),
        gaps=model.concat(
            [grants.gaps, *(e.gaps for e in evidence), model.frame(input_problem_rows(logs, cap_of), model.GAPS)],
            model.GAPS,
            "gaps",
        ),
        source_findings=model.concat([e.findings for e in evidence], model.SOURCE_FINDINGS, "source_findings"),
        catalogs=catalogs,
        windows=chosen,
        sources=tuple(path for source in sources for path in source.inputs()),
    )
