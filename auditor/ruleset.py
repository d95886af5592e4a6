"""The rules that classify permissions: destructive rules, privilege-escalation methods, severities.

Rules are YAML files in ``rules/`` (shipped) and in each ``--rules DIR`` the user adds. A user rule
with the id of a shipped one replaces it; ``disabled: true`` removes it; new ids are added.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.catalog import Catalog
from auditor.errors import RuleError
from auditor.matching import any_glob_regex
from auditor.ruleset_files import layers, rule_dirs

SEVERITIES = ("info", "low", "medium", "high", "critical")
SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
CATEGORIES = ("destroy", "privilege", "exposure", "evasion", "credentials")
FINDING_KINDS = (
    "admin-grant",
    "privilege-escalation",
    "unused-destructive",
    "used-destructive",
    "denied-attempt",
    "wildcard-grant",
    "dormant-identity",
    "unused-grant",
    "unobservable-grant",
    "used-not-granted",
    "unmapped-events",
)


@dataclass(frozen=True)
class DestructiveRule:
    id: str
    provider: str
    category: str
    severity: str
    reason: str
    actions: tuple[str, ...]
    access_levels: frozenset[str] | None = None
    exceptions: tuple[str, ...] = ()
    _match: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _except: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_match", any_glob_regex(self.actions))
        object.__setattr__(self, "_except", any_glob_regex(self.exceptions))

    def applies(self, action: str, access_level: str) -> bool:
        if self.access_levels is not None and access_level not in self.access_levels:
            return False
        return self._match.fullmatch(action) is not None and self._except.fullmatch(action) is None


@dataclass(frozen=True)
class EscalationMethod:
    id: str
    provider: str
    severity: str
    reason: str
    requires: tuple[str, ...]
    resource_star: tuple[str, ...] = ()


@dataclass(frozen=True)
class Classification:
    """Why an action is destructive: the highest-severity rule that matched."""

    rule: str
    category: str
    severity: str
    reason: str


@dataclass(frozen=True)
class RuleSet:
    destructive: tuple[DestructiveRule, ...]
    escalation: tuple[EscalationMethod, ...]
    severities: dict[str, str]
    sources: tuple[Path, ...]
    dirs: tuple[Path, ...] = ()

    def classify(self, provider: str, action: str, catalog: Catalog) -> Classification | None:
        level = catalog.access_level(action)
        best: DestructiveRule | None = None
        for rule in self.destructive:
            outranks = best is None or SEVERITY_RANK[rule.severity] > SEVERITY_RANK[best.severity]
            if outranks and rule.provider == provider and rule.applies(action, level):
                best = rule
        if best is None:
            return None
        return Classification(best.id, best.category, best.severity, best.reason)

    def methods_for(self, provider: str) -> list[EscalationMethod]:
        return [m for m in self.escalation if m.provider == provider]


def _require(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise RuleError(f"{where}: missing '{key}'")
    value = entry[key]
    if not isinstance(value, kind):
        raise RuleError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}")
    return value


def _strings(entry: dict[str, Any], key: str, where: str, required: bool = True) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: '{key}' must be a non-empty list of strings")
    return tuple(value)


def _severity(entry: dict[str, Any], where: str) -> str:
    value = _require(entry, "severity", str, where)
    if value not in SEVERITY_RANK:
        raise RuleError(f"{where}: severity {value!r} is not one of {', '.join(SEVERITIES)}")
    return value


def _destructive_rule(entry: Any, where: str) -> DestructiveRule:
    category = _require(entry, "category", str, where)
    if category not in CATEGORIES:
        raise RuleError(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
    levels = entry.get("access_levels")
    return DestructiveRule(
        id=_require(entry, "id", str, where),
        provider=_require(entry, "provider", str, where),
        category=category,
        severity=_severity(entry, where),
        reason=_require(entry, "reason", str, where),
        actions=_strings(entry, "actions", where),
        access_levels=frozenset(_strings(entry, "access_levels", where)) if levels is not None else None,
        exceptions=_strings(entry, "except", where, required=False),
    )


def _method(entry: Any, where: str) -> EscalationMethod:
    requires = _strings(entry, "requires", where)
    star = _strings(entry, "resource_star", where, required=False) if entry.get("resource_star") else ()
    if not set(star) <= set(requires):
        raise RuleError(f"{where}: resource_star must list actions from requires")
    return EscalationMethod(
        id=_require(entry, "id", str, where),
        provider=_require(entry, "provider", str, where),
        severity=_severity(entry, where),
        reason=_require(entry, "reason", str, where),
        requires=requires,
        resource_star=star,
    )


def _layered(dirs: Sequence[Path], relative: str, key: str, build, sources: list[Path]) -> list[Any]:
    by_id: dict[str, Any] = {}
    for path, data in layers(dirs, relative):
        sources.append(path)
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise RuleError(f"{path}: '{key}' must be a list")
        for index, entry in enumerate(entries):
            where = f"{path} {key}[{index}]"
            rule_id = _require(entry, "id", str, where)
            if entry.get("disabled") is True:
                by_id.pop(rule_id, None)
                continue
            by_id[rule_id] = build(entry, where)
    return list(by_id.values())


def load_rules(extra_dirs: Sequence[Path] = ()) -> RuleSet:
    dirs = rule_dirs(extra_dirs)
    sources: list[Path] = []
    destructive = _layered(dirs, "destructive.yaml", "rules", _destructive_rule, sources)
    escalation = _layered(dirs, "privesc.yaml", "methods", _method, sources)
    severities: dict[str, str] = {}
    for path, data in layers(dirs, "findings.yaml"):
        sources.append(path)
        table = data.get("severities", {})
        if not isinstance(table, dict):
            raise RuleError(f"{path}: 'severities' must be a mapping of finding kind to severity")
        for kind, value in table.items():
            if kind not in FINDING_KINDS:
                raise RuleError(f"{path}: unknown finding kind {kind!r}", f"one of {', '.join(FINDING_KINDS)}")
            if value not in SEVERITY_RANK:
                raise RuleError(f"{path}: severity {value!r} for {kind} is not one of {', '.join(SEVERITIES)}")
            severities[kind] = value
    missing = [k for k in FINDING_KINDS if k not in severities]
    if missing:
        raise RuleError(f"findings.yaml: no severity for {', '.join(missing)}")
    return RuleSet(tuple(destructive), tuple(escalation), severities, tuple(sources), tuple(dirs))
