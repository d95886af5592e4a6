"""``report.sarif``: the findings as SARIF 2.1.0, for GitHub / GitLab code scanning.

Each finding is a result on the file where its identity's IAM is defined when the user maps
identities to their Terraform / CloudFormation files (``--iac-map``), else on the least-privilege
policy this audit wrote for it. Severities map to SARIF levels and to the ``security-severity``
score code scanning ranks by; accepted exceptions are SARIF suppressions; fingerprints are stable
from month to month (identity, kind and rule, not the changing list of permissions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.drift import finding_key
from auditor.errors import InputError
from auditor.ruleset import load_yaml

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
SCORES = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}
OUTPUT_BASE = "AUDITOR_OUT"
MAX_PERMISSIONS = 50  # per result: code scanning caps upload sizes
#: What each kind of finding means, for the rule descriptions code scanning shows.
KINDS = {
    "unused-destructive": "Destructive permission granted and never used: remove it and block it in code.",
    "used-destructive": "Destructive permission the agent uses: route it through a human approval gate.",
    "privilege-escalation": "The identity can raise its own privileges.",
    "admin-grant": "Administrator grant to an agent identity.",
    "wildcard-grant": "Wildcard or broad grant.",
    "unused-grant": "Granted permissions never used in the window.",
    "unobservable-grant": "Granted permissions the logs cannot show (kept, never called unused).",
    "denied-attempt": "The agent attempted calls its grants refused.",
    "used-not-granted": "Permissions used without an identity-policy grant.",
    "dormant-identity": "Agent identity with no activity in the window.",
    "unmapped-events": "Calls that could not be mapped to a permission.",
    "ignored-restriction": "A deny or ask rule the enforcement point accepts but never applies: it blocks nothing.",
    "ignored-rule": "An allow rule the enforcement point accepts but never applies.",
    "wider-than-used": "An allow rule wider than its use in the window: narrow it.",
}


@dataclass(frozen=True)
class IacLocation:
    """Where an identity's IAM is defined in the user's repository (an entry of ``--iac-map``)."""

    identity: str  # ARN, name or glob
    file: str
    line: int | None = None

    def covers(self, finding: dict[str, Any]) -> bool:
        return fnmatchcase(finding["identity"], self.identity) or fnmatchcase(finding["name"], self.identity)


def load_map(path: Path) -> tuple[IacLocation, ...]:
    """Read ``--iac-map``: ``version: 1`` and ``locations: [{identity, file, line}]``."""
    if not path.is_file():
        raise InputError(f"{path}: no such IaC map", "pass --iac-map FILE (YAML, see the README)")
    try:
        doc = load_yaml(path)
    except Exception as exc:  # the shared YAML reader's one line, as an input error
        raise InputError(str(exc), "fix the IaC map") from None
    if doc.get("version") != 1 or not isinstance(doc.get("locations"), list):
        raise InputError(f"{path}: expected 'version: 1' and a 'locations' list", "see the README's SARIF section")
    found = []
    for index, raw in enumerate(doc["locations"]):
        where = f"{path} entry {index + 1}"
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("identity"), str)
            or not isinstance(raw.get("file"), str)
        ):
            raise InputError(f"{where}: needs 'identity' (ARN, name or glob) and 'file'", "fix the entry")
        line = raw.get("line")
        if line is not None and (not isinstance(line, int) or isinstance(line, bool) or line < 1):
            raise InputError(f"{where}: 'line' must be a positive number", "fix the entry")
        if Path(raw["file"]).is_absolute() or ".." in Path(raw["file"]).parts:
            raise InputError(f"{where}: 'file' must be relative to the repository root", "fix the entry")
        found.append(IacLocation(raw["identity"], raw["file"], line))
    return tuple(found)


def _fingerprint(finding: dict[str, Any]) -> str:
    parts = [*finding_key(finding)]
    if finding["kind"] == "used-destructive":  # one finding per permission
        parts += finding["actions"]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _location(finding: dict[str, Any], iac: Sequence[IacLocation], policy_files: dict[tuple[str, str], str]):
    logical = [{"name": finding["name"], "fullyQualifiedName": finding["identity"], "kind": "resource"}]
    mapped = next((m for m in iac if m.covers(finding)), None)
    if mapped is not None:
        physical: dict[str, Any] = {"artifactLocation": {"uri": mapped.file, "uriBaseId": "%SRCROOT%"}}
        if mapped.line is not None:
            physical["region"] = {"startLine": mapped.line}
        return {"physicalLocation": physical, "logicalLocations": logical}
    policy = policy_files.get((finding["provider"], finding["identity"]))
    if policy is None:
        return {"logicalLocations": logical}
    return {
        "physicalLocation": {"artifactLocation": {"uri": policy, "uriBaseId": OUTPUT_BASE}},
        "logicalLocations": logical,
    }


def _result(finding: dict[str, Any], rule_index: int, location: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ruleId": finding["kind"],
        "ruleIndex": rule_index,
        "level": LEVELS[finding["severity"]],
        "message": {"text": f"{finding['name']} ({finding['provider']}): {finding['title']}"},
        "locations": [location],
        "partialFingerprints": {"auditorFinding/v1": _fingerprint(finding)},
        "properties": {
            "severity": finding["severity"],
            "identity": finding["identity"],
            "account": finding["account"],
            "permissions": finding["actions"][:MAX_PERMISSIONS],  # the whole list is in report.json
            "permissions_total": len(finding["actions"]),
            "rule": finding.get("rule"),
        },
    }
    exception = finding.get("exception") or {}
    if exception.get("status") == "accepted":
        justification = f"{exception['reason']} (until {exception['expires']}; {exception['entry']})"
        result["suppressions"] = [{"kind": "external", "status": "accepted", "justification": justification}]
    return result


def render(document: dict[str, Any], out: Path, iac: Sequence[IacLocation] = ()) -> dict[str, Any]:
    """The SARIF log of a report document (``report.json``) written to ``out``."""
    kinds = sorted({f["kind"] for f in document["findings"]})
    index = {kind: i for i, kind in enumerate(kinds)}
    worst: dict[str, str] = {}
    for finding in document["findings"]:
        current = worst.get(finding["kind"])
        if current is None or float(SCORES[finding["severity"]]) > float(SCORES[current]):
            worst[finding["kind"]] = finding["severity"]
    policy_files = {
        (i["provider"], i["identity"]): i["policy_files"][0] for i in document["identities"] if i["policy_files"]
    }
    rules = [
        {
            "id": kind,
            "name": "".join(part.capitalize() for part in kind.split("-")),
            "shortDescription": {"text": KINDS.get(kind, kind)},
            "helpUri": "https://github.com/auditor/auditor#findings",
            "defaultConfiguration": {"level": LEVELS[worst[kind]]},
            "properties": {"tags": ["security", "iam", "least-privilege"], "security-severity": SCORES[worst[kind]]},
        }
        for kind in kinds
    ]
    results = [_result(f, index[f["kind"]], _location(f, iac, policy_files)) for f in document["findings"]]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "auditor",
                        "version": __version__,
                        "informationUri": "https://github.com/auditor/auditor",
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {OUTPUT_BASE: {"uri": out.absolute().as_uri() + "/"}},
                "automationDetails": {"id": f"auditor/permission-scope/{document['generated_at']}"},
                "results": results,
            }
        ],
    }
