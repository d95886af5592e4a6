"""The guard inside Azure SDK clients: an azure-core pipeline policy checking every request's ARM
operation (:mod:`auditor.guard.arm`) before it is sent.

Pass it as ``per_call_policies=[guard.azure_policy()]`` to any management client: it runs once per
call, before the retry policy (so a retried request is not asked for approval twice) and before
authentication (a blocked call does not even fetch a token). A request whose operation cannot be
derived is blocked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from auditor.guard import arm
from auditor.guard.errors import ActionBlocked

if TYPE_CHECKING:
    from auditor.guard.core import Guard

MAX_BODY = 64 * 1024


class GuardPolicy(SansIOHTTPPolicy):
    """Applies one guard to every request of the pipeline it is in."""

    def __init__(self, guard: Guard) -> None:
        super().__init__()
        self.guard = guard

    def on_request(self, request: PipelineRequest) -> None:
        http = request.http_request
        operation = arm.operation(http.method, http.url)
        parts = urlsplit(http.url)
        if operation is None:
            policy = self.guard.policy
            raise ActionBlocked(
                f"{policy.name or policy.identity}: {http.method} {parts.path} is not an Azure Resource Manager "
                "operation the guard can name: not sent",
                identity=policy.identity,
                action=f"{http.method} {parts.path}",
                rule=None,
                reason="the ARM operation cannot be derived from the request",
            )
        self.guard.check(
            operation,
            resource=parts.path,
            params=_params(http, parts.query),
            via="azure",
            operation=f"{http.method} {parts.path}",
        )


def _params(http: Any, query: str) -> dict[str, Any]:
    params: dict[str, Any] = dict(parse_qsl(query))
    body = getattr(http, "body", None) or getattr(http, "content", None)
    if isinstance(body, bytes | str) and 0 < len(body) <= MAX_BODY:
        try:
            params["body"] = json.loads(body)
        except ValueError:
            params["body"] = f"[{len(body)} bytes]"
    return params
