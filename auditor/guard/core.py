"""The guard: one identity's blocklist applied to every call the agent makes, before it is sent.

``check`` is the one decision point; the boto3 hook, the Azure pipeline policy and the tool
decorators all end there. Allowed calls cost a dict lookup and a log line (without parameters:
only refused and approval decisions carry them, redacted). Denied calls raise
:class:`ActionBlocked`. Approval calls are submitted to the queue and wait for a human: approved,
the call goes on unchanged; denied or expired, :class:`ActionDenied`. Without a queue, an approval
call is blocked: the guard fails closed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from auditor.approvals.redact import redact
from auditor.guard import blocklist
from auditor.guard.errors import ActionBlocked, ActionDenied, GuardConfigError
from auditor.guard.log import DecisionLog
from auditor.guard.policy import ALLOWED, IdentityPolicy, Verdict

if TYPE_CHECKING:
    from auditor.approvals.base import ApprovalQueue

Kind = Literal["action", "tool"]
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_APPROVAL_TIMEOUT_S = 900.0
_RANK = {"allow": 0, "require_approval": 1, "deny": 2}


class Guard:
    """Enforces one blocklist identity's ``deny`` and ``require_approval`` inside the agent."""

    def __init__(
        self,
        policy: IdentityPolicy,
        *,
        queue: ApprovalQueue | str | os.PathLike[str] | None = None,
        approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT_S,
        log: DecisionLog | str | os.PathLike[str] | None = None,
    ) -> None:
        if approval_timeout <= 0:
            raise ValueError("approval_timeout must be positive (seconds)")
        self.policy = policy
        self.approval_timeout = float(approval_timeout)
        self._queue_spec = queue
        self._queue: ApprovalQueue | None = None if queue is None or isinstance(queue, str | os.PathLike) else queue
        self.log = log if isinstance(log, DecisionLog) or log is None else DecisionLog(log)
        self._aws: Any = None  # the boto3 hook, built on the first protect()

    @classmethod
    def from_blocklist(
        cls,
        path: str | os.PathLike[str],
        identity: str,
        *,
        provider: str | None = None,
        queue: ApprovalQueue | str | os.PathLike[str] | None = None,
        approval_timeout: float = DEFAULT_APPROVAL_TIMEOUT_S,
        log: DecisionLog | str | os.PathLike[str] | None = None,
    ) -> Guard:
        """The guard of ``identity`` (its id or name; ``provider`` to tell same-named ones apart)."""
        if not isinstance(identity, str) or not identity.strip():
            raise GuardConfigError(
                f"{path}: identity={identity!r} names no identity",
                "pass the agent's identity id or name as it appears in the blocklist",
            )
        document = blocklist.load(path)
        policy = blocklist.select(document, identity, provider, str(path))
        return cls(policy, queue=queue, approval_timeout=approval_timeout, log=log)

    # -- decisions ---------------------------------------------------------------------------

    def decide(self, permission: str) -> Verdict:
        """What the blocklist says about ``permission``; no side effect."""
        return self.policy.decide(permission)

    def check(
        self,
        permission: str | Sequence[str],
        *,
        resource: str | None = None,
        params: Mapping[str, Any] | None = None,
        kind: Kind = "action",
        via: str = "check",
        operation: str | None = None,
    ) -> None:
        """Let the call needing ``permission`` (one name, or all the names one call needs; none for
        a call that needs no permission) go on, or raise. Returns only when the call may be sent."""
        names = (permission,) if isinstance(permission, str) else tuple(permission)
        verdicts = [(name, self.policy.decide(name)) for name in names]
        worst = max(verdicts, key=lambda nv: _RANK[nv[1].decision], default=("", ALLOWED))
        base = {
            "provider": self.policy.provider,
            "account": self.policy.account,
            "identity": self.policy.identity,
            "kind": kind,
            "target": " + ".join(names),
            "permissions": list(names),
            "resource": resource,
            "via": via,
            **({"operation": operation} if operation else {}),
        }
        if worst[1].decision == "allow":
            self._record(base, "allowed", None, params)
            return
        name, verdict = worst
        if verdict.decision == "deny":
            who = self.policy.name or self.policy.identity
            raise self._blocked(
                base, name, verdict, params, f"{who}: {name} is blocked ({verdict.rule}): {verdict.reason}"
            )
        gated = [n for n, v in verdicts if v.decision == "require_approval"]
        self._approve(base, " + ".join(gated), verdict, params)

    def _approve(self, base: dict[str, Any], target: str, verdict: Verdict, params: Mapping[str, Any] | None) -> None:
        from auditor.approvals.base import QueueError

        who = self.policy.name or self.policy.identity
        try:
            queue = self._open_queue()
        except QueueError as exc:  # unreachable, corrupt, a bad URL: refused and logged like any refusal
            raise self._queue_failed(base, target, verdict, params, exc) from exc
        if queue is None:
            reason = f"{verdict.reason}; it needs a human's approval and the guard has no approval queue"
            raise self._blocked(
                base,
                target,
                Verdict("deny", verdict.rule, reason, verdict.severity),
                params,
                f"{who}: {target} needs approval ({verdict.rule}) and no approval queue is configured",
            )
        safe = redact(dict(params or {}))
        try:
            request = queue.submit(
                identity=self.policy.identity,
                kind=base["kind"],
                target=target,
                resource=base["resource"],
                params=safe,
                rule=verdict.rule or "",
                reason=verdict.reason,
                timeout_s=self.approval_timeout,
            )
            self._record({**base, "request_id": request.id}, "approval_requested", verdict, safe)
            answer = queue.wait(request.id, timeout_s=self.approval_timeout + 5.0)
        except QueueError as exc:
            raise self._queue_failed(base, target, verdict, safe, exc) from exc
        status = answer.status if answer.status in ("approved", "denied") else "expired"
        extra = {"request_id": answer.id, "approver": answer.decided_by, "note": answer.note}
        self._record({**base, **extra}, status, verdict, safe)
        if status == "approved":
            return
        by = f" by {answer.decided_by}" if answer.decided_by else ""
        note = f": {answer.note}" if answer.note else ""
        raise ActionDenied(
            f"{who}: {target} was {status}{by}{note} (approval request {answer.id})",
            identity=self.policy.identity,
            action=target,
            rule=verdict.rule,
            reason=verdict.reason,
            request_id=answer.id,
            status=status,
            approver=answer.decided_by,
            note=answer.note,
        )

    def _queue_failed(
        self, base: dict[str, Any], target: str, verdict: Verdict, params: Mapping[str, Any] | None, exc: Exception
    ) -> ActionBlocked:
        who = self.policy.name or self.policy.identity
        return self._blocked(
            base,
            target,
            Verdict("deny", verdict.rule, f"{verdict.reason}; the approval queue failed: {exc}", verdict.severity),
            params,
            f"{who}: {target} needs approval and the approval queue failed: {exc}",
        )

    def _blocked(
        self, base: dict[str, Any], target: str, verdict: Verdict, params: Mapping[str, Any] | None, message: str
    ) -> ActionBlocked:
        """Log a refused call and return the exception the caller raises."""
        self._record(base, "blocked", verdict, params)
        return ActionBlocked(
            message, identity=self.policy.identity, action=target, rule=verdict.rule, reason=verdict.reason
        )

    def _open_queue(self) -> ApprovalQueue | None:
        if self._queue is None and self._queue_spec is not None:
            from auditor.approvals import open_queue

            self._queue = open_queue(self._queue_spec)  # type: ignore[arg-type]
        return self._queue

    def _record(
        self, base: dict[str, Any], decision: str, verdict: Verdict | None, params: Mapping[str, Any] | None
    ) -> None:
        if self.log is None:
            return
        record = {**base, "decision": decision}
        if verdict is not None:
            record.update(rule=verdict.rule, reason=verdict.reason, severity=verdict.severity)
        if decision != "allowed":  # the hot path logs what it needs (permissions, resource), not parameters
            record["params"] = redact(dict(params)) if params else {}
        self.log.write(record)

    # -- enforcement points --------------------------------------------------------------------

    def protect(self, target: Any) -> Any:
        """Guard a boto3 ``Session`` (and every client made from it afterwards), a client, a
        resource, or the ``boto3`` module (its default session). Returns ``target``."""
        from auditor.guard import aws

        if self._aws is None:
            self._aws = aws.BotoHook(self)
        self._aws.attach(target)
        return target

    def azure_policy(self) -> Any:
        """An azure-core pipeline policy applying this guard to every ARM request of a client:
        ``SomeManagementClient(cred, sub, per_call_policies=[guard.azure_policy()])``."""
        from auditor.guard.azure import GuardPolicy

        return GuardPolicy(self)

    def tool(self, name: str | None = None, *, server: str | None = None) -> Callable[[F], F]:
        """Decorator for a tool function (sync or async): ``@guard.tool("delete_invoice")``."""
        from auditor.guard.tools import tool_decorator

        return tool_decorator(self, name, server)

    def mcp_handler(self, server: str) -> Callable[[F], F]:
        """Decorator for an MCP server's ``call_tool(name, arguments)`` handler: every tool call
        of ``server`` is checked as ``<server>.<name>``."""
        from auditor.guard.tools import mcp_decorator

        return mcp_decorator(self, server)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
        if self._queue is not None and self._queue_spec is not None and not hasattr(self._queue_spec, "submit"):
            self._queue.close()
