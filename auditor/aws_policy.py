"""AWS IAM policy evaluation (the project's own): does a set of policy documents allow an action?

Used to check generated policies (tests, property checks) and the auditor's own permissions.
Conditions are not evaluated: ``conditions="assume-true"`` treats conditional statements as
applying, ``"assume-false"`` as not applying.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from auditor.matching import glob_regex, resource_matches

Decision = Literal["allow", "explicit-deny", "implicit-deny"]


def _list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def statement_applies(statement: Mapping[str, Any], action: str, resource: str, conditions: str) -> bool:
    if "Condition" in statement and conditions == "assume-false":
        return False
    if "NotAction" in statement:
        action_ok = not any(glob_regex(p).fullmatch(action) for p in _list(statement["NotAction"]))
    else:
        action_ok = any(glob_regex(p).fullmatch(action) for p in _list(statement.get("Action")))
    if not action_ok:
        return False
    if "NotResource" in statement:
        return not any(resource_matches(p, resource) for p in _list(statement["NotResource"]))
    return any(resource_matches(p, resource) for p in _list(statement.get("Resource")))


def _statements(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    raw = document.get("Statement", [])
    return raw if isinstance(raw, list) else [raw]


def evaluate(
    documents: Iterable[Mapping[str, Any]],
    action: str,
    resource: str = "*",
    conditions: Literal["assume-true", "assume-false"] = "assume-true",
) -> Decision:
    """Identity-policy evaluation: an explicit Deny wins, then any Allow, else implicit deny."""
    allowed = False
    for document in documents:
        for statement in _statements(document):
            if not statement_applies(statement, action, resource, conditions):
                continue
            if statement.get("Effect") == "Deny":
                return "explicit-deny"
            allowed = True
    return "allow" if allowed else "implicit-deny"


def allows(documents: Iterable[Mapping[str, Any]], action: str, resource: str = "*") -> bool:
    return evaluate(documents, action, resource) == "allow"
