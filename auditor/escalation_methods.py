"""The privilege-escalation methods of ``rules/privesc.yaml``, parsed and validated.

Apart from the engine (:mod:`auditor.escalation`), so that loading the rules does not load the engine:
every audit validates its rule files before its log scan begins, and evaluates methods only after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditor.errors import RuleError
from auditor.matching import has_wildcard
from auditor.severity import SEVERITIES

PROVIDERS = ("aws", "gcp", "azure")
#: Where a required action works (``works_on: {ACTION: {target: KIND}}``; described in rules/privesc.yaml).
KINDS = frozenset(
    {
        "resources",
        "self",
        "bounded-self",
        "own-group",
        "group",
        "other-user",
        "role",
        "assumable-role",
        "self-or-assumable-role",
        "role-assumable-by",
        "service-account",
    }
)
_GCP_KINDS = frozenset({"resources", "service-account"})
#: Kinds a ``chains: true`` method may use: the principal becomes the target and inherits its paths.
CHAIN_KINDS = frozenset({"assumable-role", "service-account"})
_METHOD_KEYS = frozenset(
    {"id", "provider", "severity", "reason", "requires", "resource_star", "works_on", "runs_as", "chains", "disabled"}
)
_SPEC_KEYS = frozenset({"target", "resources", "services"})


@dataclass(frozen=True)
class TargetSpec:
    """Where one required action of a method works."""

    kind: str = "resources"
    resources: tuple[str, ...] = ()  # patterns (kind resources), or a filter on the targets of the kind
    services: tuple[str, ...] = ()  # kind role-assumable-by


@dataclass(frozen=True)
class EscalationMethod:
    """A privilege-escalation method (a superset of :class:`auditor.ruleset.EscalationMethod`)."""

    id: str
    provider: str
    severity: str
    reason: str
    requires: tuple[str, ...]
    resource_star: tuple[str, ...] = ()  # actions that count only when granted on Resource "*"
    works_on: tuple[tuple[str, TargetSpec], ...] = ()  # action -> where it works; others: anywhere
    runs_as: tuple[str, ...] = ()  # services one of whose existing resources must run as a better role
    chains: bool = False  # the principal becomes the target and inherits its paths

    def spec(self, action: str) -> TargetSpec | None:
        return dict(self.works_on).get(action)


# --- rules/privesc.yaml --------------------------------------------------------------------------


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"{where}: '{key}' must be a non-empty string")
    return value


def _strings(entry: Mapping[str, Any], key: str, where: str, required: bool = True) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: '{key}' must be a non-empty list of strings")
    return tuple(value)


def _spec(raw: Any, provider: str, where: str) -> TargetSpec:
    if not isinstance(raw, Mapping) or not raw:
        raise RuleError(f"{where}: must be a mapping with 'target' and/or 'resources'")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (use target, resources, services)")
    kind = raw.get("target", "resources")
    allowed = _GCP_KINDS if provider == "gcp" else KINDS - {"service-account"}
    if kind not in allowed:
        raise RuleError(f"{where}: target {kind!r} is not one of {', '.join(sorted(allowed))}")
    resources = _strings(raw, "resources", where, required=kind == "resources")
    services = _strings(raw, "services", where, required=kind == "role-assumable-by")
    if services and kind != "role-assumable-by":
        raise RuleError(f"{where}: 'services' only goes with target role-assumable-by")
    return TargetSpec(kind, resources, services)


def _works_on(
    entry: Mapping[str, Any], requires: tuple[str, ...], provider: str, where: str
) -> tuple[tuple[str, TargetSpec], ...]:
    raw = entry.get("works_on") or {}
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: 'works_on' must map required actions to where they work")
    stray = sorted(str(a) for a in raw if a not in requires)
    if stray:
        raise RuleError(f"{where}: works_on names {', '.join(stray)}, which 'requires' does not list")
    return tuple((a, _spec(raw[a], provider, f"{where} works_on[{a}]")) for a in requires if a in raw)


def parse_method(entry: Any, where: str) -> EscalationMethod:
    """One entry of ``methods:`` in rules/privesc.yaml (schema in that file's header)."""
    if not isinstance(entry, Mapping):
        raise RuleError(f"{where}: a method must be a mapping")
    unknown = sorted(str(k) for k in set(entry) - _METHOD_KEYS)
    if unknown:
        raise RuleError(f"{where}: unknown key(s) {', '.join(unknown)}")
    provider = _text(entry, "provider", where)
    if provider not in PROVIDERS:
        raise RuleError(f"{where}: provider {provider!r} is not one of {', '.join(PROVIDERS)}")
    severity = _text(entry, "severity", where)
    if severity not in SEVERITIES:
        raise RuleError(f"{where}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    requires = _strings(entry, "requires", where)
    if any(has_wildcard(a) for a in requires) or len(set(requires)) != len(requires):
        raise RuleError(f"{where}: 'requires' must list distinct exact action names (no wildcards)")
    star = _strings(entry, "resource_star", where, required=False)
    if not set(star) <= set(requires):
        raise RuleError(f"{where}: resource_star must list actions from requires")
    works_on = _works_on(entry, requires, provider, where)
    chains = entry.get("chains", False)
    if not isinstance(chains, bool):
        raise RuleError(f"{where}: 'chains' must be true or false")
    if chains and [s.kind for _, s in works_on if s.kind in CHAIN_KINDS] == []:
        raise RuleError(f"{where}: a chaining method needs a works_on target {' or '.join(sorted(CHAIN_KINDS))}")
    return EscalationMethod(
        id=_text(entry, "id", where),
        provider=provider,
        severity=severity,
        reason=_text(entry, "reason", where),
        requires=requires,
        resource_star=star,
        works_on=works_on,
        runs_as=_strings(entry, "runs_as", where, required=False),
        chains=chains,
    )
