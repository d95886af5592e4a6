"""What Cloud Audit Logs can show: ``auditConfigs`` and log coverage turned into observability rows.

Admin Activity logs (ADMIN_WRITE) are always on. Data Access logs (ADMIN_READ, DATA_READ,
DATA_WRITE) are off unless the project's (or a folder's, or the organization's) ``auditConfigs``
enable them for the service or for ``allServices``; members listed in ``exemptedMembers`` are not
logged at all. A permission whose log type was not enabled for the whole window is *unobservable*,
never unused; so is everything on days missing from the logs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from auditor.connectors.gcp.iam import principal_of
from auditor.connectors.gcp.rules import ALWAYS_ON, GcpRules
from auditor.matching import any_glob_regex

ALL_SERVICES = "allServices"


@dataclass
class AuditLogConfig:
    """Effective audit-log configuration of one project: which (service, log type) pairs are logged."""

    enabled: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # -> exempted members

    @classmethod
    def from_configs(cls, configs: Iterable[Mapping[str, Any]]) -> AuditLogConfig:
        config = cls()
        for entry in configs:
            service = str(entry.get("service", ""))
            for log_config in entry.get("auditLogConfigs") or []:
                log_type = str(log_config.get("logType", ""))
                exempted = config.enabled.setdefault((service, log_type), set())
                exempted.update(log_config.get("exemptedMembers") or [])
        return config

    def logged(self, service: str, log_type: str) -> bool:
        return (service, log_type) in self.enabled or (ALL_SERVICES, log_type) in self.enabled

    def exempted(self, service: str, log_type: str) -> set[str]:
        return self.enabled.get((service, log_type), set()) | self.enabled.get((ALL_SERVICES, log_type), set())


def _row(project: str, identity: str | None, permissions: Iterable[str], reason: str) -> dict[str, Any]:
    return {
        "provider": "gcp",
        "account": project,
        "identity": identity,
        "actions": sorted(permissions),
        "reason": reason,
    }


def observability_rows(
    project: str,
    permissions: Iterable[str],
    config: AuditLogConfig,
    rules: GcpRules,
    changes: Sequence[tuple[str, str, str, str]],
    window: tuple[str, str],
    seen: AbstractSet[str] = frozenset(),
) -> list[dict[str, Any]]:
    """OBSERVABILITY rows of one project for ``permissions`` (the catalog), given its audit config.

    ``changes``: (time, action, service, log type) of auditConfigs deltas logged by SetIamPolicy.
    ``seen``: permissions the window's logs show in ``authorizationInfo``: they demonstrably are
    recorded, so no rule makes them unobservable (exempted members still are)."""
    enabled_late = {
        (service, log_type): when
        for when, action, service, log_type in sorted(changes)
        if action == "ADD" and window[0] <= when <= window[1]
    }
    by_reason: dict[str, set[str]] = defaultdict(set)
    by_identity: dict[tuple[str, str], set[str]] = defaultdict(set)
    permissions = list(permissions)
    for permission in permissions:
        log_type = rules.log_type(permission)
        service = rules.service(permission)
        if log_type == ALWAYS_ON or service in rules.always_logged:
            continue
        if not config.logged(service, log_type) and permission not in seen:
            by_reason[f"{log_type} audit logs for {service} are not enabled (auditConfigs)"].add(permission)
            continue
        late = enabled_late.get((service, log_type)) or enabled_late.get((ALL_SERVICES, log_type))
        if late and permission not in seen:
            by_reason[
                f"{log_type} audit logs for {service} were enabled on {late[:10]} (SetIamPolicy), "
                "not for the whole window"
            ].add(permission)
            continue
        for member in config.exempted(service, log_type):
            principal = principal_of(member)
            if principal is not None:
                reason = f"{member} is exempted from {log_type} audit logs for {service} (auditConfigs exemptedMembers)"
                by_identity[(principal.identity, reason)].add(permission)
    rows = []
    for patterns, reason in rules.never_logged:
        regex = any_glob_regex(patterns)
        unseen = {p for p in (*permissions, *patterns) if regex.fullmatch(p) and p not in seen}
        if unseen:
            rows.append(_row(project, None, unseen, reason))
    rows += [_row(project, None, perms, reason) for reason, perms in sorted(by_reason.items())]
    rows += [_row(project, identity, perms, reason) for (identity, reason), perms in sorted(by_identity.items())]
    return rows
