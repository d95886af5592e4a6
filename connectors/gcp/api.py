"""Calling Google APIs for the live GCP collector: retries with backoff on quota and transient
errors, and one-line errors that name the permission that was missing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from auditor.errors import ConnectorError

T = TypeVar("T")
_PERMISSION_IN_MESSAGE = re.compile(r"[Pp]ermission[s]? '?([a-z][a-zA-Z0-9]*(?:\.[a-zA-Z0-9]+){2,})'?")


@dataclass(frozen=True)
class Need:
    """What one API call needs: the permission it checks, on which resource, and a role that has it."""

    permission: str
    resource: str
    role: str


def _exceptions() -> Any:
    from google.api_core import exceptions

    return exceptions


def _retryable(exc: Exception) -> bool:
    ex = _exceptions()
    return isinstance(
        exc,
        ex.TooManyRequests
        | ex.ResourceExhausted
        | ex.ServiceUnavailable
        | ex.InternalServerError
        | ex.GatewayTimeout
        | ex.DeadlineExceeded,
    )


def denied(exc: Exception) -> bool:
    ex = _exceptions()
    return isinstance(exc, ex.PermissionDenied | ex.Forbidden)


def as_connector_error(exc: Exception, need: Need) -> ConnectorError:
    """One line for the user: which permission was denied where, or what else went wrong."""
    ex = _exceptions()
    message = getattr(exc, "message", None) or str(exc)
    if denied(exc):
        found = _PERMISSION_IN_MESSAGE.search(message)
        permission = found.group(1) if found else need.permission
        return ConnectorError(
            f"{permission} denied on {need.resource}",
            f"grant {need.role} (or a role with {permission}) to the identity running auditor",
        )
    if isinstance(exc, ex.Unauthorized | ex.Unauthenticated):
        return ConnectorError(
            f"Google rejected the credentials calling for {need.resource}",
            "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
        )
    if isinstance(exc, ex.NotFound):
        return ConnectorError(f"{need.resource} not found ({message.splitlines()[0] if message else 'HTTP 404'})")
    code = getattr(exc, "code", None)
    return ConnectorError(f"{need.permission} call on {need.resource} failed: HTTP {code}: {message.splitlines()[0]}")


@dataclass
class Caller:
    """Runs API calls with exponential backoff on quota / transient errors (``retries`` attempts)."""

    retries: int = 6
    sleep: Callable[[float], None] = time.sleep
    base_delay: float = 1.0
    waited: list[float] = field(default_factory=list)

    def call(self, need: Need, fn: Callable[[], T]) -> T:
        from google.api_core.exceptions import GoogleAPICallError

        for attempt in range(self.retries + 1):
            try:
                return fn()
            except GoogleAPICallError as exc:
                if _retryable(exc) and attempt < self.retries:
                    delay = min(self.base_delay * 2**attempt, 60.0)
                    self.waited.append(delay)
                    self.sleep(delay)
                    continue
                raise as_connector_error(exc, need) from None
        raise AssertionError("unreachable")

    def optional(self, need: Need, fn: Callable[[], T], gaps: list[dict[str, Any]], what: str) -> T | None:
        """Like :meth:`call`, but a denied or missing API becomes a gap row (the audit goes on)."""
        try:
            return self.call(need, fn)
        except ConnectorError as exc:
            gaps.append(
                {"scope": need.resource, "reason": f"{what} not collected: {exc.one_line()}", "severity": "warning"}
            )
            return None
