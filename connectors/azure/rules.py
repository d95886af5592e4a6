"""Azure facts kept as data in ``rules/azure/operations.yaml``: access level of an operation, what the
Activity Log cannot show, admin roles and how a record says "refused by authorization"."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from auditor.errors import RuleError
from auditor.matching import any_glob_regex
from auditor.ruleset import Rules, mapping, strings

FILE = "azure/operations.yaml"


@dataclass(frozen=True)
class AzureRules:
    access_levels: tuple[tuple[str, re.Pattern[str]], ...]
    data_action_reason: str
    unobservable: tuple[tuple[tuple[str, ...], str], ...]
    admin_roles: frozenset[str]  # role definition GUIDs, lower-case
    authorization_failures: frozenset[str]  # lower-case
    _levels: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, rules: Rules) -> AzureRules:
        return rules.view("azure.operations", cls._build)

    @classmethod
    def _build(cls, rules: Rules) -> AzureRules:
        levels: list[tuple[str, list[str]]] = []
        unobservable: list[tuple[tuple[str, ...], str]] = []
        data_reason = ""
        admin: set[str] = set()
        failures: set[str] = set()
        for path, doc in reversed(rules.layers(FILE)):  # later layers are tried first
            for level, globs in mapping(doc.get("access_levels"), f"{path} access_levels").items():
                levels.append((str(level), strings(globs, f"{path} access_levels.{level}")))
            section = mapping(doc.get("unobservable"), f"{path} unobservable")
            data_reason = data_reason or str(section.get("data_actions") or "")
            for index, entry in enumerate(section.get("patterns") or []):
                where = f"{path} unobservable.patterns[{index}]"
                entry = mapping(entry, where)
                if not isinstance(entry.get("reason"), str):
                    raise RuleError(f"{where}: needs 'actions' and 'reason'")
                unobservable.append((tuple(strings(entry.get("actions"), where, required=True)), entry["reason"]))
            admin.update(a.lower() for a in strings(doc.get("admin_roles"), f"{path} admin_roles"))
            failures.update(f.lower() for f in strings(doc.get("authorization_failures"), f"{path} failures"))
        if not data_reason:
            raise RuleError(f"{FILE}: unobservable.data_actions (the reason shown for dataActions) is missing")
        return cls(
            tuple((level, any_glob_regex(globs)) for level, globs in levels),
            data_reason,
            tuple(unobservable),
            frozenset(admin),
            frozenset(failures),
        )

    def access_level(self, operation: str) -> str:
        level = self._levels.get(operation)
        if level is None:
            level = next((name for name, regex in self.access_levels if regex.fullmatch(operation)), "Write")
            self._levels[operation] = level
        return level

    def is_authorization_failure(self, *signals: Any) -> bool:
        """Whether any of a record's status signals (subStatus, statusCode, resultSignature, error
        code) names an authorization failure."""
        for signal in signals:
            if not isinstance(signal, str) or not signal:
                continue
            words = {w for w in re.split(r"[^A-Za-z0-9]+", signal.lower()) if w}
            if words & self.authorization_failures:
                return True
        return False
