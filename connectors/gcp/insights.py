"""IAM Recommender insights (``google.iam.policy.Insight``) as an extra usage signal.

The recommender sees use from Google's aggregated access data, including reads and data-plane
calls that Cloud Audit Logs miss when Data Access logs are off. Its ``exercisedPermissions`` become
usage rows with evidence ``recommender`` (one observation each: the insight gives no call count or
time). Its observation period (90 days by default) is longer than the audit window, so it can only
keep a permission, which is the safe side. ``inferredPermissions`` are predictions, not use: ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditor.connectors.gcp.iam import principal_of
from auditor.errors import InputError
from auditor.fileio import load_json

EVIDENCE = "recommender"


def _items(doc: Any, origin: str) -> list[Any]:
    if isinstance(doc, dict) and isinstance(doc.get("insights"), list):
        return doc["insights"]
    if isinstance(doc, list):
        return doc
    raise InputError(
        f"{origin}: not IAM Recommender insights (expected a list or {{'insights': [...]}})",
        "export them with `gcloud recommender insights list --insight-type=google.iam.policy.Insight "
        "--project=P --location=global --format=json`",
    )


def usage_rows(paths: Sequence[Path], project: str, keep: frozenset[str]) -> list[dict[str, Any]]:
    """USAGE rows (outcome used, evidence recommender) for the principals in ``keep``."""
    seen: dict[tuple[str, str], None] = {}
    for path in paths:
        for item in _items(load_json(path, "IAM Recommender insights JSON"), str(path)):
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, dict):
                continue
            principal = principal_of(str(content.get("member", "")))
            if principal is None or principal.identity not in keep:
                continue
            for exercised in content.get("exercisedPermissions") or []:
                permission = exercised.get("permission") if isinstance(exercised, dict) else None
                if isinstance(permission, str) and permission:
                    seen[(principal.identity, permission)] = None
    return [
        {
            "provider": "gcp",
            "account": project,
            "identity": identity,
            "action": permission,
            "outcome": "used",
            "evidence": EVIDENCE,
            "calls": 1,
            "first_seen": None,
            "last_seen": None,
            "resources": [],
            "all_with_resource": False,
        }
        for identity, permission in seen
    ]
