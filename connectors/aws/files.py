"""The offline AWS connector: an authorization-details export plus CloudTrail logs on disk.

A snapshot directory (what ``auditor collect aws`` writes, or what a user assembles by hand) holds
``authorization-details*.json``, optionally ``event-selectors*.json``, and the logs (an ``AWSLogs/``
tree or ``*.ndjson`` exports) anywhere below it. A live collection adds ``manifest.json`` (its window
becomes the default audit window, its gaps are reported), ``athena-usage.json`` and
``access-advisor-*.json`` (more usage, see :mod:`auditor.connectors.aws.snapshot`), and per-account
``event-selectors-<account>*.json`` that apply to that account only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from auditor import model
from auditor.catalog import aws_catalog
from auditor.connectors.aws import cloudtrail as trail
from auditor.connectors.aws import snapshot as snap
from auditor.connectors.aws.coverage import (
    ObservabilityRules,
    TrailCoverage,
    missing_days,
    observability_rows,
    summarize_days,
)
from auditor.connectors.aws.iam import AuthorizationDetails
from auditor.connectors.base import AuditRequest, Progress, no_progress
from auditor.errors import InputError
from auditor.timefmt import iso_utc, parse_iso

AUTH_GLOB = "authorization-details*.json"
SELECTORS_GLOB = "event-selectors*.json"


@dataclass(frozen=True)
class AwsFiles:
    """Where the offline AWS inputs are."""

    auth_files: tuple[Path, ...]
    trail_paths: tuple[Path, ...]
    selector_files: tuple[Path, ...] = ()
    data_events: str | None = None
    extras: snap.SnapshotExtras = field(default_factory=snap.SnapshotExtras)
    name: str = field(default="aws-files")

    @classmethod
    def from_dir(cls, root: Path, data_events: str | None = None) -> AwsFiles:
        """Discover the inputs of a snapshot directory."""
        if not root.is_dir():
            raise InputError(f"{root}: not a directory", "pass the folder holding authorization-details.json")
        auth = tuple(sorted(root.glob(AUTH_GLOB)))
        if not auth:
            raise InputError(
                f"{root}: no {AUTH_GLOB} found",
                "export it with `aws iam get-account-authorization-details --output json > authorization-details.json`",
            )
        selectors = tuple(sorted(root.glob(SELECTORS_GLOB)))
        return cls(auth, (root,), selectors, data_events, snap.SnapshotExtras.discover(root))

    def collect(self, request: AuditRequest, progress: Progress = no_progress) -> model.AuditInput:
        return collect_files(self, request, progress)


def _grants(files: Sequence[Path], request: AuditRequest) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    identities, grants, gaps = [], [], []
    for path in files:
        details = AuthorizationDetails.from_file(path)
        i, g, e = details.frames(request.selector)
        identities.append(i)
        grants.append(g)
        gaps.append(e)
    ids = pl.concat(identities)
    duplicated = ids.filter(pl.col("identity").is_duplicated())["identity"].unique().to_list()
    dup_gaps = [
        {
            "provider": "aws",
            "account": i.split(":")[4],
            "scope": i,
            "reason": "identity in several exports; first kept",
            "severity": "warning",
            "count": 1,
        }
        for i in duplicated
    ]
    return (
        ids.unique("identity", keep="first", maintain_order=True),
        pl.concat(grants).unique(["identity", "statement_id"], keep="first", maintain_order=True),
        pl.concat([*gaps, model.frame(dup_gaps, model.GAPS)]),
    )


def _coverage(files: Sequence[TrailCoverage]) -> TrailCoverage | None:
    if not files:
        return None
    merged = files[0]
    for other in files[1:]:
        merged.management_read |= other.management_read
        merged.management_write |= other.management_write
        for resource_type, scope in other.data.items():
            merged._merge(resource_type, scope)
    return merged


def _times(df: pl.DataFrame, *columns: str) -> pl.DataFrame:
    return df.with_columns(
        pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC", strict=False) for c in columns
    )


def _usage_frame(partial: trail.Partial) -> pl.DataFrame:
    rows = [
        {
            "provider": "aws",
            "account": account,
            "identity": identity,
            "action": action,
            "outcome": outcome,
            "evidence": evidence,
            "calls": calls,
            "first_seen": first,
            "last_seen": last,
            "resources": sorted(resources) if resources else [],
            "all_with_resource": bool(complete and resources),
        }
        for (account, identity, action, outcome, evidence), (
            calls,
            first,
            last,
            resources,
            complete,
        ) in partial.usage.items()
    ]
    return _times(
        model.frame(rows, {**model.USAGE, "first_seen": pl.Utf8, "last_seen": pl.Utf8}), "first_seen", "last_seen"
    )


def scan_trail(
    paths: Sequence[Path], request: AuditRequest, agents: frozenset[str], progress: Progress
) -> tuple[trail.Partial, str, str]:
    """Read the logs once for the window (twice only if the newest-event estimate was wrong)."""
    files = trail.find_log_files(paths)
    options = trail.TrailOptions("", "~", agents, request.rule_dirs)
    newest = "" if request.until else trail.newest_event_time(files, options, request.workers)
    if not request.until and not newest:
        newest = iso_utc(datetime.now(UTC))
    start, end = trail.window_bounds(newest, request.until, request.days)
    options = trail.TrailOptions(start, end, agents, request.rule_dirs)
    partial = trail.scan(files, options, request.workers, lambda d, t: progress("CloudTrail files", d, t))
    if not request.until and partial.newest > end:
        start, end = trail.window_bounds(partial.newest, None, request.days)
        options = trail.TrailOptions(start, end, agents, request.rule_dirs)
        partial = trail.scan(files, options, request.workers, lambda d, t: progress("CloudTrail files (again)", d, t))
    return partial, start, end


def _trail_coverages(source: AwsFiles, request: AuditRequest) -> tuple[TrailCoverage | None, dict[str, TrailCoverage]]:
    """The coverage of every account, and of the accounts with their own ``event-selectors-<account>``."""
    general = [p for p in source.selector_files if not snap.ACCOUNT_SELECTORS.match(p.name)]
    own: dict[str, list[Path]] = {}
    for path in source.selector_files:
        if match := snap.ACCOUNT_SELECTORS.match(path.name):
            own.setdefault(match.group(1), []).append(path)
    default = _coverage([TrailCoverage.from_selectors_file(p) for p in general]) or (
        TrailCoverage.declared(source.data_events, ObservabilityRules.load(request.rule_dirs))
        if source.data_events
        else None
    )
    by_account = {
        account: _coverage([TrailCoverage.from_selectors_file(p) for p in (*general, *paths)])
        for account, paths in own.items()
    }
    return default, {a: c for a, c in by_account.items() if c is not None}


def _has_log_files(paths: Sequence[Path]) -> bool:
    try:
        return bool(trail.find_log_files(paths))
    except InputError:
        return False


def collect_files(source: AwsFiles, request: AuditRequest, progress: Progress = no_progress) -> model.AuditInput:
    extras = source.extras
    if request.until is None and (collected_end := extras.window_end()) is not None:
        request = replace(request, until=collected_end)  # a snapshot audits the window it was collected for
    identities, grants, gaps = _grants(source.auth_files, request)
    agents = frozenset(identities.filter(pl.col("is_agent"))["identity"].to_list())
    if extras.has_usage and not _has_log_files(source.trail_paths):  # e.g. Athena only: no log file at all
        start, end = trail.window_bounds("", request.until or datetime.now(UTC), request.days)
        partial = trail.Partial()
    else:
        partial, start, end = scan_trail(source.trail_paths, request, agents, progress)
    added = extras.read(agents, start, end, request.rule_dirs)
    partial.merge(added.partial)
    coverage, coverage_by_account = _trail_coverages(source, request)
    extra_files = (*filter(None, [extras.manifest]), *extras.athena_files, *extras.advisor_files)
    return assemble(
        identities,
        grants,
        pl.concat([gaps, model.frame(added.gaps, model.GAPS)]),
        partial,
        start,
        end,
        request,
        coverage=coverage,
        origin=", ".join(str(p) for p in source.trail_paths),
        sources=tuple(str(p) for p in (*source.auth_files, *source.trail_paths, *extra_files)),
        coverage_by_account=coverage_by_account,
        extra_coverage=added.coverage,
    )


def assemble(
    identities: pl.DataFrame,
    grants: pl.DataFrame,
    gaps: pl.DataFrame,
    partial: trail.Partial,
    start: str,
    end: str,
    request: AuditRequest,
    coverage: TrailCoverage | None,
    origin: str,
    sources: tuple[str, ...],
    extra_usage: pl.DataFrame | None = None,
    extra_observability: Sequence[dict[str, Any]] = (),
    coverage_by_account: Mapping[str, TrailCoverage] | None = None,
    extra_coverage: Sequence[dict[str, Any]] = (),
) -> model.AuditInput:
    """Turn grants plus folded CloudTrail counters into the normalized input of the diff engine."""
    catalog = aws_catalog()
    rules = ObservabilityRules.load(request.rule_dirs)
    accounts = sorted(set(identities.filter(pl.col("is_agent"))["account"].to_list()))
    observability: list[dict[str, Any]] = list(extra_observability)
    coverage_rows: list[dict[str, Any]] = []
    for account in accounts:
        observability += observability_rows(account, (coverage_by_account or {}).get(account, coverage), rules, catalog)
        days = partial.days.get(account, set())
        missing = missing_days(days, start, end)
        if missing:
            total = len(missing_days(set(), start, end))
            observability.append(
                {
                    "provider": "aws",
                    "account": account,
                    "identity": None,
                    "actions": ["*"],
                    "reason": f"CloudTrail has no events for {len(missing)} of {total} days of the window "
                    f"({summarize_days(missing)})",
                }
            )
        coverage_rows.append(
            {
                "provider": "aws",
                "account": account,
                "source": f"CloudTrail {origin}",
                "first_event": partial.first.get(account),
                "last_event": partial.last.get(account),
                "days_with_events": len([d for d in days if start[:10] <= d <= end[:10]]),
                "events_read": partial.events_read,
                "events_in_window": partial.events_in_window,
                "files_read": partial.files_read,
                "detail": "; ".join(
                    f"{count:,} skipped: {reason}" for reason, count in sorted(partial.skipped.items())
                ),
            }
        )
    coverage_rows += extra_coverage
    trail_gaps = model.frame([{"provider": "aws", "account": None, **g} for g in partial.gaps], model.GAPS)
    unmapped = model.frame(
        [
            {"provider": "aws", "account": a, "identity": i, "event": e, "calls": n, "reason": r}
            for (a, i, e, r), n in partial.unmapped.items()
        ],
        model.UNMAPPED,
    )
    usage = _usage_frame(partial)
    if extra_usage is not None:
        usage = pl.concat([usage, extra_usage.select(list(model.USAGE))])
    window = model.Window(parse_iso(start), parse_iso(end))
    return model.AuditInput(
        identities=identities,
        grants=grants,
        usage=usage,
        unmapped=unmapped,
        observability=model.frame(observability, model.OBSERVABILITY),
        coverage=_times(
            model.frame(coverage_rows, {**model.COVERAGE, "first_event": pl.Utf8, "last_event": pl.Utf8}),
            "first_event",
            "last_event",
        ),
        gaps=pl.concat([gaps, trail_gaps]),
        catalogs={"aws": catalog},
        window=window,
        sources=sources,
    )
