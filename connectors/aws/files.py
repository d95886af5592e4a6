"""The offline AWS source: an authorization-details export plus CloudTrail logs on disk.

A snapshot directory (what ``auditor collect aws`` writes, or what a user assembles by hand) holds
``authorization-details*.json``, optionally ``event-selectors*.json``, and the logs (an ``AWSLogs/``
tree or exports) anywhere below it. A live collection adds ``manifest.json`` (its window becomes the
default audit window, its gaps are reported), ``athena-usage.json`` and ``access-advisor-*.json``
(more usage, see :mod:`auditor.connectors.aws.snapshot`), and per-account
``event-selectors-<account>*.json`` that apply to that account only.

The log scan begins before the grants are read (:meth:`AwsFiles.read_ahead`), and before polars
has loaded: the frames are built by methods that import it when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.catalog import Catalog, aws_catalog
from auditor.connectors.aws import cloudtrail as trail
from auditor.connectors.aws import snapshot as snap
from auditor.connectors.aws.coverage import ObservabilityRules, TrailCoverage, observability_rows
from auditor.connectors.base import (
    EarlyRequest,
    Evidence,
    GrantSet,
    Progress,
    UsageRequest,
    WindowEnd,
    no_progress,
)
from auditor.connectors.log_scan import FoldInFlight
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP
from auditor.ruleset import Rules
from auditor.selection import AgentSelector
from auditor.timefmt import iso_utc, parse_iso

if TYPE_CHECKING:
    import polars as pl


AUTH_GLOB = "authorization-details*.json"
SELECTORS_GLOB = "event-selectors*.json"


@dataclass
class AwsFiles:
    """Where the offline AWS inputs are; answers the core's questions about them."""

    auth_files: tuple[Path, ...]
    trail_paths: tuple[Path, ...]
    selector_files: tuple[Path, ...] = ()
    data_events: str | None = None
    extras: snap.SnapshotExtras = field(default_factory=snap.SnapshotExtras)
    provider: str = "aws"
    name: str = "aws-files"
    _files: list[Path] | None = field(default=None, repr=False)
    _walk_gaps: list[dict[str, Any]] = field(default_factory=list, repr=False)

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

    # -- the questions ------------------------------------------------------------------------

    def grants(self, selector: AgentSelector, rules: Rules) -> GrantSet:
        import polars as pl

        from auditor import model
        from auditor.connectors.aws.iam import AuthorizationDetails

        parts = [AuthorizationDetails.from_file(path).frames(selector) for path in self.auth_files]
        identities = pl.concat([p.identities for p in parts])
        duplicated = identities.filter(pl.col("identity").is_duplicated())["identity"].unique().sort().to_list()
        dup_gaps = [
            model.gap("aws", i.split(":")[4], i, "identity in several exports; the first one is kept", "warning")
            for i in duplicated
        ]
        return GrantSet(
            identities=identities.unique("identity", keep="first", maintain_order=True),
            grants=pl.concat([p.grants for p in parts]).unique(
                ["identity", "statement_id"], keep="first", maintain_order=True
            ),
            trusts=pl.concat([p.trusts for p in parts]).unique(
                ["identity", "statement_id"], keep="first", maintain_order=True
            ),
            managed=pl.concat([p.managed for p in parts]).unique("id", keep="first", maintain_order=True),
            gaps=pl.concat([*(p.gaps for p in parts), model.frame(dup_gaps, model.GAPS)]),
        )

    def catalog(self, grants: GrantSet, rules: Rules) -> Catalog:
        return aws_catalog()

    def collected_at(self) -> datetime | None:
        return self.extras.collected_at()

    def window_end(self, cap: datetime, rules: Rules, workers: int | None) -> WindowEnd:
        collected = self.extras.window_end()
        if collected is not None:  # a snapshot audits the window it was collected for
            return WindowEnd(min(collected, cap), f"the collected window of {self.extras.manifest}", fixed=True)
        files = self.log_files()
        if not files:
            return WindowEnd(None, "no CloudTrail log file")
        options = trail.TrailOptions("", "~", iso_utc(cap), frozenset(), rules)
        newest = trail.newest_event_time(files, options, workers)
        return WindowEnd(parse_iso(newest) if newest else None, f"the newest CloudTrail event in {self._origin()}")

    def read_ahead(self, early: EarlyRequest) -> TrailInFlight:
        """Begin the CloudTrail scan for every identity: the core reads the grants meanwhile."""
        options = _trail_options(early, None)
        return TrailInFlight(self, options, trail.start_scan(self.log_files(), options, early.workers))

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        options = _trail_options(request, request.agents)
        return self._evidence(request, trail.scan(self.log_files(), options, request.workers, _files(progress)))

    def _evidence(self, request: UsageRequest, partial: trail.Partial) -> Evidence:
        from auditor import model

        duplicates = partial.drop_duplicates(partial.usage)
        start, end = iso_utc(request.window.start), iso_utc(request.window.end)
        added = self.extras.read(request.agents, start, end, request.rules)
        partial.merge(added.partial)
        accounts = sorted({i.split(":")[4] for i in request.agents if i.count(":") >= 5})
        return Evidence(
            usage=_usage_frame(partial),
            unmapped=model.frame(
                [
                    {"provider": "aws", "account": a, "identity": i, "event": e, "calls": n, "reason": r}
                    for (a, i, e, r), n in sorted(partial.unmapped.items())
                ],
                model.UNMAPPED,
            ),
            observability=model.frame(self._observability(accounts, request.rules), model.OBSERVABILITY),
            coverage=model.frame(added.coverage, model.COVERAGE),
            gaps=model.frame(
                [{"provider": "aws", "account": None, **g} for g in (*self._walk_gaps, *partial.gaps)]
                + [{"provider": "aws", **g} for g in added.gaps],
                model.GAPS,
            ),
            logs=(partial.stats("aws", f"CloudTrail {self._origin()}", duplicates),),
        )

    def inputs(self) -> tuple[str, ...]:
        extra = (*filter(None, [self.extras.manifest]), *self.extras.athena_files, *self.extras.advisor_files)
        return tuple(str(p) for p in (*self.auth_files, *self.trail_paths, *extra))

    # -- helpers ------------------------------------------------------------------------------

    def log_files(self) -> list[Path]:
        if self._files is None:
            self._files, self._walk_gaps = trail.find_log_files(self.trail_paths, required=not self.extras.has_usage)
        return self._files

    def _origin(self) -> str:
        return ", ".join(str(p) for p in self.trail_paths)

    def _observability(self, accounts: Sequence[str], rules: Rules) -> list[dict[str, Any]]:
        default, own = _trail_coverages(self, rules)
        observability = ObservabilityRules.of(rules)
        return [
            row
            for account in accounts
            for row in observability_rows(account, own.get(account, default), observability, aws_catalog())
        ]


@dataclass
class TrailInFlight:
    """A CloudTrail scan begun for every identity (:meth:`AwsFiles.read_ahead`)."""

    source: AwsFiles
    options: trail.TrailOptions  # identities None: every one
    flight: FoldInFlight[trail.Partial]

    def evidence(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        """The answer to ``request``: the batches not begun count only its agents, the others are
        cut down to them. A scan begun for another window, cap or rules is dropped and read again."""
        source = self.source
        if _trail_options(request, None) != self.options:
            self.cancel()
            return source.usage(request, progress)
        partial = self.flight.finish(trail.Partial(), _files(progress), trail.rest_reader(request.agents))
        partial.keep_only(request.agents)
        return source._evidence(request, partial)

    def cancel(self) -> None:
        self.flight.cancel()


def _trail_options(request: EarlyRequest | UsageRequest, agents: frozenset[str] | None) -> trail.TrailOptions:
    start, end = iso_utc(request.window.start), iso_utc(request.window.end)
    return trail.TrailOptions(
        start, end, iso_utc(request.cap), agents, request.rules, request.max_file_bytes or DEFAULT_CAP
    )


def _files(progress: Progress) -> Callable[[int, int], None]:
    return lambda done, total: progress("CloudTrail files", done, total)


def _merged(files: Sequence[TrailCoverage]) -> TrailCoverage | None:
    if not files:
        return None
    merged = files[0]
    for other in files[1:]:
        merged.management_read |= other.management_read
        merged.management_write |= other.management_write
        for resource_type, scope in other.data.items():
            merged._merge(resource_type, scope)
    return merged


def _trail_coverages(source: AwsFiles, rules: Rules) -> tuple[TrailCoverage | None, dict[str, TrailCoverage]]:
    """The coverage of every account, and of the accounts with their own ``event-selectors-<account>``."""
    general = [p for p in source.selector_files if not snap.ACCOUNT_SELECTORS.match(p.name)]
    own: dict[str, list[Path]] = {}
    for path in source.selector_files:
        if match := snap.ACCOUNT_SELECTORS.match(path.name):
            own.setdefault(match.group(1), []).append(path)
    default = _merged([TrailCoverage.from_selectors_file(p) for p in general]) or (
        TrailCoverage.declared(source.data_events, ObservabilityRules.of(rules)) if source.data_events else None
    )
    by_account = {
        account: _merged([TrailCoverage.from_selectors_file(p) for p in (*general, *paths)])
        for account, paths in own.items()
    }
    return default, {a: c for a, c in by_account.items() if c is not None}


def _usage_frame(partial: trail.Partial) -> pl.DataFrame:
    import polars as pl

    from auditor import model

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
        for (account, identity, action, outcome, evidence), (calls, first, last, resources, complete) in sorted(
            partial.usage.items()
        )
    ]
    frame = model.frame(rows, {**model.USAGE, "first_seen": pl.Utf8, "last_seen": pl.Utf8})
    return frame.with_columns(
        pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC", strict=False)
        for c in ("first_seen", "last_seen")
    )
