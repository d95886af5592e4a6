"""What the guard raises: refusals the agent sees at the call, and set-up problems the user fixes."""

from __future__ import annotations

from auditor.errors import AuditorError


class GuardConfigError(AuditorError):
    """The guard cannot be set up (missing or invalid blocklist, unknown identity, unwritable log):
    it refuses to start rather than let everything through."""


class GuardRefusal(PermissionError):
    """A call the guard did not let through. Nothing was sent."""

    def __init__(self, message: str, *, identity: str, action: str, rule: str | None, reason: str) -> None:
        super().__init__(message)
        self.identity = identity
        self.action = action
        self.rule = rule
        self.reason = reason


class ActionBlocked(GuardRefusal):
    """The blocklist denies the call (or it needs an approval no queue can give)."""


class ActionDenied(GuardRefusal):
    """The call needed a human's approval and did not get it: denied, or expired unanswered."""

    def __init__(
        self,
        message: str,
        *,
        identity: str,
        action: str,
        rule: str | None,
        reason: str,
        request_id: str,
        status: str,
        approver: str | None = None,
        note: str | None = None,
    ) -> None:
        super().__init__(message, identity=identity, action=action, rule=rule, reason=reason)
        self.request_id = request_id
        self.status = status
        self.approver = approver
        self.note = note
