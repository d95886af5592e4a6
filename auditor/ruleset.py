"""The rules, parsed once: shipped ``rules/`` plus every ``--rules DIR`` layer.

:func:`load` reads every YAML file of every layer once and validates the provider-neutral parts
(destructive rules, privilege-escalation methods, finding severities). Cloud-specific rule files
(``rules/aws/*.yaml``, ``rules/gcp/*.yaml``) are parsed by their connector from the layers held
here (:meth:`Rules.layers`) and memoized on the object (:meth:`Rules.view`), so nothing re-reads a
rule file from a folder path and a user's ``--rules`` layer reaches every consumer.

A user rule with the id of a shipped one replaces it; ``disabled: true`` removes it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from auditor.catalog import Catalog
from auditor.disk_cache import cached_for
from auditor.errors import RuleError
from auditor.escalation_methods import EscalationMethod, parse_method
from auditor.matching import any_glob_regex, any_glob_search
from auditor.severity import SEVERITIES, SEVERITY_RANK

CATEGORIES = ("destroy", "privilege", "exposure", "evasion", "credentials")
__all__ = ["SEVERITIES", "SEVERITY_RANK", "Rules", "load"]

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
    "ignored-restriction",
    "ignored-rule",
    "wider-than-used",
)

T = TypeVar("T")
Layer = tuple[Path, dict[str, Any]]


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

    @property
    def match_search(self) -> str:
        """A regex found in exactly the names the rule's actions match (:func:`auditor.matching.any_glob_search`;
        the audit matches in polars, which compiles it)."""
        return any_glob_search(self.actions)

    @property
    def except_search(self) -> str:
        return any_glob_search(self.exceptions)

    @cached_property
    def _match(self) -> re.Pattern[str]:  # compiled on first use: most runs match in polars only
        return any_glob_regex(self.actions)

    @cached_property
    def _except(self) -> re.Pattern[str]:
        return any_glob_regex(self.exceptions)

    def applies(self, action: str, access_level: str) -> bool:
        if self.access_levels is not None and access_level not in self.access_levels:
            return False
        return self._match.fullmatch(action) is not None and self._except.fullmatch(action) is None


@dataclass(frozen=True)
class Classification:
    """Why an action is destructive: the highest-severity rule that matched."""

    rule: str
    category: str
    severity: str
    reason: str


@dataclass(frozen=True)
class Rules:
    """Every rule layer, parsed; the provider-neutral rules typed and validated."""

    destructive: tuple[DestructiveRule, ...]
    escalation: tuple[EscalationMethod, ...]
    severities: Mapping[str, str]
    dirs: tuple[Path, ...]
    documents: Mapping[str, tuple[Layer, ...]]  # relative file name -> its layers, in layer order
    _views: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def sources(self) -> tuple[Path, ...]:
        """Every rule file read, in layer order."""
        return tuple(path for layers in self.documents.values() for path, _ in layers)

    def layers(self, relative: str) -> tuple[Layer, ...]:
        """The parsed layers of one rule file (e.g. ``aws/event_mapping.yaml``), shipped first."""
        return self.documents.get(relative, ())

    def view(self, key: str, build: Callable[[Rules], T]) -> T:
        """``build(self)`` once per key: a connector's typed view of its rule files."""
        with self._lock:
            if key not in self._views:
                self._views[key] = build(self)
            return self._views[key]

    def classify(self, provider: str, action: str, catalog: Catalog) -> Classification | None:
        """The highest-severity destructive rule matching ``action`` (the first listed among equals)."""
        level = catalog.access_level(action)
        for rule in self.ranked(provider):
            if rule.applies(action, level):
                return Classification(rule.id, rule.category, rule.severity, rule.reason)
        return None

    def ranked(self, provider: str) -> tuple[DestructiveRule, ...]:
        """The destructive rules of ``provider``, highest severity first (listed order among equals)."""
        return self.view(
            f"destructive/{provider}",
            lambda r: tuple(
                sorted((d for d in r.destructive if d.provider == provider), key=lambda d: -SEVERITY_RANK[d.severity])
            ),
        )

    def methods_for(self, provider: str) -> list[EscalationMethod]:
        return [m for m in self.escalation if m.provider == provider]

    def __getstate__(self) -> dict[str, Any]:  # forked/spawned scan workers rebuild their views
        state = dict(self.__dict__)
        state["_views"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_lock"] = threading.Lock()
        self.__dict__.update(state)


# ----------------------------------------------------------------------------- validation helpers


def require(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``entry[key]`` of type ``kind``, or a RuleError naming ``where``."""
    if not isinstance(entry, dict) or key not in entry:
        raise RuleError(f"{where}: missing '{key}'")
    value = entry[key]
    if not isinstance(value, kind):
        raise RuleError(f"{where}: '{key}' must be {getattr(kind, '__name__', kind)}")
    return value


def strings(value: Any, where: str, required: bool = False) -> list[str]:
    """A list of non-empty strings (a single string counts as one), or a RuleError."""
    if value is None and not required:
        return []
    if isinstance(value, str) and value:
        return [value]
    if not isinstance(value, list) or (required and not value) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: expected a {'non-empty ' if required else ''}list of strings")
    return list(value)


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A mapping (``None`` is empty), or a RuleError."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RuleError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _severity(entry: dict[str, Any], where: str) -> str:
    value = require(entry, "severity", str, where)
    if value not in SEVERITY_RANK:
        raise RuleError(f"{where}: severity {value!r} is not one of {', '.join(SEVERITIES)}")
    return value


def _destructive_rule(entry: Any, where: str) -> DestructiveRule:
    category = require(entry, "category", str, where)
    if category not in CATEGORIES:
        raise RuleError(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
    levels = entry.get("access_levels")
    return DestructiveRule(
        id=require(entry, "id", str, where),
        provider=require(entry, "provider", str, where),
        category=category,
        severity=_severity(entry, where),
        reason=require(entry, "reason", str, where),
        actions=tuple(strings(entry.get("actions"), f"{where} actions", required=True)),
        access_levels=frozenset(strings(levels, f"{where} access_levels", required=True))
        if levels is not None
        else None,
        exceptions=tuple(strings(entry.get("except"), f"{where} except")),
    )


def _by_id(layers: Sequence[Layer], key: str, build: Callable[[Any, str], T]) -> list[T]:
    """Entries of ``key`` across layers: a later id replaces, ``disabled: true`` removes."""
    by_id: dict[str, T] = {}
    for path, data in layers:
        entries = data.get(key, [])
        if not isinstance(entries, list):
            raise RuleError(f"{path}: '{key}' must be a list")
        for index, entry in enumerate(entries):
            where = f"{path} {key}[{index}]"
            rule_id = require(entry, "id", str, where)
            if entry.get("disabled") is True:
                by_id.pop(rule_id, None)
                continue
            by_id[rule_id] = build(entry, where)
    return list(by_id.values())


def _severities(layers: Sequence[Layer]) -> dict[str, str]:
    severities: dict[str, str] = {}
    for path, data in layers:
        for kind, value in mapping(data.get("severities"), f"{path} severities").items():
            if kind not in FINDING_KINDS:
                raise RuleError(f"{path}: unknown finding kind {kind!r}", f"one of {', '.join(FINDING_KINDS)}")
            if value not in SEVERITY_RANK:
                raise RuleError(f"{path}: severity {value!r} for {kind} is not one of {', '.join(SEVERITIES)}")
            severities[kind] = value
    missing = [k for k in FINDING_KINDS if k not in severities]
    if missing:
        raise RuleError(f"findings.yaml: no severity for {', '.join(missing)}")
    return severities


# ----------------------------------------------------------------------------- files


def builtin_rules_dir() -> Path:
    return Path(str(resources.files("auditor.rules")))


def load_yaml(path: Path) -> dict[str, Any]:
    """One rule file as a mapping; a one-line RuleError naming the file and line otherwise."""
    return _parse_yaml(path, _read(path))


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def _parse_yaml(path: Path, text: str) -> dict[str, Any]:
    import yaml  # imported here: parsed rules usually come from the cache, and PyYAML takes 10 ms to import

    # libyaml's safe loader when PyYAML was built with it (10x faster than the pure-Python one).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # a safe loader (C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RuleError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})", "fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RuleError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _documents(dirs: Sequence[Path]) -> dict[str, tuple[Layer, ...]]:
    """Every rule file of ``dirs`` by its relative name, parsed; the parse of the same texts is reused
    from the cache (YAML parsing is most of the time it takes to load the rules)."""
    files = [
        (path.relative_to(directory).as_posix(), path)
        for directory in dirs
        for path in sorted(directory.rglob("*.yaml"))
    ]
    texts = [_read(path) for _, path in files]
    content = "\0".join(f"{path}\0{text}" for (_, path), text in zip(files, texts, strict=True)).encode()
    parsed = cached_for(
        "rules",
        ("PyYAML",),
        content,
        lambda: [_parse_yaml(p, t) for (_, p), t in zip(files, texts, strict=True)],
        lambda value: isinstance(value, list) and len(value) == len(files),
    )
    found: dict[str, list[Layer]] = {}
    for (relative, path), data in zip(files, parsed, strict=True):
        found.setdefault(relative, []).append((path, data))
    return {name: tuple(layers) for name, layers in found.items()}


def load(extra_dirs: Sequence[Path] = ()) -> Rules:
    """The shipped rules, then each ``--rules DIR`` in the order given (later layers extend)."""
    for directory in extra_dirs:
        if not directory.is_dir():
            raise RuleError(f"rules directory {directory} does not exist", "pass an existing directory to --rules")
    dirs = (builtin_rules_dir(), *extra_dirs)
    documents = _documents(dirs)
    return Rules(
        destructive=tuple(_by_id(documents.get("destructive.yaml", ()), "rules", _destructive_rule)),
        escalation=tuple(_by_id(documents.get("privesc.yaml", ()), "methods", parse_method)),
        severities=_severities(documents.get("findings.yaml", ())),
        dirs=dirs,
        documents=documents,
    )
