"""The library entry point: :func:`run_audit` asks every source its questions and decides the rest.

Data flow: one window per cloud (it needs no grants) → the log scans that can begin without the
agents begin (:class:`~auditor.connectors.base.ReadsAhead`) → sources → grants (who holds what) →
agent selection → catalogs → usage within the window (rescanned once if the window moved) →
coverage, missing days and input problems → the diff engine (one evidence state per permission) →
findings. :func:`auditor.emit.write.write_outputs` turns the result into files. The CLI, the tests
and the benchmarks all go through here.

Nothing here imports polars before the scans have begun: the frames are built in
:mod:`auditor.audit_input`, the engine in :mod:`auditor.diff` and :mod:`auditor.findings`, all
imported by :func:`run_audit` after, so that the workers read the logs while they load.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from auditor import ruleset as rule_files
from auditor import window as windows
from auditor.catalog import Catalog
from auditor.connectors.base import (
    EarlyRequest,
    Evidence,
    GrantSet,
    Progress,
    ReadsAhead,
    Source,
    UsageInFlight,
    UsageRequest,
    WindowEnd,
    no_progress,
)
from auditor.errors import InputError
from auditor.ruleset import SEVERITY_RANK, Rules
from auditor.selection import AgentSelector
from auditor.timefmt import parse_iso
from auditor.window import Window

if TYPE_CHECKING:
    import polars as pl

    from auditor import exceptions as accepted
    from auditor import model
    from auditor.diff import IdentityAudit


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
        import polars as pl

        from auditor import exceptions as accepted

        rank = SEVERITY_RANK[level]
        return accepted.open_findings(self.findings).filter(
            pl.col("severity").replace_strict(SEVERITY_RANK, return_dtype=pl.Int8) >= rank
        )

    def window(self, provider: str) -> Window | None:
        return self.data.windows.get(provider)


def run_audit(
    config: AuditConfig, progress: Progress = no_progress, meanwhile: Callable[[], object] | None = None
) -> AuditResult:
    """Audit the agent identities of ``config.sources``. ``meanwhile`` is called once the grants are
    read, while log scans begun early may still be reading (the CLI loads its output modules there)."""
    if not config.sources:
        raise InputError(
            "nothing to audit",
            "pass --aws-dir DIR and/or --gcp-dir DIR (or the single-file options of auditor audit --help)",
        )
    rules = config.rules or rule_files.load()
    now = (config.now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    caps: dict[int, datetime] = {}
    ends: dict[int, WindowEnd] = {}
    ahead = _reading_ahead(config.sources)
    chosen = _windows(config, rules, now, ahead, caps, ends)
    in_flight: dict[int, UsageInFlight] = {}
    try:
        for index, source in enumerate(config.sources):
            if isinstance(source, ReadsAhead) and source.provider in ahead:
                early = EarlyRequest(chosen[source.provider], caps[index], rules, config.workers, config.max_file_bytes)
                in_flight[index] = source.read_ahead(early)
        # polars and the engine load here, while the workers read the logs
        from auditor import audit_input
        from auditor import exceptions as accepted
        from auditor.diff import diff
        from auditor.findings import build_findings

        grant_sets = [source.grants(config.selector, rules) for source in config.sources]
        grants = audit_input.combined(grant_sets)
        agents = audit_input.agents(grants.identities)
        catalogs = _catalogs(config.sources, grant_sets, rules)
        rest = {s.provider for s in config.sources} - ahead
        chosen |= _windows(config, rules, now, rest, caps, ends)
        cap_list = [caps[i] for i in range(len(config.sources))]
        if meanwhile is not None:
            meanwhile()
        evidence = _usage(config, rules, chosen, cap_list, agents, catalogs, progress, set(chosen), in_flight)
        moved = _moved(config, ends, chosen, evidence)
        if moved:  # the probe under-estimated the newest event: scan again with the right window
            chosen = {**chosen, **moved}
            evidence.update(_usage(config, rules, chosen, cap_list, agents, catalogs, progress, set(moved), {}))
        found = [evidence[i] for i in range(len(config.sources))]
        data = audit_input.assemble(config.sources, grants, found, catalogs, chosen, cap_list, agents)
    finally:
        for flight in in_flight.values():
            flight.cancel()
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


def _reading_ahead(sources: Sequence[Source]) -> set[str]:
    """The providers whose every source reads ahead: their window is chosen before the grants are
    read (the others may need their grants read first, :class:`~auditor.connectors.base.Source`)."""
    providers = {s.provider for s in sources}
    return {p for p in providers if all(isinstance(s, ReadsAhead) for s in sources if s.provider == p)}


def _windows(
    config: AuditConfig,
    rules: Rules,
    now: datetime,
    providers: set[str],
    caps: dict[int, datetime],
    ends: dict[int, WindowEnd],
) -> dict[str, Window]:
    """The window of each of ``providers``; the cap and window end of their sources go into ``caps``
    and ``ends`` (by source position)."""
    mine = [i for i, s in enumerate(config.sources) if s.provider in providers]
    for index in mine:
        source = config.sources[index]
        collected = source.collected_at()
        caps[index] = min(collected, now) if collected is not None else now
        ends[index] = source.window_end(caps[index], rules, config.workers)
    return windows.choose([(config.sources[i].provider, ends[i]) for i in mine], config.days, config.until, now)


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
    chosen: dict[str, Window],
    caps: Sequence[datetime],
    agents: dict[str, frozenset[str]],
    catalogs: dict[str, Catalog],
    progress: Progress,
    providers: set[str],
    in_flight: dict[int, UsageInFlight],
) -> dict[int, Evidence]:
    """Each source's evidence (by its position), for the sources of ``providers``; a scan in flight
    (``in_flight``, by position) answers for its source, once."""
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
        flight = in_flight.pop(index, None)
        found[index] = flight.evidence(request, progress) if flight else source.usage(request, progress)
    return found


def _moved(
    config: AuditConfig, ends: dict[int, WindowEnd], chosen: dict[str, Window], evidence: dict[int, Evidence]
) -> dict[str, Window]:
    """New windows for the clouds whose full scan found a newer event than the probe did."""
    if config.until is not None:
        return {}
    moved: dict[str, Window] = {}
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
