"""Shared test seams: run the library on sources, and a fake source built from frames.

``audit(*sources, ...)`` is :func:`auditor.audit.run_audit` with test defaults (one worker, the
shipped rules parsed once). :class:`FakeSource` answers the core's questions from rows given in the
test, so the diff engine, findings and emitters run in milliseconds, without files.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from auditor import model, ruleset
from auditor.audit import AuditConfig, AuditResult, run_audit
from auditor.catalog import Catalog, aws_catalog
from auditor.connectors.base import (
    Evidence,
    GrantSet,
    LogStats,
    Progress,
    ScopeStats,
    UsageRequest,
    WindowEnd,
    no_progress,
)
from auditor.selection import AgentSelector

pytest_plugins = ["approvals_support"]  # the approval-queue fixtures (a queue per backend, a PostgreSQL server)

RULES = ruleset.load()
END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: talks to a local test server (moto, fake Google / Azure APIs)")


@dataclass(frozen=True)
class CliRun:
    """What one in-process ``auditor`` run printed and returned."""

    code: int
    out: str
    err: str


def run_cli(*args: str | Path) -> CliRun:
    """``auditor ARGS`` in this process: :func:`auditor.cli.main` with ``sys.argv`` set, its exit code
    and what it printed (the same entry point the installed command calls)."""
    from auditor.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["auditor", *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return CliRun(code, out.getvalue(), err.getvalue())


def one_line_error(run: CliRun, code: int = 2) -> str:
    """The single stderr line of a run that failed with ``code`` (no traceback)."""
    assert run.code == code, (run.code, run.out, run.err)
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.err, run.err
    return lines[0]


def audit(*sources: Any, **options: Any) -> AuditResult:
    """``run_audit`` over ``sources`` with test defaults (override any AuditConfig field)."""
    settings = {"rules": RULES, "workers": 1, "now": END, **options}
    return run_audit(AuditConfig(sources=tuple(sources), **settings))


# ----------------------------------------------------------------------------- frame builders


def identity(
    arn: str, account: str = "123456789012", provider: str = "aws", agent: bool = True, kind: str = "role", **extra: Any
) -> dict[str, Any]:
    name = extra.pop("name", arn.rsplit("/", 1)[-1])
    return {
        "provider": provider,
        "account": account,
        "identity": arn,
        "name": name,
        "kind": kind,
        "path": "/",
        "is_agent": agent,
        "selected_by": "test" if agent else None,
        "tags": [],
        "service_linked": False,
        "disabled": False,
        "groups": [],
        "instance_profiles": [],
        "notes": [],
        **extra,
    }


def grant(
    arn: str,
    actions: str | list[str],
    resources: str | list[str] = "*",
    effect: str = "Allow",
    account: str = "123456789012",
    provider: str = "aws",
    **extra: Any,
) -> dict[str, Any]:
    source = extra.pop("source", "arn:aws:iam::aws:policy/Test")
    return {
        "provider": provider,
        "account": account,
        "identity": arn,
        "statement_id": extra.pop("statement_id", f"{source}#{actions}#{resources}#{effect}"),
        "layer": extra.pop("layer", "identity"),
        "effect": effect,
        "actions": [actions] if isinstance(actions, str) else actions,
        "not_action": extra.pop("not_action", False),
        "resources": [resources] if isinstance(resources, str) else resources,
        "not_resource": extra.pop("not_resource", False),
        "condition": extra.pop("condition", None),
        "source": source,
        "source_kind": extra.pop("source_kind", "aws-managed"),
        "policy": extra.pop("policy", source),
        "scope": extra.pop("scope", arn),
        **extra,
    }


def use(
    arn: str,
    action: str,
    calls: int = 1,
    outcome: str = "used",
    account: str = "123456789012",
    provider: str = "aws",
    when: datetime = END,
    resources: Iterable[str] = (),
) -> dict[str, Any]:
    return {
        "provider": provider,
        "account": account,
        "identity": arn,
        "action": action,
        "outcome": outcome,
        "evidence": "test",
        "calls": calls,
        "first_seen": when,
        "last_seen": when,
        "resources": list(resources),
        "all_with_resource": bool(resources),
    }


@dataclass
class FakeSource:
    """A source whose answers are the rows given: the seam for engine and emitter tests."""

    identity_rows: list[dict[str, Any]]
    grant_rows: list[dict[str, Any]] = field(default_factory=list)
    usage_rows: list[dict[str, Any]] = field(default_factory=list)
    observability_rows: list[dict[str, Any]] = field(default_factory=list)
    trust_rows: list[dict[str, Any]] = field(default_factory=list)
    managed_rows: list[dict[str, Any]] = field(default_factory=list)
    catalog_of: Catalog | None = None
    newest: datetime | None = END
    days_covered: Mapping[str, Iterable[str]] | None = None  # account -> days with events (default: all)
    provider: str = "aws"
    name: str = "fake"

    def grants(self, selector: AgentSelector, rules: ruleset.Rules) -> GrantSet:
        return GrantSet(
            identities=model.frame(self.identity_rows, model.IDENTITIES),
            grants=model.frame(self.grant_rows, model.GRANTS),
            trusts=model.frame(self.trust_rows, model.TRUSTS),
            managed=model.frame(self.managed_rows, model.MANAGED),
        )

    def catalog(self, grants: GrantSet, rules: ruleset.Rules) -> Catalog:
        return self.catalog_of or aws_catalog()

    def collected_at(self) -> datetime | None:
        return None

    def window_end(self, cap: datetime, rules: ruleset.Rules, workers: int | None) -> WindowEnd:
        return WindowEnd(self.newest, "fake newest event")

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        start = request.window.start.date()
        all_days = [
            (start + timedelta(days=i)).isoformat() for i in range((request.window.end.date() - start).days + 1)
        ]
        accounts = {row["account"] for row in self.identity_rows}
        days = self.days_covered or dict.fromkeys(accounts, all_days)
        stats = LogStats(
            self.provider,
            "fake logs",
            {
                a: ScopeStats(dict.fromkeys(d, 1), f"{min(d)}T00:00:00Z", f"{max(d)}T00:00:00Z", 1, 1)
                for a, d in ((a, list(d)) for a, d in days.items())
                if d
            },
        )
        return Evidence(
            usage=model.frame(self.usage_rows, model.USAGE),
            observability=model.frame(self.observability_rows, model.OBSERVABILITY),
            logs=(stats,),
        )

    def inputs(self) -> tuple[str, ...]:
        return ("fake",)
