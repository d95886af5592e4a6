"""Builders for small, real-shaped GCP inputs (policies, role definitions, audit-log entries) in tests."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PROJECT = "p1"


def sa(name: str, project: str = PROJECT) -> str:
    return f"{name}@{project}.iam.gserviceaccount.com"


def binding(role: str, *members: str, condition: dict[str, Any] | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": role, "members": list(members)}
    if condition:
        entry["condition"] = condition
    return entry


def policy(*bindings: dict[str, Any], audit: Sequence[tuple[str, str, Sequence[str]]] = ()) -> dict[str, Any]:
    """``audit``: (service, log type, exempted members) entries of auditConfigs."""
    configs: dict[str, list[dict[str, Any]]] = {}
    for service, log_type, exempted in audit:
        entry: dict[str, Any] = {"logType": log_type}
        if exempted:
            entry["exemptedMembers"] = list(exempted)
        configs.setdefault(service, []).append(entry)
    doc: dict[str, Any] = {"bindings": list(bindings), "etag": "BwXYZ123abc=", "version": 3}
    if configs:
        doc["auditConfigs"] = [{"service": s, "auditLogConfigs": c} for s, c in configs.items()]
    return doc


def role(name: str, *permissions: str, title: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "title": title or name,
        "stage": "GA",
        "etag": "AA==",
        "includedPermissions": sorted(permissions),
    }


def entry(
    principal: str | None,
    when: str,
    checks: Iterable[tuple[str, bool | None]] = (),
    service: str = "compute.googleapis.com",
    method: str = "v1.compute.instances.stop",
    project: str = PROJECT,
    log: str = "activity",
    delegation: Sequence[str] = (),
    resource: str = "projects/p1/zones/z/instances/i1",
) -> dict[str, Any]:
    """A LogEntry as ``gcloud logging read --format=json`` prints it. ``granted=None`` omits the field."""
    payload: dict[str, Any] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": service,
        "methodName": method,
        "resourceName": resource,
    }
    if principal is not None:
        payload["authenticationInfo"] = {"principalEmail": principal}
        if delegation:
            payload["authenticationInfo"]["serviceAccountDelegationInfo"] = [
                {"firstPartyPrincipal": {"principalEmail": caller}} for caller in delegation
            ]
    checks = list(checks)
    if checks:
        payload["authorizationInfo"] = []
        for permission, granted in checks:
            item: dict[str, Any] = {
                "permission": permission,
                "resource": resource,
                "resourceAttributes": {"name": resource},
            }
            if granted is not None:
                item["granted"] = granted
            payload["authorizationInfo"].append(item)
    return {
        "insertId": "abc",
        "logName": f"projects/{project}/logs/cloudaudit.googleapis.com%2F{log}",
        "protoPayload": payload,
        "receiveTimestamp": when,
        "resource": {"type": "gce_instance", "labels": {"project_id": project}},
        "severity": "NOTICE",
        "timestamp": when,
    }


def write_snapshot(
    root: Path,
    project_policy: dict[str, Any],
    roles: Iterable[dict[str, Any]],
    entries: Sequence[dict[str, Any]],
    accounts: Iterable[dict[str, Any]] = (),
    project: str = PROJECT,
) -> Path:
    """A --gcp-dir folder: the project policy, one file per role, the entries as one gcloud JSON array."""
    (root / "policies" / "projects").mkdir(parents=True, exist_ok=True)
    (root / "policies" / "projects" / f"{project}.json").write_text(json.dumps(project_policy))
    (root / "roles").mkdir(exist_ok=True)
    for definition in roles:
        (root / "roles" / (definition["name"].replace("/", "_") + ".json")).write_text(json.dumps(definition))
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "audit.json").write_text(json.dumps(list(entries)))
    accounts = list(accounts)
    if accounts:
        (root / "service-accounts.json").write_text(json.dumps(accounts))
    return root


def account(email: str, description: str = "agent=true") -> dict[str, Any]:
    return {
        "email": email,
        "description": description,
        "name": f"projects/{PROJECT}/serviceAccounts/{email}",
        "uniqueId": "1",
        "projectId": PROJECT,
    }
