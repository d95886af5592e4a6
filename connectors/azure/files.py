"""The offline Azure connector: role assignments, role definitions, provider operations and the
Activity Log, exported with ``az`` (or written by ``auditor collect azure``).

A snapshot directory::

    role-assignments.json        az role assignment list --all --include-inherited --include-groups -o json
    role-definitions.json        az role definition list -o json          (built-in + custom: the catalog)
    provider-operations.json     az provider operation list -o json       (expands wildcards, tells dataActions)
    service-principals.json      optional: az ad sp list --all -o json    (names, tags, managed identities)
    managed-identities.json      optional: ARM resources carrying managed identities (their ARM tags)
    group-members/<GROUP>.json   optional: az ad group member list --group GROUP -o json
    activity-log/**              az monitor activity-log list -o json, diagnostic-settings exports
                                 ({"records": [...]} or NDJSON) and/or an AzureActivity table export
    storage-logs/**              optional: Storage resource logs (insights-logs-storageread|write|delete
                                 blobs, Event Hub {"records": [...]}) and/or StorageBlobLogs (Queue,
                                 Table, File) table exports: the data-plane evidence
    log-analytics-usage.json     the AzureActivity aggregation of auditor collect azure --workspace
    manifest.json                written by auditor collect azure
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from auditor import model
from auditor.catalog import Catalog
from auditor.connectors.azure import activity_logs, data_plane, log_analytics, storage_logs
from auditor.connectors.azure.grants import Operations, build_grants
from auditor.connectors.azure.normalized import DATA_ACTIONS
from auditor.connectors.azure.rbac import (
    ASSIGNMENTS_HINT,
    DEFINITIONS_HINT,
    OPERATIONS_HINT,
    Assignment,
    RoleDefinition,
    ServicePrincipal,
    load_assignments,
    load_definitions,
    load_group_members,
    load_operations,
    load_resource_tags,
    load_service_principals,
)
from auditor.connectors.azure.rules import AzureRules
from auditor.connectors.base import (
    Evidence,
    GrantSet,
    Progress,
    UsageRequest,
    WindowEnd,
    aggregate_window_gaps,
    no_progress,
    require_complete,
)
from auditor.coverage import summarize_days
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP, load_json
from auditor.ruleset import Rules
from auditor.selection import AgentSelector
from auditor.timefmt import iso_utc, normalize_iso, parse_iso

LOGS_HINT = "export it with `az monitor activity-log list --offset 30d -o json > activity-log/activity.json`"
AGGREGATE_WHAT = "log-analytics-usage.json written by `auditor collect azure --workspace`"


@dataclass(frozen=True)
class _Read:
    subscription: str
    operations: dict[str, bool]
    definitions: dict[str, RoleDefinition]
    principals: dict[str, ServicePrincipal]
    aggregates: tuple[dict[str, Any], ...] = ()
    grants: pl.DataFrame | None = None


@dataclass
class AzureFiles:
    """Where the offline Azure inputs are."""

    assignment_files: tuple[Path, ...]
    definition_files: tuple[Path, ...]
    operation_files: tuple[Path, ...]
    log_paths: tuple[Path, ...]
    principal_files: tuple[Path, ...] = ()
    group_files: tuple[Path, ...] = ()
    manifest: dict[str, Any] | None = None
    subscription: str | None = None
    aggregate_files: tuple[Path, ...] = ()
    tag_files: tuple[Path, ...] = ()
    storage_log_paths: tuple[Path, ...] = ()
    provider: str = "azure"
    name: str = "azure-files"
    _state: _Read | None = field(default=None, repr=False)
    _files: list[Path] | None = field(default=None, repr=False)
    _walk_gaps: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _storage_walk_gaps: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @classmethod
    def from_dir(cls, root: Path) -> AzureFiles:
        if not root.is_dir():
            raise InputError(
                f"{root}: not a directory", "pass the folder holding role-assignments.json and activity-log/"
            )
        manifest_path = root / "manifest.json"
        manifest = load_json(manifest_path, "an auditor snapshot manifest") if manifest_path.is_file() else None
        if isinstance(manifest, dict):
            require_complete(manifest, manifest_path, "auditor collect azure")
        required = (
            ("role-assignments*.json", ASSIGNMENTS_HINT),
            ("role-definitions*.json", DEFINITIONS_HINT),
            ("provider-operations*.json", OPERATIONS_HINT),
        )
        found = []
        for pattern, hint in required:
            files = tuple(sorted(root.glob(pattern)))
            if not files:
                raise InputError(f"{root}: no {pattern.replace('*', '')}", hint)
            found.append(files)
        logs = tuple(p for p in (root / "activity-log",) if p.is_dir())
        aggregates = tuple(sorted(root.glob("log-analytics-usage*.json")))
        if not logs and not aggregates:
            raise InputError(f"{root}: no activity-log/ folder (nor log-analytics-usage.json)", LOGS_HINT)
        return cls(
            *found,
            logs,
            tuple(sorted(root.glob("service-principals*.json"))),
            tuple(sorted((root / "group-members").glob("*.json"))),
            manifest if isinstance(manifest, dict) else None,
            aggregate_files=aggregates,
            tag_files=tuple(sorted(root.glob("managed-identities*.json"))),
            storage_log_paths=tuple(p for p in (root / "storage-logs",) if p.is_dir()),
        )

    # -- the questions ------------------------------------------------------------------------

    def grants(self, selector: AgentSelector, rules: Rules) -> GrantSet:
        azure_rules = AzureRules.of(rules)
        operations = load_operations(self.operation_files)
        definitions, definition_gaps = load_definitions(self.definition_files)
        assignments, assignment_gaps = load_assignments(self.assignment_files)
        subscription = self._subscription(assignments)
        principals = load_service_principals(self.principal_files)
        found = build_grants(
            subscription,
            assignments,
            definitions,
            _split(operations, azure_rules),
            principals,
            load_group_members(self.group_files),
            selector,
            azure_rules,
            load_resource_tags(self.tag_files),
        )
        self._state = _Read(
            subscription, operations, definitions, principals, _aggregates(self.aggregate_files), found.grants
        )
        manifest_gaps = [
            model.gap("azure", subscription, str(g.get("scope", "")), str(g.get("reason", "")), "warning")
            for g in (self.manifest or {}).get("gaps", [])
            if isinstance(g, dict)
        ]
        read_gaps = [{**g, "account": subscription} for g in (*definition_gaps, *assignment_gaps)]
        return GrantSet(
            identities=found.identities,
            grants=found.grants,
            managed=found.managed,
            gaps=pl.concat([found.gaps, model.frame(read_gaps + manifest_gaps, model.GAPS)]),
        )

    def catalog(self, grants: GrantSet, rules: Rules) -> Catalog:
        state = self._read()
        azure_rules = AzureRules.of(rules)
        return Catalog(
            "azure",
            {name: azure_rules.access_level(name) for name in state.operations},
            f"{len(state.operations):,} provider operation(s) from {', '.join(map(str, self.operation_files))}",
            {DATA_ACTIONS: tuple(sorted(n for n, is_data in state.operations.items() if is_data))},
            service_separator="/",
            level_of=azure_rules.access_level,
        )

    def collected_at(self) -> datetime | None:
        when = (self.manifest or {}).get("collected_at")
        text = normalize_iso(str(when)) if when else None
        return parse_iso(text) if text else None

    def window_end(self, cap: datetime, rules: Rules, workers: int | None) -> WindowEnd:
        docs = self._read().aggregates
        if docs:  # aggregated in Log Analytics over a fixed window: it cannot be re-windowed here
            end = normalize_iso(str((docs[0].get("window") or {}).get("end", "")))
            if end:
                where = f"the Log Analytics aggregation window of workspace {docs[0].get('workspace')}"
                return WindowEnd(min(parse_iso(end), cap), where, fixed=True)
        collected = normalize_iso(str(((self.manifest or {}).get("window") or {}).get("end", "")))
        if collected:
            return WindowEnd(min(parse_iso(collected), cap), "the collected window of the snapshot", fixed=True)
        newest = activity_logs.newest_record_time(self.log_files(), iso_utc(cap), workers)
        origin = ", ".join(map(str, self.log_paths))
        return WindowEnd(parse_iso(newest) if newest else None, f"the newest Activity Log record in {origin}")

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        state = self._read()
        azure_rules = AzureRules.of(request.rules)
        options = activity_logs.ScanOptions(
            iso_utc(request.window.start),
            iso_utc(request.window.end),
            request.agents,
            {p.app_id: p.object_id for p in state.principals.values() if p.app_id and p.object_id in request.agents},
            {name.lower(): name for name in request.catalog.access_levels},
            azure_rules,
            iso_utc(request.cap),
            request.max_file_bytes or DEFAULT_CAP,
        )
        partial = activity_logs.scan(
            self.log_files(), options, request.workers, lambda d, t: progress("Activity Log files", d, t)
        )
        duplicates = partial.drop_duplicates(partial.usage)
        for doc in state.aggregates:
            aggregated = activity_logs.Partial()
            log_analytics.fold_rows(doc["rows"], options, aggregated)
            partial.merge(aggregated)
        origin = self._origin(state)
        storage = self._storage(options, request, progress)
        if storage is not None:
            duplicates_storage = storage.drop_duplicates(storage.usage)
            partial.unmapped.update(storage.unmapped)
        unmapped = [
            {"provider": "azure", "account": s, "identity": i, "event": e, "calls": n, "reason": r}
            for (s, i, e, r), n in sorted(partial.unmapped.items())
        ]
        coverage = None
        storage_gaps: list[dict[str, Any]] = []
        storage_rows: list[dict[str, Any]] = []
        if storage is not None:
            window = (iso_utc(request.window.start), iso_utc(request.window.end))
            coverage = data_plane.Coverage(storage.covered(*window), _services(storage))
            storage_gaps = [*self._storage_walk_gaps, *storage.gaps, *_beyond_cap(storage)]
            storage_rows = _storage_coverage(storage, state.subscription, self._storage_origin(), window)
            for row in storage_rows if duplicates_storage else ():
                row["detail"] += f"; {duplicates_storage:,} request(s) read twice counted once (all accounts)"
        observability = data_plane.observability_rows(
            state.subscription,
            state.operations,
            azure_rules.data_action_reason,
            azure_rules.unobservable,
            state.grants if state.grants is not None else model.empty(model.GRANTS),
            request.agents,
            coverage,
            storage_logs.unattributed(storage) if storage is not None else None,
        )
        usage = _usage_frame(partial)
        return Evidence(
            usage=usage if storage is None else pl.concat([usage, _usage_frame(storage)]),
            unmapped=model.frame(unmapped, model.UNMAPPED),
            observability=model.frame(observability, model.OBSERVABILITY),
            coverage=model.frame(storage_rows, model.COVERAGE),
            gaps=model.frame(
                [
                    {"provider": "azure", "account": state.subscription, "severity": "error", **g}
                    for g in (*self._walk_gaps, *partial.gaps, *storage_gaps)
                ],
                model.GAPS,
            ).vstack(
                model.frame(aggregate_window_gaps("azure", "Log Analytics", state.aggregates, request), model.GAPS)
            ),
            logs=(partial.stats("azure", f"Activity Log {origin}", duplicates),),
        )

    def inputs(self) -> tuple[str, ...]:
        files = (*self.assignment_files, *self.definition_files, *self.operation_files, *self.log_paths)
        return tuple(str(p) for p in (*files, *self.storage_log_paths, *self.aggregate_files, *self.principal_files))

    # -- helpers ------------------------------------------------------------------------------

    def _read(self) -> _Read:
        assert self._state is not None, "grants() first"
        return self._state

    def log_files(self) -> list[Path]:
        if self._files is None:
            found = activity_logs.find_log_files(self.log_paths) if self.log_paths else ([], [])
            self._files, self._walk_gaps = found
        return self._files

    def _storage(
        self, options: activity_logs.ScanOptions, request: UsageRequest, progress: Progress
    ) -> storage_logs.StoragePartial | None:
        """The storage resource logs folded (None: none given)."""
        if not self.storage_log_paths:
            return None
        files, self._storage_walk_gaps = activity_logs.find_log_files(self.storage_log_paths)
        return storage_logs.scan(files, options, request.workers, lambda d, t: progress("storage log files", d, t))

    def _storage_origin(self) -> str:
        return "storage logs " + ", ".join(map(str, self.storage_log_paths))

    def _origin(self, state: _Read) -> str:
        origin = ", ".join(map(str, self.log_paths))
        workspaces = ", ".join(f"Log Analytics workspace {d.get('workspace')}" for d in state.aggregates)
        return " + ".join(part for part in (workspaces, origin) if part)

    def _subscription(self, assignments: Sequence[Assignment]) -> str:
        """The audited subscription: the manifest's or the option's, else the one the assignments name."""
        named = self.subscription or (self.manifest or {}).get("subscription")
        if isinstance(named, str) and named:
            return named.lower()
        counts = Counter(
            a.scope.split("/")[2].lower() for a in assignments if a.scope.lower().startswith("/subscriptions/")
        )
        if len(counts) != 1:
            listed = f" (they name {', '.join(sorted(counts))})" if counts else ""
            raise InputError(
                f"cannot tell which subscription the role assignments belong to{listed}",
                "pass --azure-subscription SUBSCRIPTION_ID",
            )
        return next(iter(counts))


def _aggregates(files: Sequence[Path]) -> tuple[dict[str, Any], ...]:
    docs = []
    for path in files:
        doc = load_json(path, AGGREGATE_WHAT)
        if (
            not isinstance(doc, dict)
            or doc.get("format") != log_analytics.FORMAT
            or not isinstance(doc.get("rows"), list)
        ):
            raise InputError(f"{path}: not an auditor Log Analytics usage file (format {log_analytics.FORMAT})")
        docs.append(doc)
    return tuple(docs)


def _split(operations: dict[str, bool], rules: AzureRules) -> Operations:
    def catalog(names: list[str], what: str) -> Catalog:
        return Catalog("azure", {n: rules.access_level(n) for n in names}, what, service_separator="/")

    return Operations(
        catalog([n for n, data in operations.items() if not data], "control plane"),
        catalog([n for n, data in operations.items() if data], "data plane"),
    )


def _services(storage: storage_logs.StoragePartial) -> frozenset[str]:
    return frozenset(scope.rsplit("/", 1)[-1].removesuffix("services") for scope in storage.accounts)


def _beyond_cap(storage: storage_logs.StoragePartial) -> list[dict[str, Any]]:
    if not storage.beyond_cap:
        return []
    reason = (
        f"{storage.beyond_cap:,} storage log record(s) dated after the collection time (or now) were not counted: "
        "check the clock of whatever wrote them"
    )
    return [{"scope": storage.beyond_example, "reason": reason, "count": storage.beyond_cap}]


def _storage_coverage(
    storage: storage_logs.StoragePartial, subscription: str, origin: str, window: tuple[str, str]
) -> list[dict[str, Any]]:
    """COVERAGE rows, one per storage account service: covered, or which categories lack which days."""
    rows = []
    for scope, account in sorted(storage.accounts.items()):
        if storage_logs.subscription_of(scope) != subscription:
            continue
        missing = storage.missing(scope, *window)
        skipped = {r: n for (s, r), n in storage.skipped.items() if s == scope}
        detail = "covered: StorageRead, StorageWrite and StorageDelete records on every day of the window"
        if missing:
            detail = "not covered: " + "; ".join(
                f"no {category} record on {len(days)} day(s) ({summarize_days(days)})"
                for category, days in missing.items()
            )
        detail += "".join(f"; {n:,} skipped: {r}" for r, n in sorted(skipped.items()))
        days = storage.days.get(scope, {})
        rows.append(
            {
                "provider": "azure",
                "account": subscription,
                "source": f"{origin}: {account.rsplit('/', 1)[-1]} ({scope.rsplit('/', 1)[-1]})",
                "first_event": parse_iso(storage.first[scope]),
                "last_event": parse_iso(storage.last[scope]),
                "days_with_events": len([d for d in days if window[0][:10] <= d <= window[1][:10]]),
                "events_read": sum(days.values()),
                "events_in_window": storage.in_window.get(scope, 0),
                "files_read": storage.files_by_scope.get(scope, 0),
                "detail": detail,
            }
        )
    return rows


_TEXT_TIMES = {**model.USAGE, "first_seen": pl.Utf8, "last_seen": pl.Utf8}


def _usage_frame(partial: activity_logs.Partial) -> pl.DataFrame:
    rows = [
        {
            "provider": "azure",
            "account": subscription,
            "identity": identity,
            "action": operation,
            "outcome": outcome,
            "evidence": evidence,
            "calls": calls,
            "first_seen": first,
            "last_seen": last,
            "resources": sorted(scopes),
            "all_with_resource": False,  # narrowing is the emitter's (AssignableScopes), not a policy Resource
        }
        for (subscription, identity, operation, outcome, evidence), (calls, first, last, scopes) in sorted(
            partial.usage.items()
        )
        if calls > 0
    ]
    frame = model.frame(rows, _TEXT_TIMES)
    return frame.with_columns(
        pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC", strict=False)
        for c in ("first_seen", "last_seen")
    )
