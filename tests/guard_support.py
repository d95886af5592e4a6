"""Guard test seams: blocklists written by the project's own emitter, and an in-process approval queue."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.approvals.base import FINAL, AlreadyDecided, ApprovalRequest, QueueError
from auditor.emit.blocklist import render


def identity(
    provider: str,
    ident: str,
    name: str,
    deny: Sequence[str] = (),
    approval: Sequence[str] = (),
    allow: Sequence[str] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "provider": provider,
        "account": "123456789012",
        "identity": ident,
        "name": name,
        "deny": [
            {
                "rule": "test-destroy",
                "category": "destroy",
                "severity": "critical",
                "reason": "deletes things",
                "permissions": list(deny),
            }
        ]
        if deny
        else [],
        "require_approval": [
            {
                "permission": p,
                "rule": "test-gate",
                "category": "destroy",
                "severity": "high",
                "reason": "used destructive",
                "evidence": "used",
                "calls": 1,
                "last_used": "2026-11-01T00:00:00Z",
            }
            for p in approval
        ],
    }
    if allow is not None:
        entry["allow"] = list(allow)
    return entry


def write_blocklist(path: Path, *identities: dict[str, Any]) -> Path:
    document = {
        "version": 1,
        "generated_by": "auditor test",
        "generated_at": "2026-12-01T00:00:00Z",
        "identities": list(identities),
        "complete": True,
    }
    path.write_text(render(document), encoding="utf-8")
    return path


AGENT = "arn:aws:iam::123456789012:role/agents/s3-agent"


def s3_blocklist(path: Path) -> Path:
    return write_blocklist(
        path,
        identity("aws", AGENT, "s3-agent", deny=["s3:DeleteBucket"], approval=["s3:DeleteObject"]),
    )


class MemoryQueue:
    """The approval-queue protocol in memory; ``answer`` (request -> (approve, approver) or None)
    decides each request from another thread right after it is submitted."""

    url = "memory://"

    def __init__(self, answer: Callable[[ApprovalRequest], tuple[bool, str] | None] | None = None) -> None:
        self.requests: dict[str, ApprovalRequest] = {}
        self.answer = answer
        self._ids = itertools.count(1)
        self._changed = threading.Condition()

    def submit(self, *, identity, kind, target, resource, params, rule, reason, timeout_s) -> ApprovalRequest:
        now = datetime.now(UTC)
        request = ApprovalRequest(
            id=f"r{next(self._ids)}",
            identity=identity,
            kind=kind,
            target=target,
            resource=resource,
            params=params,
            rule=rule,
            reason=reason,
            requester="test",
            created=now,
            expires=now + timedelta(seconds=timeout_s),
        )
        with self._changed:
            self.requests[request.id] = request
        if self.answer is not None:
            decision = self.answer(request)
            if decision is not None:
                threading.Thread(
                    target=self.decide, args=(request.id, decision[0]), kwargs={"approver": decision[1]}
                ).start()
        return request

    def get(self, request_id: str) -> ApprovalRequest:
        with self._changed:
            if request_id not in self.requests:
                raise QueueError(f"no approval request {request_id}")
            request = self.requests[request_id]
            if request.status == "pending" and datetime.now(UTC) >= request.expires:
                request = self.requests[request_id] = replace(request, status="expired")
            return request

    def wait(self, request_id: str, timeout_s: float | None = None) -> ApprovalRequest:
        deadline = None if timeout_s is None else datetime.now(UTC) + timedelta(seconds=timeout_s)
        with self._changed:
            while True:
                request = self.get(request_id)
                now = datetime.now(UTC)
                if request.status in FINAL or (deadline is not None and now >= deadline):
                    return request
                until = min(request.expires, deadline) if deadline is not None else request.expires
                self._changed.wait(max((until - now).total_seconds(), 0.001))

    def decide(self, request_id: str, approve: bool, *, approver: str, note: str | None = None) -> ApprovalRequest:
        with self._changed:
            request = self.get(request_id)
            if request.status != "pending":
                raise AlreadyDecided(f"{request_id} is {request.status}")
            status = "approved" if approve else "denied"
            decided = replace(request, status=status, decided_by=approver, decided_at=datetime.now(UTC), note=note)
            self.requests[request_id] = decided
            self._changed.notify_all()
            return decided

    def list(self, status: str | None = "pending") -> list[ApprovalRequest]:
        with self._changed:
            return [self.get(i) for i in self.requests if status is None or self.get(i).status == status]

    def close(self) -> None:
        pass
