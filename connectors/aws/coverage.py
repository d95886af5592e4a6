"""What a CloudTrail trail can show: event selectors and log coverage turned into observability rows.

An action is *unobservable* (never "unused") when the trail does not log the kind of event its calls
produce: data events not selected, management events filtered by read/write type or event source,
authorization-only permissions CloudTrail never logs, or days of the window missing from the logs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.catalog import Catalog
from auditor.errors import InputError, RuleError
from auditor.fileio import load_json
from auditor.ruleset import Rules


@dataclass(frozen=True)
class DataEventRule:
    resource_type: str
    actions: tuple[str, ...]
    reason: str

    @property
    def service(self) -> str:
        return self.resource_type.split("::")[1].lower() if self.resource_type.count("::") >= 2 else ""


@dataclass(frozen=True)
class ObservabilityRules:
    never_logged: tuple[tuple[tuple[str, ...], str], ...]
    data_events: tuple[DataEventRule, ...]

    @classmethod
    def of(cls, rules: Rules) -> ObservabilityRules:
        return rules.view("aws.observability", cls._build)

    @classmethod
    def _build(cls, rules: Rules) -> ObservabilityRules:
        never: dict[str, tuple[tuple[str, ...], str]] = {}
        data: dict[str, DataEventRule] = {}
        for path, doc in rules.layers("aws/observability.yaml"):
            for index, entry in enumerate(doc.get("never_logged") or []):
                actions, reason = _actions_reason(entry, f"{path} never_logged[{index}]")
                never[",".join(actions)] = (actions, reason)
            for index, entry in enumerate(doc.get("data_events") or []):
                where = f"{path} data_events[{index}]"
                actions, reason = _actions_reason(entry, where)
                resource_type = entry.get("resource_type")
                if not isinstance(resource_type, str):
                    raise RuleError(f"{where}: missing 'resource_type'")
                data[resource_type] = DataEventRule(resource_type, actions, reason)
        return cls(tuple(never.values()), tuple(data.values()))


def _actions_reason(entry: Any, where: str) -> tuple[tuple[str, ...], str]:
    if not isinstance(entry, dict):
        raise RuleError(f"{where}: expected a mapping")
    actions, reason = entry.get("actions"), entry.get("reason")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        raise RuleError(f"{where}: 'actions' must be a non-empty list of strings")
    if not isinstance(reason, str):
        raise RuleError(f"{where}: missing 'reason'")
    return tuple(actions), reason


@dataclass
class TrailCoverage:
    """What one trail logs, from ``get-event-selectors`` output or from a --data-events declaration."""

    origin: str
    management_read: bool = True
    management_write: bool = True
    excluded_sources: set[str] = field(default_factory=set)
    data: dict[str, str | None] = field(default_factory=dict)  # resource type -> None (all) or scope text

    @classmethod
    def declared(cls, data_events: str, rules: ObservabilityRules) -> TrailCoverage:
        """From ``--data-events all|none|s3,dynamodb,...`` (services or resource types)."""
        wanted = {w.strip().lower() for w in data_events.split(",") if w.strip()}
        known = {r.service for r in rules.data_events} | {r.resource_type.lower() for r in rules.data_events}
        unknown = wanted - known - {"all", "none"}
        if unknown:
            raise InputError(
                f"--data-events: unknown {', '.join(sorted(unknown))}",
                f"use all, none, or some of {', '.join(sorted({r.service for r in rules.data_events}))}",
            )
        coverage = cls(origin=f"--data-events {data_events}")
        for rule in rules.data_events:
            if "all" in wanted or rule.service in wanted or rule.resource_type.lower() in wanted:
                coverage.data[rule.resource_type] = None
        return coverage

    @classmethod
    def from_selectors_file(cls, path: Path) -> TrailCoverage:
        return cls.from_selectors(load_json(path, "the output of `aws cloudtrail get-event-selectors`"), str(path))

    @classmethod
    def from_selectors(cls, doc: Any, origin: str) -> TrailCoverage:
        if not isinstance(doc, dict) or not ("EventSelectors" in doc or "AdvancedEventSelectors" in doc):
            raise InputError(
                f"{origin}: not event selectors (no EventSelectors / AdvancedEventSelectors)",
                "create it with `aws cloudtrail get-event-selectors --trail-name TRAIL --output json`",
            )
        coverage = cls(origin=origin, management_read=False, management_write=False)
        for selector in doc.get("EventSelectors") or []:
            coverage._basic(selector)
        for selector in doc.get("AdvancedEventSelectors") or []:
            coverage._advanced(selector)
        return coverage

    def _basic(self, selector: Mapping[str, Any]) -> None:
        rw = selector.get("ReadWriteType", "All")
        if selector.get("IncludeManagementEvents", True):
            self.management_read |= rw in ("All", "ReadOnly")
            self.management_write |= rw in ("All", "WriteOnly")
            self.excluded_sources |= set(selector.get("ExcludeManagementEventSources") or [])
        for resource in selector.get("DataResources") or []:
            values = resource.get("Values") or []
            everything = rw == "All" and any(
                v in ("arn:aws:s3", "arn:aws:s3:::", "arn:aws:dynamodb", "arn:aws:lambda") or v.count(":") <= 2
                for v in values
            )
            scope = None if everything else f"{rw} events for {', '.join(values) or 'no resources'}"
            self._merge(resource.get("Type", ""), scope)

    def _advanced(self, selector: Mapping[str, Any]) -> None:
        fields: dict[str, dict[str, Any]] = {f.get("Field", ""): f for f in selector.get("FieldSelectors") or []}
        category = (fields.get("eventCategory", {}).get("Equals") or ["Management"])[0]
        narrowing = {k: v for k, v in fields.items() if k not in ("eventCategory", "resources.type")}
        if category == "Management":
            read_only = (fields.get("readOnly", {}).get("Equals") or [None])[0]
            self.management_read |= read_only in (None, "true")
            self.management_write |= read_only in (None, "false")
            self.excluded_sources |= set(fields.get("eventSource", {}).get("NotEquals") or [])
            return
        scope = None
        if narrowing:
            scope = "; ".join(
                f"{name} {op} {values}"
                for name, f in sorted(narrowing.items())
                for op, values in f.items()
                if op != "Field"
            )
        for resource_type in fields.get("resources.type", {}).get("Equals") or []:
            self._merge(resource_type, scope)

    def _merge(self, resource_type: str, scope: str | None) -> None:
        if resource_type in self.data and self.data[resource_type] is None:
            return
        if scope is None or resource_type not in self.data:
            self.data[resource_type] = scope
        else:
            self.data[resource_type] = f"{self.data[resource_type]}; {scope}"


def observability_rows(
    account: str,
    coverage: TrailCoverage | None,
    rules: ObservabilityRules,
    catalog: Catalog,
) -> list[dict[str, Any]]:
    """OBSERVABILITY rows for one account, given what its trail logs (None: not declared)."""
    rows = [_row(account, actions, reason) for actions, reason in rules.never_logged]
    for rule in rules.data_events:
        if coverage is None:
            reason = (
                f"{rule.resource_type} data events: trail coverage not declared "
                "(pass --event-selectors FILE or --data-events)"
            )
        elif rule.resource_type not in coverage.data:
            reason = f"{rule.resource_type} data events are not logged by the trail ({coverage.origin})"
        elif coverage.data[rule.resource_type] is not None:
            reason = f"{rule.resource_type} data events logged only for {coverage.data[rule.resource_type]}"
        else:
            continue
        rows.append(_row(account, rule.actions, reason))
    if coverage is None:
        return rows
    data_patterns = [a for r in rules.data_events for a in r.actions]
    if not coverage.management_read or not coverage.management_write:
        kind = "read" if not coverage.management_read else "write"
        management = _management_actions(catalog, data_patterns, want_read=kind == "read")
        rows.append(_row(account, management, f"the trail does not log {kind} management events"))
    for source in sorted(coverage.excluded_sources):
        prefix = source.split(".", 1)[0]
        rows.append(_row(account, [f"{prefix}:*"], f"the trail excludes management events from {source}"))
    return rows


def _management_actions(catalog: Catalog, data_patterns: Iterable[str], want_read: bool) -> list[str]:
    data_actions = catalog.expand(data_patterns)
    return sorted(a for a in catalog.access_levels if catalog.is_read(a) == want_read and a not in data_actions)


def _row(account: str, actions: Iterable[str], reason: str) -> dict[str, Any]:
    return {"provider": "aws", "account": account, "identity": None, "actions": list(actions), "reason": reason}
