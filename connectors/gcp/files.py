"""The offline GCP connector: IAM policies, role definitions and Cloud Audit Logs exported with gcloud.

A snapshot directory (what ``auditor collect gcp`` writes, or what a user assembles by hand)::

    policies/projects/<PROJECT>.json     gcloud projects get-iam-policy PROJECT --format=json
    policies/folders/<ID>.json           optional: ancestors' policies (inherited bindings, auditConfigs)
    policies/organizations/<ID>.json
    iam-policy.json                      alternative to policies/projects/ (project from the manifest or logs)
    asset-iam-policies.json              optional: gcloud asset search-all-iam-policies (resource-level bindings)
    roles/*.json                         gcloud iam roles describe ROLE --format=json (one per role, or arrays)
    service-accounts.json                optional: gcloud iam service-accounts list --format=json (agent labels)
    insights.json                        optional: IAM Recommender google.iam.policy.Insight
    logs/**, cloudaudit.googleapis.com/**  gcloud logging read ... --format=json output and/or sink NDJSON
    bigquery-usage.json                  aggregated rows of the BigQuery pushdown (auditor collect gcp)
    manifest.json                        written by auditor collect gcp
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from auditor import model
from auditor.catalog import Catalog
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
from auditor.connectors.gcp import audit_logs as gcp_logs
from auditor.connectors.gcp import methods
from auditor.connectors.gcp.bigquery import FORMAT as AGGREGATE_FORMAT
from auditor.connectors.gcp.bigquery import fold_rows
from auditor.connectors.gcp.coverage import AuditLogConfig, observability_rows
from auditor.connectors.gcp.iam import (
    Policy,
    RoleDefinition,
    audit_log_configs,
    build_grants,
    load_roles,
    load_service_accounts,
    parse_asset_policies,
    parse_policy,
    policy_resource_from_path,
)
from auditor.connectors.gcp.insights import usage_rows
from auditor.connectors.gcp.rules import GcpRules
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP, load_json
from auditor.ruleset import Rules
from auditor.selection import AgentSelector
from auditor.timefmt import iso_utc, normalize_iso, parse_iso

ROLES_HINT = (
    "export the roles the policy references: for r in $(gcloud projects get-iam-policy P --format=json "
    "| jq -r '.bindings[].role' | sort -u); do gcloud iam roles describe $r --format=json "
    "> roles/${r//\\//_}.json; done"
)
POLICY_HINT = "export it with `gcloud projects get-iam-policy PROJECT --format=json > policies/projects/PROJECT.json`"
LOGS_HINT = (
    "export them with `gcloud logging read 'logName:\"cloudaudit.googleapis.com\"' --freshness=30d --format=json "
    "> logs/audit.json`, or sync the log sink bucket into logs/"
)


@dataclass(frozen=True)
class _Read:
    """What :meth:`GcpFiles.grants` read, for the later questions."""

    project: str
    policies: list[Policy]
    roles: dict[str, RoleDefinition]
    aggregates: list[dict[str, Any]]


@dataclass
class GcpFiles:
    """Where the offline GCP inputs are."""

    policy_files: tuple[Path, ...]
    role_paths: tuple[Path, ...]
    log_paths: tuple[Path, ...]
    asset_files: tuple[Path, ...] = ()
    service_account_files: tuple[Path, ...] = ()
    insight_files: tuple[Path, ...] = ()
    aggregate_files: tuple[Path, ...] = ()
    manifest: dict[str, Any] | None = None
    provider: str = "gcp"
    name: str = "gcp-files"
    _state: _Read | None = field(default=None, repr=False)
    _files: list[Path] | None = field(default=None, repr=False)
    _walk_gaps: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @classmethod
    def from_dir(cls, root: Path) -> GcpFiles:
        """Discover the inputs of a snapshot directory."""
        if not root.is_dir():
            raise InputError(f"{root}: not a directory", "pass the folder holding policies/, roles/ and logs/")
        policies = sorted(root.glob("policies/*/*.json")) + sorted(root.glob("iam-policy*.json"))
        if not policies:
            raise InputError(
                f"{root}: no IAM policy (policies/projects/<PROJECT>.json or iam-policy.json)", POLICY_HINT
            )
        if not (root / "roles").is_dir():
            raise InputError(f"{root}: no roles/ folder with role definitions", ROLES_HINT)
        logs = tuple(p for p in (root / "logs", root / "cloudaudit.googleapis.com") if p.is_dir())
        aggregates = tuple(sorted(root.glob("bigquery-usage*.json")))
        if not logs and not aggregates:
            raise InputError(
                f"{root}: no audit logs (logs/, cloudaudit.googleapis.com/ or bigquery-usage.json)", LOGS_HINT
            )
        manifest_path = root / "manifest.json"
        manifest = load_json(manifest_path, "an auditor snapshot manifest") if manifest_path.is_file() else None
        if isinstance(manifest, dict):
            require_complete(manifest, manifest_path, "auditor collect gcp")
        return cls(
            tuple(policies),
            (root / "roles",),
            logs,
            tuple(sorted(root.glob("asset-iam-policies*.json"))),
            tuple(sorted(root.glob("service-accounts*.json"))),
            tuple(sorted(root.glob("insights*.json"))),
            aggregates,
            manifest,
        )

    # -- the questions ------------------------------------------------------------------------

    def grants(self, selector: AgentSelector, rules: Rules) -> GrantSet:
        gcp_rules = GcpRules.of(rules)
        roles, role_gaps = load_roles(self.role_paths)
        docs = _aggregates(self.aggregate_files)
        project, policies = _policies(self, (self.manifest or {}).get("project"))
        if project is None:
            project = _project_from_logs(self.log_files(), [r for d in docs for r in d["rows"]])
            project, policies = _policies(self, project)
        assert project is not None
        self._state = _Read(project, policies, roles, docs)
        found = build_grants(
            project, policies, roles, load_service_accounts(self.service_account_files), selector, gcp_rules
        )
        manifest_gaps = [
            model.gap("gcp", project, str(g.get("scope", "")), str(g.get("reason", "")), "warning")
            for g in (self.manifest or {}).get("gaps", [])
        ]
        return GrantSet(
            identities=found.identities,
            grants=found.grants,
            managed=found.managed,
            gaps=pl.concat([found.gaps, model.frame(role_gaps, model.GAPS), model.frame(manifest_gaps, model.GAPS)]),
        )

    def catalog(self, grants: GrantSet, rules: Rules) -> Catalog:
        state = self._read()
        gcp_rules = GcpRules.of(rules)
        permissions = sorted({p for role in state.roles.values() for p in role.permissions})
        return Catalog(
            "gcp",
            {p: gcp_rules.access_level(p) for p in permissions},
            f"{len(state.roles)} role definition(s) from {', '.join(str(p) for p in self.role_paths)}",
            {name: role.permissions for name, role in state.roles.items()},
            service_separator=".",
            level_of=gcp_rules.access_level,
            restricted={
                p: "cannot be in a project-level custom role" for p in permissions if not gcp_rules.fits_project_role(p)
            },
        )

    def collected_at(self) -> datetime | None:
        when = (self.manifest or {}).get("collected_at")
        text = normalize_iso(str(when)) if when else None
        return parse_iso(text) if text else None

    def window_end(self, cap: datetime, rules: Rules, workers: int | None) -> WindowEnd:
        docs = self._read().aggregates
        if docs:  # aggregated in BigQuery over a fixed window: it cannot be re-windowed here
            end = normalize_iso(str((docs[0].get("window") or {}).get("end", "")))
            if end:
                return WindowEnd(
                    min(parse_iso(end), cap), f"the BigQuery aggregation window of {docs[0].get('table')}", fixed=True
                )
        collected = normalize_iso(str(((self.manifest or {}).get("window") or {}).get("end", "")))
        if collected:
            return WindowEnd(min(parse_iso(collected), cap), "the collected window of the snapshot", fixed=True)
        newest = gcp_logs.newest_entry_time(self.log_files(), iso_utc(cap), workers)
        origin = ", ".join(str(p) for p in self.log_paths)
        return WindowEnd(parse_iso(newest) if newest else None, f"the newest Cloud Audit Log entry in {origin}")

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        state = self._read()
        start, end = iso_utc(request.window.start), iso_utc(request.window.end)
        options = gcp_logs.ScanOptions(
            start, end, request.agents, iso_utc(request.cap), request.max_file_bytes or DEFAULT_CAP
        )
        partial = gcp_logs.scan(
            self.log_files(), options, request.workers, lambda d, t: progress("Cloud Audit Log files", d, t)
        )
        duplicates = partial.drop_duplicates(partial.usage)
        for doc in state.aggregates:
            aggregated = gcp_logs.Partial()
            fold_rows(doc["rows"], request.agents, aggregated)
            partial.merge(aggregated)
        gcp_rules = GcpRules.of(request.rules)
        catalog_permissions = set(request.catalog.access_levels)
        resolved = methods.resolve(
            gcp_logs.unchecked_calls(partial), partial.method_checks, catalog_permissions, gcp_rules
        )
        usage = pl.concat(
            [
                _usage_frame(partial),
                _times(model.frame(resolved.usage, _TEXT_TIMES)),
                model.frame(usage_rows(self.insight_files, state.project, request.agents), model.USAGE),
            ]
        )
        project = state.project
        observability = observability_rows(
            project,
            sorted(catalog_permissions | set(usage["action"].to_list())),
            AuditLogConfig.from_configs(audit_log_configs(state.policies)),
            gcp_rules,
            [(when, action, svc, log_type) for p, when, action, svc, log_type in partial.audit_changes if p == project],
            (start, end),
            frozenset(partial.seen_permissions),
        )
        unmapped = [
            {"provider": "gcp", "account": p, "identity": i, "event": e, "calls": n, "reason": r}
            for (p, i, e, r), n in sorted(partial.unmapped.items())
        ]
        return Evidence(
            usage=usage,
            unmapped=model.frame([*unmapped, *resolved.unmapped], model.UNMAPPED),
            observability=model.frame([*observability, *resolved.observability], model.OBSERVABILITY),
            gaps=model.frame(
                [
                    {"provider": "gcp", "account": project, "severity": "error", **g}
                    for g in (*self._walk_gaps, *partial.gaps)
                ]
                + aggregate_window_gaps("gcp", "BigQuery", state.aggregates, request),
                model.GAPS,
            ),
            logs=(partial.stats("gcp", f"Cloud Audit Logs {self._origin(state)}", duplicates),),
            notes=_delegation_notes(partial),
        )

    def inputs(self) -> tuple[str, ...]:
        files = (*self.policy_files, *self.role_paths, *self.log_paths, *self.aggregate_files, *self.insight_files)
        return tuple(str(p) for p in files)

    # -- helpers ------------------------------------------------------------------------------

    def _read(self) -> _Read:
        assert self._state is not None, "grants() first"
        return self._state

    def log_files(self) -> list[Path]:
        if self._files is None:
            self._files, self._walk_gaps = gcp_logs.find_log_files(self.log_paths) if self.log_paths else ([], [])
        return self._files

    def _origin(self, state: _Read) -> str:
        origin = ", ".join(str(p) for p in self.log_paths) or "BigQuery"
        if state.aggregates:
            origin = ", ".join(str(d.get("table")) for d in state.aggregates) + (
                f" + {origin}" if self.log_paths else ""
            )
        return origin


_TEXT_TIMES = {**model.USAGE, "first_seen": pl.Utf8, "last_seen": pl.Utf8}


def _times(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.col(c).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", time_zone="UTC", strict=False)
        for c in ("first_seen", "last_seen")
    )


def _aggregates(files: Sequence[Path]) -> list[dict[str, Any]]:
    docs = []
    for path in files:
        doc = load_json(path, "bigquery-usage.json written by `auditor collect gcp --bigquery-table`")
        if not isinstance(doc, dict) or doc.get("format") != AGGREGATE_FORMAT or not isinstance(doc.get("rows"), list):
            raise InputError(f"{path}: not an auditor BigQuery usage file (format {AGGREGATE_FORMAT})")
        docs.append(doc)
    return docs


def _policies(source: GcpFiles, project: str | None) -> tuple[str | None, list[Policy]]:
    """(project, policies: the project's first, then folders and organizations, then resource level)."""
    parsed: list[Policy] = []
    unnamed: list[tuple[Path, Any]] = []
    for path in source.policy_files:
        doc = load_json(path, "the output of `gcloud projects get-iam-policy PROJECT --format=json`")
        resource = policy_resource_from_path(path)
        if resource is None:
            unnamed.append((path, doc))
        else:
            parsed.append(parse_policy(doc, resource, str(path)))
    projects = [p.resource.split("/", 1)[1] for p in parsed if p.level == "projects"]
    project = project or (projects[0] if projects else None)
    if unnamed:
        if project is None:
            return None, parsed + [parse_policy(doc, "projects/?", str(path)) for path, doc in unnamed]
        parsed += [parse_policy(doc, f"projects/{project}", str(path)) for path, doc in unnamed]
    for path in source.asset_files:
        parsed += parse_asset_policies(load_json(path, "gcloud asset search-all-iam-policies output"), str(path))
    order = {"projects": 0, "folders": 1, "organizations": 2, "resource": 3}
    return project, sorted(parsed, key=lambda p: order[p.level])


def _project_from_logs(files: Sequence[Path], docs: Sequence[dict[str, Any]]) -> str:
    projects = {str(d.get("project")) for d in docs if d.get("project")}
    if not projects and files:
        probe = gcp_logs.read_file(files[0], gcp_logs.ScanOptions("", "~", frozenset()))
        projects = set(probe.days) - {"?"}
    if len(projects) != 1:
        raise InputError(
            "cannot tell which project the IAM policy belongs to"
            + (f" (logs name {', '.join(sorted(projects))})" if projects else ""),
            "name the policy file policies/projects/<PROJECT>.json",
        )
    return projects.pop()


def _usage_frame(partial: gcp_logs.Partial) -> pl.DataFrame:
    rows = [
        {
            "provider": "gcp",
            "account": project,
            "identity": identity,
            "action": permission,
            "outcome": outcome,
            "evidence": evidence,
            "calls": calls,
            "first_seen": first,
            "last_seen": last,
            "resources": sorted(resources),
            "all_with_resource": False,  # custom roles cannot be narrowed to resources
        }
        for (project, identity, permission, outcome, evidence), (calls, first, last, resources) in sorted(
            partial.usage.items()
        )
    ]
    return _times(model.frame(rows, _TEXT_TIMES))


def _delegation_notes(partial: gcp_logs.Partial) -> dict[str, list[str]]:
    """Each identity's impersonation chains (who called as it, through which accounts)."""
    chains: dict[str, list[str]] = {}
    for (_, identity, chain), count in sorted(partial.delegations.items()):
        chains.setdefault(identity, []).append(f"impersonated: {count:,} call(s) via {chain} → {identity}")
    return chains
