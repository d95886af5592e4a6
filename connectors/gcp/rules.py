"""GCP facts kept as data in ``rules/gcp/``: access level and audit-log type of a permission, the API
service that logs it, service agents and admin roles. Google's IAM API exposes none of these."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from auditor.errors import RuleError
from auditor.matching import any_glob_regex
from auditor.ruleset import Rules

LOG_TYPES = ("ADMIN_READ", "DATA_READ", "DATA_WRITE")  # the configurable (Data Access) types
ALWAYS_ON = "ADMIN_WRITE"  # Admin Activity logs: always written, cannot be disabled


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleError(f"{where}: expected a list of strings")
    return list(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RuleError(f"{where}: expected a mapping")
    return value


def _verb(permission: str) -> str:
    return permission.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class GcpRules:
    """``rules/gcp/permissions.yaml`` and ``rules/gcp/principals.yaml``, layered."""

    access_levels: tuple[tuple[str, re.Pattern[str]], ...]
    admin_read_verbs: re.Pattern[str]
    explicit_log_types: dict[str, str]
    services: dict[str, str]
    permission_services: dict[str, str]
    always_logged: frozenset[str]
    never_logged: tuple[tuple[tuple[str, ...], str], ...]
    not_in_project_roles: re.Pattern[str]
    service_agents: tuple[re.Pattern[str], ...]
    admin_roles: frozenset[str]
    _level_cache: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, rules: Rules) -> GcpRules:
        return rules.view("gcp.permissions", cls._build)

    @classmethod
    def _build(cls, rules: Rules) -> GcpRules:
        levels: dict[str, list[str]] = {}
        admin_read: list[str] = []
        explicit: dict[str, str] = {}
        services: dict[str, str] = {}
        permission_services: dict[str, str] = {}
        always: set[str] = set()
        never: list[tuple[tuple[str, ...], str]] = []
        not_in_project: list[str] = []
        for path, doc in rules.layers("gcp/permissions.yaml"):
            for level, verbs in _mapping(doc.get("access_levels"), f"{path} access_levels").items():
                levels.setdefault(str(level), []).extend(_strings(verbs, f"{path} access_levels.{level}"))
            log_types = _mapping(doc.get("log_types"), f"{path} log_types")
            admin_read += _strings(log_types.get("admin_read_verbs"), f"{path} log_types.admin_read_verbs")
            for log_type in ("DATA_READ", "DATA_WRITE"):
                for permission in _strings(log_types.get(log_type), f"{path} log_types.{log_type}"):
                    explicit[permission] = log_type
            services.update({str(k): str(v) for k, v in _mapping(doc.get("services"), f"{path} services").items()})
            permission_services.update(
                {str(k): str(v) for k, v in _mapping(doc.get("permission_services"), f"{path} services").items()}
            )
            always.update(_strings(doc.get("always_logged_services"), f"{path} always_logged_services"))
            for index, entry in enumerate(doc.get("never_logged") or []):
                where = f"{path} never_logged[{index}]"
                entry = _mapping(entry, where)
                permissions = _strings(entry.get("permissions"), where)
                if not permissions or not isinstance(entry.get("reason"), str):
                    raise RuleError(f"{where}: needs 'permissions' and 'reason'")
                never.append((tuple(permissions), entry["reason"]))
            not_in_project += _strings(doc.get("not_in_project_roles"), f"{path} not_in_project_roles")
        agents: list[re.Pattern[str]] = []
        admin_roles: set[str] = set()
        for path, doc in rules.layers("gcp/principals.yaml"):
            for pattern in _strings(doc.get("service_agents"), f"{path} service_agents"):
                try:
                    agents.append(re.compile(pattern))
                except re.error as exc:
                    raise RuleError(f"{path} service_agents: {pattern!r} is not a regular expression ({exc})") from None
            admin_roles.update(_strings(doc.get("admin_roles"), f"{path} admin_roles"))
        return cls(
            access_levels=tuple((level, _verb_regex(verbs)) for level, verbs in levels.items()),
            admin_read_verbs=_verb_regex(admin_read),
            explicit_log_types=explicit,
            services=services,
            permission_services=permission_services,
            always_logged=frozenset(always),
            never_logged=tuple(never),
            not_in_project_roles=any_glob_regex(not_in_project),
            service_agents=tuple(agents),
            admin_roles=frozenset(admin_roles),
        )

    def access_level(self, permission: str) -> str:
        """List / Read / Permissions management / Tagging by verb; Write otherwise."""
        level = self._level_cache.get(permission)
        if level is None:
            verb = _verb(permission)
            level = next((name for name, regex in self.access_levels if regex.fullmatch(verb)), "Write")
            self._level_cache[permission] = level
        return level

    def log_type(self, permission: str) -> str:
        """ADMIN_READ / DATA_READ / DATA_WRITE (Data Access logs) or ADMIN_WRITE (Admin Activity)."""
        explicit = self.explicit_log_types.get(permission)
        if explicit:
            return explicit
        return "ADMIN_READ" if self.admin_read_verbs.fullmatch(_verb(permission)) else ALWAYS_ON

    def service(self, permission: str) -> str:
        """The API service name that logs the permission's calls (and that auditConfigs name)."""
        exact = self.permission_services.get(permission)
        if exact:
            return exact
        prefix = permission.split(".", 1)[0]
        return self.services.get(prefix, f"{prefix}.googleapis.com")

    def is_service_agent(self, email: str) -> bool:
        return any(p.search(email) for p in self.service_agents)

    def fits_project_role(self, permission: str) -> bool:
        return self.not_in_project_roles.fullmatch(permission) is None


def _verb_regex(verbs: list[str]) -> re.Pattern[str]:
    """Case-sensitive: GCP verbs are camelCase (``getIamPolicy`` is not ``getiampolicy``)."""
    alternatives = sorted({re.escape(v).replace(r"\*", ".*").replace(r"\?", ".") for v in verbs})
    return re.compile("(?:" + "|".join(alternatives) + ")" if alternatives else r"(?!)")
