"""What an approval queue is: the contract between the guard (which asks and waits) and the human
(who answers through ``auditor approvals``), whatever stores the requests.

Every backend (SQLite in WAL mode for one host, PostgreSQL for a fleet) implements
:class:`ApprovalQueue`; :func:`auditor.approvals.open_queue` picks one from a URL. The module
imports only the standard library: the guard loads it inside the agent's process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Status = Literal["pending", "approved", "denied", "expired"]
Kind = Literal["action", "tool"]
FINAL: frozenset[str] = frozenset({"approved", "denied", "expired"})


class QueueError(Exception):
    """The queue cannot be opened or answered (bad URL, unreachable server, unknown request)."""


class AlreadyDecided(QueueError):
    """A decision was asked for a request that is no longer pending: nothing was changed."""


@dataclass(frozen=True)
class ApprovalRequest:
    """One call waiting for (or answered by) a human. ``params`` are already redacted."""

    id: str
    identity: str
    kind: Kind
    target: str  # the IAM action / ARM operation / tool name
    resource: str | None
    params: dict[str, Any]
    rule: str
    reason: str
    requester: str  # host:pid of the agent process that asked
    created: datetime
    expires: datetime
    status: Status = "pending"
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class ApprovalQueue(Protocol):
    """A durable queue of approval requests, safe for many agent processes and approvers at once.

    A request is decided at most once (``decide`` on a non-pending request raises
    :class:`AlreadyDecided`); a pending request past ``expires`` is ``expired`` for every reader.
    """

    url: str

    def submit(
        self,
        *,
        identity: str,
        kind: Kind,
        target: str,
        resource: str | None,
        params: dict[str, Any],
        rule: str,
        reason: str,
        timeout_s: float,
    ) -> ApprovalRequest: ...

    def wait(self, request_id: str, timeout_s: float | None = None) -> ApprovalRequest:
        """Block until the request is final (approved, denied, expired) or ``timeout_s`` passes;
        return its current state (still ``pending`` only if ``timeout_s`` ran out first)."""
        ...

    def decide(self, request_id: str, approve: bool, *, approver: str, note: str | None = None) -> ApprovalRequest: ...

    def get(self, request_id: str) -> ApprovalRequest: ...

    def list(self, status: Status | None = "pending") -> list[ApprovalRequest]: ...

    def close(self) -> None: ...
