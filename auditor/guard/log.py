"""The guard's decision log: one JSON object per line, appended atomically, secrets redacted.

Every record is written with one ``write(2)`` on a descriptor opened ``O_APPEND``, so lines from
many threads and processes never interleave. A record too long for that (parameters of megabytes)
keeps its fields and replaces ``params`` with a note. Schema:
``auditor/schemas/guard-log.schema.json``; ``auditor audit --guard-log FILE`` reads it back as
usage.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from auditor.guard.errors import GuardConfigError

SCHEMA = "auditor.guard-log/v1"
#: Decisions a record can carry.
DECISIONS = ("allowed", "blocked", "approval_requested", "approved", "denied", "expired")
MAX_LINE = 32 * 1024  # bytes; longer records drop their parameters


class DecisionLog:
    """Appends decision records to ``path`` (created ``0600``)."""

    def __init__(self, path: str | os.PathLike[str], clock: Callable[[], datetime] | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise GuardConfigError(
                f"{self.path}: cannot open the guard's decision log: {exc.strerror}", "pick a writable path"
            ) from None
        self._host = socket.gethostname()
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        """Append one record (``time``, ``schema``, ``host`` and ``pid`` are added)."""
        full = {
            "schema": SCHEMA,
            "time": self._clock().astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            **record,
            "host": self._host,
            "pid": os.getpid(),
        }
        line = json.dumps(full, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
        if len(line) > MAX_LINE:
            full["params"] = {"…": f"[parameters left out: the record was {len(line)} bytes]"}
            line = json.dumps(full, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
            if len(line) > MAX_LINE:
                full["resource"] = None
                full["reason"] = full.get("reason", "")[:1000]
                line = json.dumps(full, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"
        os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
