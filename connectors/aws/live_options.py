"""What a live AWS collection is asked to do (no SDK import: the CLI builds these at start-up)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from auditor.selection import AgentSelector


class UsageSource(StrEnum):
    auto = "auto"  # athena with --athena-table, else the trail bucket, else LookupEvents
    s3 = "s3"
    lookup_events = "lookup-events"
    athena = "athena"
    none = "none"


class AdvisorScope(StrEnum):
    agents = "agents"
    all = "all"
    off = "off"


@dataclass(frozen=True)
class LiveOptions:
    """Where and how to collect. Defaults collect one account with auto-detected usage."""

    profile: str | None = None
    region: str | None = None
    endpoints: tuple[str, ...] = ()
    org: bool = False
    accounts: tuple[str, ...] = ()
    assume_role: str | None = None
    external_id: str | None = None
    usage: UsageSource = UsageSource.auto
    bucket: str | None = None
    prefix: str | None = None
    trail: str | None = None
    regions: tuple[str, ...] = ()
    athena_table: str | None = None
    athena_workgroup: str = "primary"
    athena_output: str | None = None
    access_advisor: AdvisorScope = AdvisorScope.agents
    download_workers: int = 32
    account_workers: int = 8
    session_hook: Callable[..., Any] | None = None  # auditor.connectors.aws.session.SessionHook

    @property
    def usage_mode(self) -> UsageSource:
        if self.usage is UsageSource.auto and self.athena_table:
            return UsageSource.athena
        return self.usage

    def manifest(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "region": self.region,
            "org": self.org,
            "accounts": list(self.accounts),
            "assume_role": self.assume_role,
            "usage": self.usage_mode.value,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "trail": self.trail,
            "regions": list(self.regions),
            "athena_table": self.athena_table,
            "athena_workgroup": self.athena_workgroup,
            "athena_output": self.athena_output,
            "access_advisor": self.access_advisor.value,
        }


@dataclass(frozen=True)
class CollectRequest:
    """The window to collect and which identities are agents (for Access Advisor)."""

    days: int = 30
    until: datetime | None = None
    selector: AgentSelector = field(default_factory=AgentSelector)
