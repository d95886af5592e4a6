"""Approval-queue test seams: a queue on each backend, and a real PostgreSQL server per xdist worker.

The server is Debian's (or any) PostgreSQL: ``initdb`` + ``pg_ctl`` from PATH or
``/usr/lib/postgresql/*/bin``, in a private temp folder, on a free loopback port with its unix
socket in that folder; as root it runs as the ``postgres`` (else ``nobody``) user, since initdb
refuses root. Each test gets a fresh database. Without PostgreSQL binaries the PostgreSQL cases
skip, unless ``AUDITOR_REQUIRE_POSTGRES`` is set (CI), where they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auditor.approvals import ApprovalQueue, ApprovalRequest, open_queue

BACKENDS = ["sqlite", "postgres"]


def submit(queue: ApprovalQueue, **overrides: Any) -> ApprovalRequest:
    fields: dict[str, Any] = {
        "identity": "agent-bot",
        "kind": "action",
        "target": "s3:DeleteBucket",
        "resource": "arn:aws:s3:::prod-logs",
        "params": {"Bucket": "prod-logs"},
        "rule": "aws-destroy-verbs",
        "reason": "deletes a bucket",
        "timeout_s": 3600,
    }
    return queue.submit(**(fields | overrides))


def postgres_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway PostgreSQL cluster; :meth:`database` makes a fresh database and returns its URL."""

    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="auditor-pg-"))
        self.pg_ctl = pg_ctl
        self.user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = next((n for n in ("postgres", "nobody") if _exists(n)), None)
            if account is None:
                pytest.fail("running as root with no postgres/nobody user to run PostgreSQL as")
            entry = pwd.getpwnam(account)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.data = self.root / "data"
        self._run([initdb, "-D", str(self.data), "-U", "auditor", "--auth=trust", "-E", "UTF8", "--no-sync"])
        for _ in range(5):
            self.port = free_port()
            options = f"-F -p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            started = subprocess.run(
                [pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "-t", "60", "start"],
                capture_output=True,
                text=True,
                cwd=self.root,
                **self.user,
            )
            if started.returncode == 0:
                break
        else:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else started.stderr
            pytest.fail(f"PostgreSQL did not start: {log[-2000:]}")
        self.base = f"postgresql://auditor@127.0.0.1:{self.port}"

    def _run(self, command: list[str]) -> None:
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root, **self.user)
        if done.returncode != 0:
            pytest.fail(f"{command[0]} failed: {done.stderr[-2000:]}")

    def database(self) -> str:
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(f"{self.base}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.base}/{name}"

    def stop(self) -> None:
        subprocess.run(
            [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
            cwd=self.root,
            **self.user,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def _exists(account: str) -> bool:
    try:
        pwd.getpwnam(account)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    missing = [n for n, b in (("initdb", initdb), ("pg_ctl", pg_ctl)) if b is None]
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing.append("psycopg (pip install 'auditor[postgres]')")
    if missing:
        reason = f"PostgreSQL tests need {', '.join(missing)}"
        if os.environ.get("AUDITOR_REQUIRE_POSTGRES"):
            pytest.fail(f"{reason} (AUDITOR_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)
    server = PostgresServer(initdb, pg_ctl)  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty queue on each backend: a SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "approvals.db")
    return request.getfixturevalue("postgres_server").database()


@pytest.fixture
def queue(queue_url: str) -> Iterator[ApprovalQueue]:
    opened = open_queue(queue_url)
    yield opened
    opened.close()
