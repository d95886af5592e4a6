"""The approval queue in one SQLite file (WAL mode): many agent processes and approvers at once.

A decision is one ``BEGIN IMMEDIATE`` transaction whose ``UPDATE ... WHERE status = 'pending'``
changes one row or none, so a request is decided exactly once whoever races for it. A pending
request past its ``expires`` is marked ``expired`` by the first reader or decider that sees it, so
an agent killed mid-wait leaves a request that expires, not one stuck pending. ``wait`` watches
``PRAGMA data_version`` (which moves when another connection commits) and reads the row only then.
No lock outlives its process: SQLite's locks are released by the OS when a process dies.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from auditor.approvals.base import FINAL, ApprovalRequest, Kind, QueueError, Status
from auditor.approvals.records import STATUSES, already_decided, checked_request, epoch, new_id, requester, unknown
from auditor.approvals.redact import redact_text

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('action', 'tool')),
    target TEXT NOT NULL,
    resource TEXT,
    params TEXT NOT NULL,
    rule TEXT NOT NULL,
    reason TEXT NOT NULL,
    requester TEXT NOT NULL,
    created REAL NOT NULL,
    expires REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    decided_by TEXT,
    decided_at REAL,
    note TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS requests_by_status ON requests (status, created);
"""
COLUMNS = (
    "id, identity, kind, target, resource, params, rule, reason, requester, created, expires, status, "
    "decided_by, decided_at, note, extra"
)
EXPIRE = "UPDATE requests SET status = 'expired', decided_at = expires WHERE status = 'pending' AND expires <= ?"


class SqliteQueue:
    """:class:`~auditor.approvals.base.ApprovalQueue` on one SQLite file (created 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).absolute()
        self.url = f"sqlite:///{self.path}"
        self._lock = threading.RLock()
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise QueueError(
                f"cannot create approval queue {self.path}: {exc.strerror} (check the folder exists and is writable)"
            ) from None
        try:
            conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open approval queue {self.path}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise QueueError(f"approval queue {self.path} cannot use WAL mode (got {mode}); use a local disk")
            self._create_schema(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise QueueError(f"{self.path} is not a usable approval queue: {exc}") from None
        except QueueError:
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                raise QueueError(f"{self.path} is a SQLite database but not an approval queue; choose another path")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise QueueError(
                    f"approval queue {self.path} has schema version {row[0]}, this auditor reads {SCHEMA_VERSION} "
                    "(use the auditor version that created it)"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _errors(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite errors as one-line :class:`QueueError`."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise QueueError(f"approval queue {self.path}: {exc}") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._errors() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
        created = time.time()
        with self._errors() as conn:
            for _ in range(8):
                request_id = new_id()
                try:
                    conn.execute(
                        "INSERT INTO requests (id, identity, kind, target, resource, params, rule, reason, requester,"
                        " created, expires) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            request_id,
                            fields["identity"],
                            kind,
                            fields["target"],
                            None if resource is None else redact_text(resource),
                            json.dumps(fields["params"], sort_keys=True),
                            rule,
                            fields["reason"],
                            requester(),
                            created,
                            created + timeout_s,
                        ),
                    )
                    break
                except sqlite3.IntegrityError:
                    continue
            else:
                raise QueueError(f"approval queue {self.path}: could not draw a fresh request id")
        return self.get(request_id)

    def get(self, request_id: str) -> ApprovalRequest:
        with self._errors() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise unknown(request_id, str(self.path))
            request = _request(row)
            if request.status == "pending" and row[10] <= time.time():
                with self._write() as conn:
                    conn.execute(EXPIRE + " AND id = ?", (time.time(), request_id))
                    row = conn.execute(f"SELECT {COLUMNS} FROM requests WHERE id = ?", (request_id,)).fetchone()
                request = _request(row)
        return request

    def decide(self, request_id: str, approve: bool, *, approver: str, note: str | None = None) -> ApprovalRequest:
        if not isinstance(approver, str) or not approver.strip():
            raise QueueError("an approval decision needs the approver's name")
        status = "approved" if approve else "denied"
        with self._write() as conn:
            now = time.time()
            conn.execute(EXPIRE + " AND id = ?", (now, request_id))
            changed = conn.execute(
                "UPDATE requests SET status = ?, decided_by = ?, decided_at = ?, note = ? "
                "WHERE id = ? AND status = 'pending'",
                (status, approver, now, None if note is None else redact_text(note), request_id),
            ).rowcount
            row = conn.execute(f"SELECT {COLUMNS} FROM requests WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise unknown(request_id, str(self.path))
        request = _request(row)
        if changed != 1:
            raise already_decided(request)
        return request

    def wait(self, request_id: str, timeout_s: float | None = None) -> ApprovalRequest:
        deadline = None if timeout_s is None else time.monotonic() + max(timeout_s, 0.0)
        with self._errors() as conn:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
        while True:
            request = self.get(request_id)
            if request.status in FINAL or (deadline is not None and time.monotonic() >= deadline):
                return request
            wake = time.monotonic() + max(request.expires.timestamp() - time.time(), 0.0) + 0.001
            if deadline is not None:
                wake = min(wake, deadline)
            delay = 0.005
            while (left := wake - time.monotonic()) > 0:
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.2)
                with self._errors() as conn:
                    now_version = conn.execute("PRAGMA data_version").fetchone()[0]
                if now_version != version:
                    version = now_version
                    break

    def list(self, status: Status | None = "pending") -> list[ApprovalRequest]:
        if status is not None and status not in STATUSES:
            raise QueueError(f"unknown approval status {status!r} (one of {', '.join(STATUSES)})")
        with self._errors() as conn:
            now = time.time()
            if conn.execute(
                "SELECT 1 FROM requests WHERE status = 'pending' AND expires <= ? LIMIT 1", (now,)
            ).fetchone():
                with self._write() as conn:
                    conn.execute(EXPIRE, (now,))
            where, args = ("", ()) if status is None else (" WHERE status = ?", (status,))
            rows = conn.execute(f"SELECT {COLUMNS} FROM requests{where} ORDER BY created, id", args).fetchall()
        return [_request(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _request(row: tuple[Any, ...]) -> ApprovalRequest:
    (rid, identity, kind, target, resource, params, rule, reason, asker, created, expires, status) = row[:12]
    decided_by, decided_at, note, extra = row[12:]
    return ApprovalRequest(
        id=rid,
        identity=identity,
        kind=kind,
        target=target,
        resource=resource,
        params=json.loads(params),
        rule=rule,
        reason=reason,
        requester=asker,
        created=epoch(created),
        expires=epoch(expires),
        status=status,
        decided_by=decided_by,
        decided_at=None if decided_at is None else epoch(decided_at),
        note=note,
        extra=json.loads(extra),
    )
