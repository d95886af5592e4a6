"""The approval queue in PostgreSQL, for agents and approvers on several hosts (psycopg 3).

A decision is one ``UPDATE ... WHERE id = %s AND status = 'pending' RETURNING``: the row lock makes
a racing second decider re-read the row, find it decided and change nothing. Times are the
server's clock (``now()``), so hosts with skewed clocks agree on expiry. Every change sends
``NOTIFY auditor_approvals, '<id>'``; ``wait`` listens on its own connection and wakes on it, and
re-reads at least every second in case a notification is lost. The schema is created under an
advisory lock, so many processes starting at once create it once. A process that dies mid-decision
loses its connection and the server rolls its transaction back: no lock outlives it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from auditor.approvals.base import FINAL, ApprovalRequest, Kind, QueueError, Status
from auditor.approvals.records import STATUSES, already_decided, checked_request, new_id, requester, unknown
from auditor.approvals.redact import redact_text

try:
    import psycopg
    from psycopg.types.json import Jsonb
except ImportError:  # pragma: no cover - the error names the extra to install
    psycopg = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
CHANNEL = "auditor_approvals"
SCHEMA_LOCK = 0x61756469746F72  # "auditor": the advisory lock held while creating the schema
POLL_S = 1.0
CONNECT_TIMEOUT_S = 10
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS auditor_approval_meta (key text PRIMARY KEY, value text NOT NULL)",
    """CREATE TABLE IF NOT EXISTS auditor_approvals (
        id text PRIMARY KEY,
        identity text NOT NULL,
        kind text NOT NULL CHECK (kind IN ('action', 'tool')),
        target text NOT NULL,
        resource text,
        params jsonb NOT NULL,
        rule text NOT NULL,
        reason text NOT NULL,
        requester text NOT NULL,
        created timestamptz NOT NULL,
        expires timestamptz NOT NULL,
        status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
        decided_by text,
        decided_at timestamptz,
        note text,
        extra jsonb NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS auditor_approvals_by_status ON auditor_approvals (status, created)",
)
COLUMNS = (
    "id, identity, kind, target, resource, params, rule, reason, requester, created, expires, status, "
    "decided_by, decided_at, note, extra"
)
EXPIRE = (
    "UPDATE auditor_approvals SET status = 'expired', decided_at = expires "
    "WHERE status = 'pending' AND expires <= now()"
)


class PostgresQueue:
    """:class:`~auditor.approvals.base.ApprovalQueue` on a PostgreSQL database (``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        if psycopg is None:
            raise QueueError("a postgresql:// approval queue needs psycopg: pip install 'auditor[postgres]'")
        self._dsn = url
        self.url = redact_text(url)  # never the password
        self._lock = threading.RLock()
        self._conn = self._connect()
        try:
            self._create_schema()
        except BaseException:
            self._conn.close()
            raise

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except psycopg.Error as exc:
            raise QueueError(f"cannot reach the approval queue at {self.url}: {_first_line(exc)}") from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """The connection inside one transaction, under the lock; errors as one-line QueueError."""
        with self._lock:
            try:
                with self._conn.transaction():
                    yield self._conn
            except psycopg.Error as exc:
                raise QueueError(f"approval queue {self.url}: {_first_line(exc)}") from None

    def _create_schema(self) -> None:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
            for statement in SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM auditor_approval_meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO auditor_approval_meta (key, value) VALUES ('schema', %s)", (str(SCHEMA_VERSION),)
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise QueueError(
                    f"approval queue {self.url} has schema version {row[0]}, this auditor reads {SCHEMA_VERSION} "
                    "(use the auditor version that created it)"
                )

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
    ) -> ApprovalRequest:
        fields = checked_request(
            identity=identity, kind=kind, target=target, rule=rule, reason=reason, timeout_s=timeout_s, params=params
        )
        with self._transaction() as conn:
            for _ in range(8):
                row = conn.execute(
                    "INSERT INTO auditor_approvals (id, identity, kind, target, resource, params, rule, reason,"
                    " requester, created, expires) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now(),"
                    f" now() + make_interval(secs => %s)) ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}",
                    (
                        new_id(),
                        fields["identity"],
                        kind,
                        fields["target"],
                        None if resource is None else redact_text(resource),
                        Jsonb(fields["params"]),
                        rule,
                        fields["reason"],
                        requester(),
                        float(timeout_s),
                    ),
                ).fetchone()
                if row is not None:
                    break
            else:
                raise QueueError(f"approval queue {self.url}: could not draw a fresh request id")
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, row[0]))
        return _request(row)

    def _expire(self, conn: Any, request_id: str | None = None) -> None:
        """Mark pending requests past their expiry (one, or all) expired, and tell the waiters."""
        where, args = ("", ()) if request_id is None else (" AND id = %s", (request_id,))
        for (expired,) in conn.execute(EXPIRE + where + " RETURNING id", args).fetchall():
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, expired))

    def get(self, request_id: str) -> ApprovalRequest:
        with self._transaction() as conn:
            self._expire(conn, request_id)
            row = conn.execute(f"SELECT {COLUMNS} FROM auditor_approvals WHERE id = %s", (request_id,)).fetchone()
        if row is None:
            raise unknown(request_id, self.url)
        return _request(row)

    def decide(self, request_id: str, approve: bool, *, approver: str, note: str | None = None) -> ApprovalRequest:
        if not isinstance(approver, str) or not approver.strip():
            raise QueueError("an approval decision needs the approver's name")
        with self._transaction() as conn:
            self._expire(conn, request_id)
            row = conn.execute(
                "UPDATE auditor_approvals SET status = %s, decided_by = %s, decided_at = now(), note = %s "
                f"WHERE id = %s AND status = 'pending' RETURNING {COLUMNS}",
                (
                    "approved" if approve else "denied",
                    approver,
                    None if note is None else redact_text(note),
                    request_id,
                ),
            ).fetchone()
            if row is not None:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, request_id))
                return _request(row)
            current = conn.execute(f"SELECT {COLUMNS} FROM auditor_approvals WHERE id = %s", (request_id,)).fetchone()
        if current is None:
            raise unknown(request_id, self.url)
        raise already_decided(_request(current))

    def wait(self, request_id: str, timeout_s: float | None = None) -> ApprovalRequest:
        deadline = None if timeout_s is None else time.monotonic() + max(timeout_s, 0.0)
        listener = self._connect()  # its own connection: waits in several threads do not queue up
        try:
            listener.execute(f"LISTEN {CHANNEL}")
            while True:
                request = self.get(request_id)
                if request.status in FINAL or (deadline is not None and time.monotonic() >= deadline):
                    return request
                left = min(POLL_S, max((request.expires - datetime.now(UTC)).total_seconds(), 0.0) + 0.001)
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                end = time.monotonic() + max(left, 0.0)
                while (remaining := end - time.monotonic()) > 0:
                    notes = list(listener.notifies(timeout=remaining, stop_after=1))
                    if any(n.payload == request_id for n in notes):
                        break
        except psycopg.Error as exc:
            raise QueueError(f"approval queue {self.url}: {_first_line(exc)}") from None
        finally:
            listener.close()

    def list(self, status: Status | None = "pending") -> list[ApprovalRequest]:
        if status is not None and status not in STATUSES:
            raise QueueError(f"unknown approval status {status!r} (one of {', '.join(STATUSES)})")
        where, args = ("", ()) if status is None else (" WHERE status = %s", (status,))
        with self._transaction() as conn:
            self._expire(conn)
            rows = conn.execute(f"SELECT {COLUMNS} FROM auditor_approvals{where} ORDER BY created, id", args).fetchall()
        return [_request(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


def _request(row: tuple[Any, ...]) -> ApprovalRequest:
    (rid, identity, kind, target, resource, params, rule, reason, asker, created, expires, status) = row[:12]
    decided_by, decided_at, note, extra = row[12:]
    return ApprovalRequest(
        id=rid,
        identity=identity,
        kind=kind,
        target=target,
        resource=resource,
        params=params,
        rule=rule,
        reason=reason,
        requester=asker,
        created=created.astimezone(UTC),
        expires=expires.astimezone(UTC),
        status=status,
        decided_by=decided_by,
        decided_at=None if decided_at is None else decided_at.astimezone(UTC),
        note=note,
        extra=extra,
    )
