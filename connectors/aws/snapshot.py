"""The snapshot folder: what ``auditor collect aws`` writes and the offline AWS connector reads.

Layout (every name below the folder root)::

    manifest.json                            what was collected, from where, when, for which window,
                                             and what could not be collected and why
    authorization-details-<account>.json     iam:GetAccountAuthorizationDetails, pages merged
    event-selectors-<account>.json           cloudtrail:GetEventSelectors of the trail whose logs were read
    AWSLogs/...                              trail log objects, keys as in the bucket (below any prefix)
    lookup-events-<account>-<region>.ndjson  cloudtrail:LookupEvents items
    athena-usage.json                        Athena aggregate rows (identity, event, error, calls, first/last)
    access-advisor-<account>.json            iam:GetServiceLastAccessedDetails, action level, per identity

The Athena and Access Advisor files are folded here into the same counters the CloudTrail parser
produces (evidence ``athena`` / ``access-advisor``), so they reach the diff engine as ordinary usage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from auditor.catalog import Catalog, aws_catalog
from auditor.connectors.aws import cloudtrail as trail
from auditor.connectors.aws.actions import EventActionMapper
from auditor.connectors.base import require_complete
from auditor.errors import InputError
from auditor.fileio import load_json, write_json
from auditor.ruleset import Rules
from auditor.timefmt import normalize_iso, parse_iso

SCHEMA = "auditor.snapshot/v1"
MANIFEST = "manifest.json"
ATHENA_FILE = "athena-usage.json"
ATHENA_GLOB = "athena-usage*.json"
ADVISOR_GLOB = "access-advisor*.json"
#: Root files a previous collection wrote; removed before a new one so no stale account survives.
METADATA_GLOBS = (
    MANIFEST,
    "authorization-details*.json",
    "event-selectors*.json",
    "lookup-events*.ndjson",
    ATHENA_GLOB,
    ADVISOR_GLOB,
)
#: ``event-selectors-<account>[-anything].json`` applies to that account only.
ACCOUNT_SELECTORS = re.compile(r"^event-selectors-(\d{12})(?:[-_.].*)?\.json$")


def auth_name(account: str) -> str:
    return f"authorization-details-{account}.json"


def selectors_name(account: str, suffix: str = "") -> str:
    return f"event-selectors-{account}{suffix}.json"


def lookup_name(account: str, region: str) -> str:
    return f"lookup-events-{account}-{region}.ndjson"


def advisor_name(account: str) -> str:
    return f"access-advisor-{account}.json"


def prepare(root: Path) -> None:
    """Make ``root`` ready for a collection: new, empty, or a previous snapshot (whose log objects are
    kept for reuse and whose other files are removed)."""
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: not a directory", "pass a new or empty folder to --out")
    if root.is_dir() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise InputError(f"{root}: not empty and not an auditor snapshot", "pass a new or empty folder to --out")
    root.mkdir(parents=True, exist_ok=True)
    for pattern in METADATA_GLOBS:
        for stale in root.glob(pattern):
            stale.unlink()
    write_json(root / MANIFEST, {"schema": SCHEMA, "complete": False})  # replaced by the real one at the end


# ----------------------------------------------------------------------------- reading


def _time(value: Any) -> str | None:
    return normalize_iso(str(value)) if value else None


def _account(identity: str, fallback: str | None) -> str:
    return identity.split(":")[4] if identity.count(":") >= 5 else fallback or "?"


def _add(partial: trail.Partial, key: tuple[str, str, str, str, str], calls: int, first: str, last: str) -> None:
    entry = partial.usage.get(key)
    if entry is None:
        partial.usage[key] = [calls, first, last, set(), False]
        return
    entry[0] += calls
    entry[1], entry[2] = min(entry[1], first), max(entry[2], last)


def _gap(account: str | None, scope: str, reason: str, severity: str = "warning", count: int = 1) -> dict[str, Any]:
    return {
        "provider": "aws",
        "account": account,
        "scope": scope,
        "reason": reason,
        "severity": severity,
        "count": count,
    }


@dataclass
class Extras:
    """What the Athena, Access Advisor and manifest files add to a CloudTrail scan."""

    partial: trail.Partial = field(default_factory=trail.Partial)
    coverage: list[dict[str, Any]] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)


def fold_athena(
    doc: dict[str, Any], origin: str, mapper: EventActionMapper, start: str, end: str, agents: frozenset[str] | None
) -> Extras:
    """Athena aggregate rows as usage counters (evidence ``athena``), mapped like CloudTrail events.

    Aggregates carry no requestParameters and no resources: events whose permission depends on the
    request are unmapped unless the rules give a default, no ``iam:PassRole`` is implied, and the
    generated policies keep ``Resource: "*"`` for what only Athena proves.
    """
    out = Extras()
    partial = out.partial
    window = doc.get("window") or {}
    if (window.get("start"), window.get("end")) != (start, end):
        out.gaps.append(
            _gap(
                None,
                origin,
                f"Athena aggregates cover {window.get('start')} .. {window.get('end')}, not the audit window "
                f"{start} .. {end}: calls are counted over the collected window",
            )
        )
    for row in doc.get("usage_rows") or []:
        identity, calls = row.get("identity"), int(row.get("calls") or 0)
        first, last = _time(row.get("first_seen")), _time(row.get("last_seen"))
        if not identity or not first or not last:
            reason = "Athena row without identity or time"
            partial.skip(reason, calls, row.get("account") or "")
            continue
        if (agents is not None and identity not in agents) or last < start or first > end:
            continue
        account = _account(identity, row.get("account"))
        source, name = str(row.get("event_source") or ""), str(row.get("event_name") or "")
        mapping = mapper.map(source, name)
        if mapping.status == "unmapped":
            key = (account, identity, f"{source}:{name}", mapping.reason)
            partial.unmapped[key] = partial.unmapped.get(key, 0) + calls
        outcome = "denied" if mapper.is_denied_error(row.get("error_code")) else "used"
        for action in mapping.actions:
            _add(partial, (account, identity, action, outcome, "athena"), calls, first, last)
    for row in doc.get("day_rows") or []:
        account, day, events = str(row.get("account") or "?"), str(row.get("day") or ""), int(row.get("events") or 0)
        first, last = _time(row.get("first_seen")), _time(row.get("last_seen"))
        if not day or not first or not last:
            continue
        partial.saw(account, first, last, {day: events}, in_window=events)
    for query in doc.get("queries") or []:
        out.coverage.append(
            {
                "provider": "aws",
                "account": None,
                "source": f"Athena {doc.get('table')} ({query.get('kind')} query {query.get('id')})",
                "first_event": None,
                "last_event": None,
                "days_with_events": None,
                "events_read": None,
                "events_in_window": None,
                "files_read": None,
                "detail": f"Athena {doc.get('table')}: {query.get('kind')} query {query.get('id')}, "
                f"{query.get('rows', 0):,} aggregate rows, {query.get('scanned_bytes') or 0:,} bytes scanned "
                "(aggregated in Athena; no requestParameters, so no implied iam:PassRole and no resource narrowing)",
            }
        )
    return out


def fold_advisor(
    doc: dict[str, Any], origin: str, catalog: Catalog, start: str, end: str, agents: frozenset[str] | None
) -> Extras:
    """Access Advisor as usage (evidence ``access-advisor``): an action counts as used only when AWS
    reports an action-level access inside the window. Service-level data proves a service, never an
    action, so it only feeds the coverage note. Access Advisor counts attempts, denied ones included:
    an action it alone proves is kept as used (the safe side for a least-privilege policy)."""
    out = Extras()
    account = str(doc.get("account") or "?")
    tracked_services: set[str] = set()
    service_level: set[str] = set()
    not_accessed = observed = identities = failed = 0
    for ident in doc.get("identities") or []:
        arn = ident.get("arn") or ""
        if agents is not None and arn not in agents:
            continue
        identities += 1
        if ident.get("error"):  # the collection put the failure in the manifest's gaps
            failed += 1
            continue
        for service in ident.get("services") or []:
            namespace = str(service.get("ServiceNamespace") or "")
            last = _time(service.get("LastAuthenticated"))
            tracked = service.get("TrackedActionsLastAccessed")
            if tracked is not None:
                tracked_services.add(namespace)
            if last is None or last < start:
                not_accessed += 1
                continue
            if not tracked:
                service_level.add(namespace)
            for item in tracked or []:
                when = _time(item.get("LastAccessedTime"))
                if when is None or not start <= when <= end:
                    continue
                action = catalog.canonical(f"{namespace}:{item.get('ActionName')}")
                if action is None:
                    key = (account, arn, f"access-advisor {namespace}:{item.get('ActionName')}", "not in the catalog")
                    out.partial.unmapped[key] = out.partial.unmapped.get(key, 0) + 1
                    continue
                observed += 1
                _add(out.partial, (_account(arn, account), arn, action, "used", "access-advisor"), 1, when, when)
    if identities:
        out.coverage.append(
            {
                "provider": "aws",
                "account": account,
                "source": f"IAM Access Advisor {origin}",
                "first_event": None,
                "last_event": None,
                "days_with_events": None,
                "events_read": observed,
                "events_in_window": observed,
                "files_read": 1,
                "detail": f"Access Advisor for {identities} identities ({failed} without data): {observed} "
                f"action-level accesses in the "
                f"window (action-level tracking for {', '.join(sorted(tracked_services)) or 'no service'}); "
                f"service-level only, proving no action: {', '.join(sorted(service_level)) or 'none'}; "
                f"{not_accessed} granted service(s) not accessed in the window. Counts attempts, denied ones too.",
            }
        )
    return out


@dataclass(frozen=True)
class SnapshotExtras:
    """The files a live collection adds to a plain export folder."""

    manifest: Path | None = None
    athena_files: tuple[Path, ...] = ()
    advisor_files: tuple[Path, ...] = ()

    @classmethod
    def discover(cls, root: Path) -> SnapshotExtras:
        manifest = root / MANIFEST
        return cls(
            manifest if manifest.is_file() else None,
            tuple(sorted(root.glob(ATHENA_GLOB))),
            tuple(sorted(root.glob(ADVISOR_GLOB))),
        )

    def _manifest(self) -> dict[str, Any]:
        if self.manifest is None:
            return {}
        doc = load_json(self.manifest, "the manifest.json `auditor collect aws` writes")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise InputError(f"{self.manifest}: not an {SCHEMA} manifest", "recollect with `auditor collect aws`")
        if not doc.get("complete"):  # absent too: an AWS snapshot always says
            require_complete({"complete": False}, self.manifest, "auditor collect aws")
        return doc

    def window_end(self) -> datetime | None:
        """The end of the collected window: the default audit end, so a snapshot audits the same later."""
        end = (self._manifest().get("window") or {}).get("end")
        if end is None and self.athena_files:
            end = (load_json(self.athena_files[0], "Athena aggregate rows").get("window") or {}).get("end")
        return _moment(end, self.manifest or self.athena_files[0], "window.end") if end else None

    def collected_at(self) -> datetime | None:
        """When the snapshot was collected: nothing in it can be later."""
        when = self._manifest().get("collected_at")
        return _moment(when, self.manifest, "collected_at") if when else None

    @property
    def has_usage(self) -> bool:
        """Whether the folder is a snapshot, which may hold no log file at all (Athena, no trail)."""
        return self.manifest is not None or bool(self.athena_files)

    def read(self, agents: frozenset[str] | None, start: str, end: str, rules: Rules) -> Extras:
        manifest = self._manifest()
        out = Extras(
            gaps=[
                _gap(
                    g.get("account"),
                    g.get("scope", ""),
                    g.get("reason", ""),
                    g.get("severity", "error"),
                    g.get("count", 1),
                )
                for g in manifest.get("gaps") or []
            ]
        )
        collected = manifest.get("window") or {}
        if collected.get("start") and start < collected["start"]:
            reason = (
                f"the audit window starts {start}, before the collected window {collected['start']} .. "
                f"{collected.get('end')}: earlier days have no evidence (audit with --days {collected.get('days')})"
            )
            out.gaps.append(_gap(None, str(self.manifest), reason))
        for account in manifest.get("accounts") or []:
            usage = account.get("usage") or {}
            if usage.get("detail"):
                out.coverage.append(
                    {
                        "provider": "aws",
                        "account": account.get("account"),
                        "source": f"collected: {usage.get('source')}",
                        "detail": usage["detail"],
                    }
                )
        parts: list[Extras] = []
        if self.athena_files:
            mapper = EventActionMapper.from_rules(rules, aws_catalog())
            for path in self.athena_files:
                doc = load_json(path, "Athena aggregate rows written by `auditor collect aws`")
                parts.append(fold_athena(doc, str(path), mapper, start, end, agents))
        for path in self.advisor_files:
            doc = load_json(path, "Access Advisor results written by `auditor collect aws`")
            parts.append(fold_advisor(doc, str(path), aws_catalog(), start, end, agents))
        for part in parts:
            out.partial.merge(part.partial)
            out.coverage += part.coverage
            out.gaps += part.gaps
        return out


def _moment(value: Any, origin: Path | None, key: str) -> datetime:
    text = normalize_iso(str(value))
    if text is None:
        raise InputError(f"{origin}: {key} {value!r} is not a time", "recollect with `auditor collect aws`")
    return parse_iso(text)
