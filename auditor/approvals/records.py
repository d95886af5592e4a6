"""What every backend shares: request ids, the asking process, checked inputs, messages."""

from __future__ import annotations

import base64
import math
import os
import secrets
import socket
from datetime import UTC, datetime
from typing import Any

from auditor.approvals.base import AlreadyDecided, ApprovalRequest, QueueError
from auditor.approvals.redact import redact, redact_text
from auditor.timefmt import iso_utc

ID_CHARS = 10  # 50 random bits in base32: short to type, unguessable enough for an approver's queue
KINDS = ("action", "tool")
STATUSES = ("pending", "approved", "denied", "expired")
MAX_TIMEOUT_S = 30 * 24 * 3600.0


def new_id() -> str:
    """A fresh request id: 10 lowercase base32 characters (no 0/1/8/9 to misread)."""
    return base64.b32encode(secrets.token_bytes(7)).decode()[:ID_CHARS].lower()


def requester() -> str:
    """``host:pid`` of the process asking."""
    return f"{socket.gethostname()}:{os.getpid()}"


def checked_request(
    *, identity: str, kind: str, target: str, rule: str, reason: str, timeout_s: float, params: Any
) -> dict[str, Any]:
    """The submitted fields validated, params (and free text) redacted again, defensively."""
    if kind not in KINDS:
        raise QueueError(f"approval request kind {kind!r} is not one of {', '.join(KINDS)}")
    for name, value in (("identity", identity), ("target", target), ("rule", rule)):
        if not isinstance(value, str) or not value.strip():
            raise QueueError(f"approval request {name} must be a non-empty string, got {value!r}")
    if not isinstance(timeout_s, int | float) or not math.isfinite(timeout_s) or not 0 <= timeout_s <= MAX_TIMEOUT_S:
        raise QueueError(f"approval timeout must be between 0 and {MAX_TIMEOUT_S:.0f} seconds, got {timeout_s!r}")
    if not isinstance(params, dict):
        raise QueueError(f"approval request params must be a mapping, got {type(params).__name__}")
    return {"params": redact(params), "reason": redact_text(str(reason)), "identity": identity, "target": target}


def epoch(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


def already_decided(request: ApprovalRequest) -> AlreadyDecided:
    """The error for deciding ``request`` again: who decided it and when."""
    when = iso_utc(request.decided_at) if request.decided_at else "an unknown time"
    if request.status == "expired":
        return AlreadyDecided(f"request {request.id} expired unanswered at {when}; nothing was changed")
    return AlreadyDecided(
        f"request {request.id} was already {request.status} by {request.decided_by} at {when}; nothing was changed"
    )


def unknown(request_id: str, where: str) -> QueueError:
    return QueueError(f"no approval request {request_id!r} in {where} (see `auditor approvals list --all`)")
