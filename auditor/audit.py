"""The library entry point: :func:`run_audit` asks every source its questions and decides the rest.

Data flow: sources → grants (who holds what) → agent selection → catalogs → one window per cloud →
usage within it (rescanned once if the window moved) → coverage, missing days and input problems →
the diff engine (one evidence state per permission) → findings. :func:`auditor.output.write_outputs`
turns the result into files. The CLI, the tests and the benchmarks all go through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from auditor import exceptions as accepted
from auditor import model
from auditor import ruleset as rule_files
from auditor import window as windows
from auditor.catalog import Catalog
from auditor.connectors.base import Evidence, GrantSet, Progress, Source, UsageRequest, WindowEnd, no_progress
from auditor.coverage import coverage_rows, input_problem_rows, missing_day_rows
from auditor.diff import IdentityAudit, diff
from auditor.errors import InputError
from auditor.findings import build_findings
from auditor.ruleset import SEVERITY_RANK, Rules
from auditor.selection import AgentSelector
from auditor.timefmt import iso_utc, parse_iso


@dataclass(frozen=True)
class AuditConfig:
    """Everything one audit needs: the sources and the options that apply to all of them."""

    sources: tuple[Source, ...]
    days: int = 30
    until: datetime | None = None
    selector: AgentSelector = field(default_factory=AgentSelector)
    rules: Rules | None = None  # default: the shipped rules
    strict: bool = False  # every input problem is fatal
    drop_unobservable: bool = False  # least-privilege outputs leave unobservable permissions out
    workers: int | None = None  # parallel log readers (default: CPU count)
    max_file_bytes: int | None = None  # cap on one decompressed log file
    now: datetime | None = None  # the moment nothing can be later than (default: the clock)
    exceptions: tuple[accepted.Entry, ...] = ()  # findings accepted for a time (see auditor.exceptions)


@dataclass(frozen=True)
class AuditOptions:
    drop_unobservable: bool = False
    strict: bool = False


@dataclass(frozen=True)
class AuditResult:
    data: model.AuditInput
    rules: Rules
    options: AuditOptions
    permissions: pl.DataFrame
    findings: pl.DataFrame
    audits: tuple[IdentityAudit, ...]
    generated_at: datetime
    exceptions: tuple[accepted.Status, ...] = ()

    def audit_of(self, provider: str, identity: str) -> IdentityAudit:
        return next(a for a in self.audits if a.provider == provider and a.identity == identity)

    def findings_at_or_above(self, level: str) -> pl.DataFrame:
        rank = SEVERITY_RANK[level]
        return accepted.open_findings(self.findings).filter(
            pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int8) >= rank
        )

    def window(self, provider: str) -> model.Window | None:
        return self.data.windows.get(provider)


def run_audit(config: AuditConfig, progress: Progress = no_progress) -> AuditResult:
    """Audit the agent identities of ``config.sources``."""
    if not config.sources:
        raise InputError(
            "nothing to audit",
            "pass --aws-dir DIR and/or --gcp-dir DIR (or the single-file options of auditor audit --help)",
        )
    rules = config.rules or rule_files.load()
    now = (config.now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    grant_sets = [source.grants(config.selector, rules) for source in config.sources]
    grants = _combined(grant_sets)
    agents = _agents(grants.identities)
    catalogs = _catalogs(config.sources, grant_sets, rules)
    caps = [_cap(source, now) for source in config.sources]
    ends = [s.window_end(cap, rules, config.workers) for s, cap in zip(config.sources, caps, strict=True)]
    chosen = windows.choose(
        [(s.provider, e) for s, e in zip(config.sources, ends, strict=True)], config.days, config.until, now
    )
    evidence = _usage(config, rules, chosen, caps, agents, catalogs, progress, set(chosen))
    moved = _moved(config, ends, chosen, evidence)
    if moved:  # the probe under-estimated the newest event: scan again with the right window
        chosen = {**chosen, **moved}
        evidence.update(_usage(config, rules, chosen, caps, agents, catalogs, progress, set(moved)))
    data = _assemble(config, grants, [evidence[i] for i in range(len(config.sources))], catalogs, chosen, caps, agents)
    options = AuditOptions(drop_unobservable=config.drop_unobservable, strict=config.strict)
    if config.strict and data.gaps.height:
        first = data.gaps.row(0, named=True)
        raise InputError(
            f"{first['scope']}: {first['reason']} ({data.gaps.height} input problem(s) in all)",
            "fix the input, or drop --strict to audit what could be read",
        )
    result = diff(data, rules, now)
    findings, statuses = accepted.apply(build_findings(data, result, rules, now), config.exceptions, now)
    return AuditResult(data, rules, options, result.permissions, findings, tuple(result.identities), now, statuses)


def _cap(source: Source, now: datetime) -> datetime:
    collected = source.collected_at()
    return min(collected, now) if collected is not None else now


def _combined(parts: Sequence[GrantSet]) -> GrantSet:
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


def _agents(identities: pl.DataFrame) -> dict[str, frozenset[str]]:
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


def _catalogs(sources: Sequence[Source], grant_sets: Sequence[GrantSet], rules: Rules) -> dict[str, Catalog]:
    catalogs: dict[str, Catalog] = {}
    for source, grants in zip(sources, grant_sets, strict=True):
        catalog = source.catalog(grants, rules)
        known = catalogs.get(source.provider)
        catalogs[source.provider] = catalog if known is None else known.merged(catalog)
    return catalogs


def _usage(
    config: AuditConfig,
    rules: Rules,
    chosen: dict[str, model.Window],
    caps: Sequence[datetime],
    agents: dict[str, frozenset[str]],
    catalogs: dict[str, Catalog],
    progress: Progress,
    providers: set[str],
) -> dict[int, Evidence]:
    """Each source's evidence (by its position), for the sources of ``providers``."""
    found: dict[int, Evidence] = {}
    for index, (source, cap) in enumerate(zip(config.sources, caps, strict=True)):
        if source.provider not in providers:
            continue
        request = UsageRequest(
            chosen[source.provider],
            cap,
            agents.get(source.provider, frozenset()),
            catalogs[source.provider],
            rules,
            config.workers,
            config.max_file_bytes,
        )
        found[index] = source.usage(request, progress)
    return found


def _moved(
    config: AuditConfig, ends: Sequence[WindowEnd], chosen: dict[str, model.Window], evidence: dict[int, Evidence]
) -> dict[str, model.Window]:
    """New windows for the clouds whose full scan found a newer event than the probe did."""
    if config.until is not None:
        return {}
    moved: dict[str, model.Window] = {}
    for provider, window in chosen.items():
        mine = [i for i, s in enumerate(config.sources) if s.provider == provider]
        if any(ends[i].fixed for i in mine):
            continue
        newest = max((log.newest for i in mine for log in evidence[i].logs), default="")
        if newest and parse_iso(newest) > window.end:
            moved[provider] = windows.window_ending(
                parse_iso(newest), config.days, f"the newest event of the full scan ({newest})"
            )
    return moved


def _assemble(
    config: AuditConfig,
    grants: GrantSet,
    evidence: Sequence[Evidence],
    catalogs: dict[str, Catalog],
    chosen: dict[str, model.Window],
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
        sources=tuple(path for source in config.sources for path in source.inputs()),
    )
