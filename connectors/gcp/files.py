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

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from auditor import model
from auditor.catalog import Catalog
from auditor.connectors.aws.coverage import missing_days, summarize_days
from auditor.connectors.base import AuditRequest, Progress, no_progress
from auditor.connectors.gcp import audit_logs as gcp_logs
from auditor.connectors.gcp.bigquery import FORMAT as AGGREGATE_FORMAT
from auditor.connectors.gcp.bigquery import fold_rows
from auditor.connectors.gcp.coverage import AuditLogConfig, observability_rows
from auditor.connectors.gcp.iam import (
    Policy,
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
from auditor.connectors.snapshot_io import require_complete
from auditor.errors import InputError
from auditor.jsonio import load_json
from auditor.timefmt import iso_utc, parse_iso

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
    name: str = field(default="gcp-files")

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

    def collect(self, request: AuditRequest, progress: Progress = no_progress) -> model.AuditInput:
        return collect_files(self, request, progress)


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


def _window(request: AuditRequest, newest: str, docs: Sequence[dict[str, Any]]) -> tuple[str, str, list[str]]:
    notes = []
    if docs:  # aggregated in BigQuery over a fixed window: it cannot be re-windowed here
        window = docs[0].get("window") or {}
        start, end = str(window.get("start", "")), str(window.get("end", ""))
        span = (parse_iso(end) - parse_iso(start)).days if start and end else None
        if request.until is not None or (span is not None and span != request.days):
            notes.append(f"BigQuery usage was aggregated over {start} .. {end}; --days/--until do not re-window it")
        return start, end, notes
    if request.until is not None:
        end_time = request.until.astimezone(UTC)
    elif newest:
        end_time = parse_iso(newest)
    else:
        end_time = datetime.now(UTC)
    return iso_utc(end_time - timedelta(days=request.days)), iso_utc(end_time), notes


def _scan(
    source: GcpFiles, request: AuditRequest, agents: frozenset[str], docs: Sequence[dict[str, Any]], progress: Progress
) -> tuple[gcp_logs.Partial, str, str, list[str]]:
    files = gcp_logs.find_log_files(source.log_paths) if source.log_paths else []
    newest = "" if request.until or docs else gcp_logs.newest_entry_time(files)
    start, end, notes = _window(request, newest, docs)
    partial = gcp_logs.scan(
        files,
        gcp_logs.ScanOptions(start, end, agents),
        request.workers,
        lambda d, t: progress("Cloud Audit Log files", d, t),
    )
    if not request.until and not docs and partial.newest > end:
        start, end, notes = _window(request, partial.newest, docs)
        partial = gcp_logs.scan(files, gcp_logs.ScanOptions(start, end, agents), request.workers)
    for doc in docs:
        aggregated = gcp_logs.Partial()
        fold_rows(doc["rows"], agents, aggregated)
        partial.merge(aggregated)
    return partial, start, end, notes


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
            "first_seen": parse_iso(first),
            "last_seen": parse_iso(last),
            "resources": sorted(resources),
            "all_with_resource": False,  # custom roles cannot be narrowed to resources
        }
        for (project, identity, permission, outcome, evidence), (calls, first, last, resources) in partial.usage.items()
    ]
    return model.frame(rows, model.USAGE)


def _with_notes(identities: pl.DataFrame, partial: gcp_logs.Partial) -> pl.DataFrame:
    """Report each identity's impersonation chains (who called as it, through which accounts)."""
    chains: dict[str, list[str]] = {}
    for (_, identity, chain), count in sorted(partial.delegations.items()):
        chains.setdefault(identity, []).append(f"impersonated: {count:,} call(s) via {chain} → {identity}")
    if not chains:
        return identities

    def annotate(row: dict[str, Any]) -> str:
        attributes = json.loads(row["attributes"] or "{}")
        attributes["notes"] = [*attributes.get("notes", []), *chains.get(row["identity"], [])]
        return json.dumps(attributes, sort_keys=True)

    return identities.with_columns(
        pl.Series("attributes", [annotate(r) for r in identities.iter_rows(named=True)], dtype=pl.Utf8)
    )


def collect_files(source: GcpFiles, request: AuditRequest, progress: Progress = no_progress) -> model.AuditInput:
    rules = GcpRules.load(request.rule_dirs)
    roles, role_gaps = load_roles(source.role_paths)
    docs = _aggregates(source.aggregate_files)
    project, policies = _policies(source, (source.manifest or {}).get("project"))
    if project is None:
        files = gcp_logs.find_log_files(source.log_paths) if source.log_paths else []
        project = _project_from_logs(files, [r for d in docs for r in d["rows"]])
        project, policies = _policies(source, project)
    service_accounts = load_service_accounts(source.service_account_files)
    grants = build_grants(project, policies, roles, service_accounts, request.selector, rules)
    agents = frozenset(grants.identities.filter(pl.col("is_agent"))["identity"].to_list())
    partial, start, end, notes = _scan(source, request, agents, docs, progress)
    usage = _usage_frame(partial)
    if source.insight_files:
        usage = pl.concat([usage, model.frame(usage_rows(source.insight_files, project, agents), model.USAGE)])
    permissions = {p for role in roles.values() for p in role.permissions} | set(usage["action"].to_list())
    catalog = Catalog(
        "gcp",
        {p: rules.access_level(p) for p in sorted(permissions)},
        f"{len(roles)} role definition(s) from {', '.join(str(p) for p in source.role_paths)}",
        {name: role.permissions for name, role in roles.items()},
    )
    observability = observability_rows(
        project,
        catalog.access_levels,
        AuditLogConfig.from_configs(audit_log_configs(policies)),
        rules,
        [(when, action, svc, log_type) for p, when, action, svc, log_type in partial.audit_changes if p == project],
        (start, end),
    )
    missing = missing_days(partial.days.get(project, set()), start, end)
    if missing:
        total = len(missing_days(set(), start, end))
        observability.append(
            {
                "provider": "gcp",
                "account": project,
                "identity": None,
                "actions": ["*"],
                "reason": f"Cloud Audit Logs have no entries for {len(missing)} of {total} days of the window "
                f"({summarize_days(missing)})",
            }
        )
    origin = ", ".join(str(p) for p in source.log_paths) or "BigQuery"
    if docs:
        origin = ", ".join(str(d.get("table")) for d in docs) + (f" + {origin}" if source.log_paths else "")
    coverage = {
        "provider": "gcp",
        "account": project,
        "source": f"Cloud Audit Logs {origin}",
        "first_event": parse_iso(partial.first[project]) if project in partial.first else None,
        "last_event": parse_iso(partial.last[project]) if project in partial.last else None,
        "days_with_events": len([d for d in partial.days.get(project, ()) if start[:10] <= d <= end[:10]]),
        "events_read": partial.events_read,
        "events_in_window": partial.events_in_window,
        "files_read": partial.files_read,
        "detail": "; ".join(f"{count:,} skipped: {reason}" for reason, count in sorted(partial.skipped.items())),
    }
    extra_gaps = (
        [{"provider": "gcp", "account": project, "severity": "error", **g} for g in partial.gaps]
        + [
            {"provider": "gcp", "account": project, "scope": "window", "reason": n, "severity": "warning", "count": 1}
            for n in notes
        ]
        + [
            {"provider": "gcp", "account": project, "count": 1, "severity": "warning", **g}
            for g in (source.manifest or {}).get("gaps", [])
        ]
    )
    unmapped = [
        {"provider": "gcp", "account": p, "identity": i, "event": e, "calls": n, "reason": r}
        for (p, i, e, r), n in sorted(partial.unmapped.items())
    ]
    return model.AuditInput(
        identities=_with_notes(grants.identities, partial),
        grants=grants.grants,
        usage=usage,
        unmapped=model.frame(unmapped, model.UNMAPPED),
        observability=model.frame(observability, model.OBSERVABILITY),
        coverage=model.frame([coverage], model.COVERAGE),
        gaps=pl.concat([grants.gaps, model.frame(role_gaps, model.GAPS), model.frame(extra_gaps, model.GAPS)]),
        catalogs={"gcp": catalog},
        window=model.Window(parse_iso(start), parse_iso(end)),
        sources=tuple(
            str(p)
            for p in (
                *source.policy_files,
                *source.role_paths,
                *source.log_paths,
                *source.aggregate_files,
                *source.insight_files,
            )
        ),
    )
