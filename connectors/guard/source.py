"""The guard's decision log as a usage source: what the guard let through was used, what it refused
was a denied attempt.

Evidence only: the source grants nothing, names no catalog, and does not move the window (the
cloud's own logs choose it) nor claim coverage (a permission the log does not name stays
``unused`` only if the cloud's logs say so). Per record, ``allowed`` and ``approved`` count one
call of each permission the call needed (state ``used``, evidence ``guard-log``); ``blocked``,
``denied`` and ``expired`` one refused attempt (``denied``); ``approval_requested`` nothing (its
answer is its own record). Records outside the window or of identities not audited are ignored; a
permission the provider's catalog does not know is listed as unmapped, never guessed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from auditor import model
from auditor.catalog import Catalog
from auditor.connectors.base import Evidence, GrantSet, Progress, UsageRequest, WindowEnd, no_progress
from auditor.errors import InputError
from auditor.ruleset import Rules
from auditor.selection import AgentSelector
from auditor.timefmt import normalize_iso, parse_iso

SCHEMA = "auditor.guard-log/v1"
USED = frozenset({"allowed", "approved"})
REFUSED = frozenset({"blocked", "denied", "expired"})
DECISIONS = USED | REFUSED | {"approval_requested"}
EVIDENCE = "guard-log"
MAX_RESOURCES = 50


@dataclass(frozen=True)
class Decision:
    provider: str
    account: str | None
    identity: str
    time: datetime
    permissions: tuple[str, ...]
    outcome: str  # "used" | "denied"
    resource: str | None


@dataclass
class GuardLog:
    """Every decision of the files, checked line by line; what could not be read, counted."""

    paths: tuple[Path, ...]
    decisions: list[Decision] = field(default_factory=list)
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)  # (file, reason) -> lines

    @classmethod
    def read(cls, paths: Sequence[Path]) -> GuardLog:
        log = cls(tuple(paths))
        for path in paths:
            try:
                with path.open("rb") as fh:
                    for line in fh:
                        log._add(path, line)
            except FileNotFoundError:
                raise InputError(f"{path}: guard decision log not found", "pass the guard's log= file") from None
            except OSError as exc:
                raise InputError(f"{path}: cannot read the guard decision log: {exc.strerror}") from None
        return log

    def _add(self, path: Path, line: bytes) -> None:
        if not line.strip():
            return
        try:
            record = json.loads(line)
        except ValueError:
            self._skip(path, "not JSON (a truncated or corrupted line)")
            return
        problem = _problem(record)
        if problem:
            self._skip(path, problem)
            return
        decision = record["decision"]
        if decision not in USED | REFUSED:
            return
        self.decisions.append(
            Decision(
                provider=record["provider"],
                account=record.get("account") if isinstance(record.get("account"), str) else None,
                identity=record["identity"],
                time=parse_iso(normalize_iso(record["time"]) or ""),
                permissions=tuple(record["permissions"]),
                outcome="used" if decision in USED else "denied",
                resource=record.get("resource") if isinstance(record.get("resource"), str) else None,
            )
        )

    def _skip(self, path: Path, reason: str) -> None:
        key = (str(path), reason)
        self.skipped[key] = self.skipped.get(key, 0) + 1

    def providers(self) -> list[str]:
        return sorted({d.provider for d in self.decisions})


def _problem(record: Any) -> str | None:
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return f"not an {SCHEMA} record"
    for key in ("provider", "identity", "decision", "time"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"no {key}"
    if record["decision"] not in DECISIONS:
        return f"unknown decision {record['decision'][:40]!r}"
    permissions = record.get("permissions")
    if not isinstance(permissions, list) or not all(isinstance(p, str) and p for p in permissions):
        return "permissions is not a list of names"
    if normalize_iso(record["time"]) is None:
        return "time is not an ISO-8601 time"
    return None


@dataclass
class GuardLogSource:
    """The decisions of one provider in the guard's logs."""

    provider: str
    log: GuardLog
    name: str = "guard"

    def grants(self, selector: AgentSelector, rules: Rules) -> GrantSet:
        return GrantSet()

    def catalog(self, grants: GrantSet, rules: Rules) -> Catalog:
        return Catalog(self.provider, {}, "guard decision log")

    def collected_at(self) -> datetime | None:
        return None

    def window_end(self, cap: datetime, rules: Rules, workers: int | None) -> WindowEnd:
        return WindowEnd(None, "the guard's decision log (evidence only)")

    def inputs(self) -> tuple[str, ...]:
        return tuple(str(p) for p in self.log.paths) if self.provider == self.log.providers()[0] else ()

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        window = request.window
        counts: dict[tuple[str | None, str, str, str], list[Any]] = {}
        unmapped: dict[tuple[str | None, str, str], int] = defaultdict(int)
        for d in self._mine(request.agents):
            if not window.start <= d.time <= window.end:
                continue
            for permission in d.permissions:
                action = request.catalog.canonical(permission)
                if action is None:
                    unmapped[(d.account, d.identity, permission)] += 1
                    continue
                entry = counts.setdefault((d.account, d.identity, action, d.outcome), [0, d.time, d.time, set()])
                entry[0] += 1
                entry[1] = min(entry[1], d.time)
                entry[2] = max(entry[2], d.time)
                if d.resource and len(entry[3]) < MAX_RESOURCES:
                    entry[3].add(d.resource)
        usage = [
            {
                "provider": self.provider,
                "account": account,
                "identity": identity,
                "action": action,
                "outcome": outcome,
                "evidence": EVIDENCE,
                "calls": calls,
                "first_seen": first,
                "last_seen": last,
                "resources": sorted(resources),
                "all_with_resource": None,  # the guard does not say what narrowing may rely on
            }
            for (account, identity, action, outcome), (calls, first, last, resources) in counts.items()
        ]
        missing = [
            {
                "provider": self.provider,
                "account": account,
                "identity": identity,
                "event": f"guard:{permission}",
                "calls": calls,
                "reason": f"not a permission of the {self.provider} catalog",
            }
            for (account, identity, permission), calls in unmapped.items()
        ]
        gaps = [
            model.gap(self.provider, None, path, f"guard decision log: {reason}", "warning", n)
            for (path, reason), n in self.log.skipped.items()
        ]
        return Evidence(
            usage=model.frame(usage, model.USAGE),
            unmapped=model.frame(missing, model.UNMAPPED),
            gaps=model.frame(gaps if self.provider == self.log.providers()[0] else [], model.GAPS),
        )

    def _mine(self, agents: Iterable[str]) -> Iterable[Decision]:
        wanted = set(agents)
        return (d for d in self.log.decisions if d.provider == self.provider and d.identity in wanted)
