"""The human approval queue: irreversible calls wait here until someone approves or denies them.

:func:`open_queue` picks the backend from a URL: a plain path or ``sqlite:///abs/path`` is one
SQLite file on this host; ``postgresql://...`` (or ``postgres://...``) is a PostgreSQL database
shared by a fleet (psycopg 3, imported only then). Without a location, :func:`default_location`
is ``$AUDITOR_APPROVALS`` or ``$XDG_STATE_HOME/auditor/approvals.db`` (``~/.local/state/...``).
Standard library only at import time: agent processes load this module.
"""

from __future__ import annotations

import os
from pathlib import Path

from auditor.approvals.base import FINAL, AlreadyDecided, ApprovalQueue, ApprovalRequest, QueueError, Status
from auditor.approvals.redact import redact

__all__ = [
    "FINAL",
    "AlreadyDecided",
    "ApprovalQueue",
    "ApprovalRequest",
    "QueueError",
    "Status",
    "default_location",
    "open_queue",
    "redact",
]

ENV = "AUDITOR_APPROVALS"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def default_location() -> str:
    """Where the queue is when none is named: ``$AUDITOR_APPROVALS``, else the user's state folder."""
    if os.environ.get(ENV):
        return os.environ[ENV]
    state = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return str(state / "auditor" / "approvals.db")


def open_queue(url_or_path: str | os.PathLike[str] | None = None) -> ApprovalQueue:
    """The queue at ``url_or_path`` (default: :func:`default_location`), created if missing."""
    location = os.fspath(url_or_path) if url_or_path is not None else default_location()
    if location.startswith(POSTGRES_SCHEMES):
        from auditor.approvals.postgres import PostgresQueue

        return PostgresQueue(location)
    if location.startswith("sqlite://"):
        if not location.startswith("sqlite:///"):
            raise QueueError(f"approval queue URL {location!r}: write sqlite:///ABSOLUTE/PATH")
        location = location.removeprefix("sqlite://")
    elif "://" in location:
        scheme = location.split("://", 1)[0]
        raise QueueError(
            f"approval queue URL scheme {scheme!r} is unknown (use a path, sqlite:///PATH or postgresql://)"
        )
    if not location:
        raise QueueError("approval queue location is empty (set AUDITOR_APPROVALS or pass --queue)")
    from auditor.approvals.sqlite import SqliteQueue

    path = Path(location).expanduser()
    if url_or_path is None and not os.environ.get(ENV):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return SqliteQueue(path)
