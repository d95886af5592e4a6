"""Calling Azure for the live collector: one client configuration (credential, endpoints, TLS
trust, bounded retries that honour ``Retry-After``) and one-line errors naming the permission the
collector lacks.

ARM answers a refused call with HTTP 403 and ``{"error": {"code": "AuthorizationFailed", "message":
"The client '…' … does not have authorization to perform action 'Microsoft.…/read' over scope '…'"}}``;
the action is taken from that message (else the one the call needs) and the fix is always the
shipped collector role, ``auditor/azure-auditor-role.json``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from auditor.errors import ConnectorError

T = TypeVar("T")

ROLE_FILE = "auditor/azure-auditor-role.json"
ARM = "https://management.azure.com"
GRAPH = "https://graph.microsoft.com"
LOG_ANALYTICS = "https://api.loganalytics.io"
_ACTION_IN_MESSAGE = re.compile(r"perform action '([^']+)'")
#: What the login hint says when no credential works.
LOGIN_HINT = "run `az login`, or set AZURE_CLIENT_ID / AZURE_TENANT_ID / AZURE_CLIENT_SECRET, or use a managed identity"


@dataclass(frozen=True)
class Need:
    """What one call needs: the RBAC action (or Graph permission) it checks, and on which scope."""

    action: str
    scope: str
    graph: bool = False  # a Microsoft Graph permission, not an Azure RBAC action

    def fix(self) -> str:
        if self.graph:
            return f"grant the identity running auditor the Microsoft Graph permission {self.action}"
        return f"assign the collector role: see {ROLE_FILE}"


@dataclass(frozen=True)
class Endpoints:
    """Service base URLs; tests point all three at one local HTTPS server."""

    arm: str = ARM
    graph: str = GRAPH
    log_analytics: str = LOG_ANALYTICS

    @classmethod
    def single(cls, base: str) -> Endpoints:
        base = base.rstrip("/")
        return cls(base, base, base)


@dataclass(frozen=True)
class Transport:
    """Credential and pipeline settings every client of one collection shares."""

    credential: Any  # azure.core.credentials.TokenCredential
    endpoints: Endpoints = field(default_factory=Endpoints)
    ca_bundle: Path | None = None  # trust this CA file instead of the system store (test servers)
    retries: int = 8  # attempts after the first, on 408/429/5xx (and any answer with Retry-After)
    backoff: float = 0.8  # seconds, doubled per retry when the server says nothing
    backoff_max: float = 60.0
    timeout: int = 600  # seconds for one call including its retries

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any azure-core based client (the SDK's own RetryPolicy does the retries)."""
        from azure.core.pipeline.policies import RetryPolicy

        options: dict[str, Any] = {
            "retry_policy": RetryPolicy(
                retry_total=self.retries,
                retry_backoff_factor=self.backoff,
                retry_backoff_max=self.backoff_max,
                timeout=self.timeout,
            )
        }
        if self.ca_bundle is not None:
            options["connection_verify"] = str(self.ca_bundle)
        return options


def _error_body(exc: Any) -> tuple[str, str]:
    """(code, message) of an ARM / Graph / Log Analytics error answer."""
    error = getattr(exc, "error", None)
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or "")
    if not code or not message:
        try:
            body = exc.response.json() if exc.response is not None else {}
        except (ValueError, AttributeError):
            body = {}
        inner = body.get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            code = code or str(inner.get("code") or "")
            message = message or str(inner.get("message") or "")
    return code, message or str(getattr(exc, "message", "") or exc)


def as_connector_error(exc: Exception, need: Need) -> ConnectorError:
    """One line for the user: the permission refused and the fix, or what else went wrong."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "status_code", None) in (None, 401):
        first = str(exc.message or exc).strip().splitlines()[0] if str(exc).strip() else "no credential worked"
        return ConnectorError(f"no usable Azure credentials ({first[:200]})", LOGIN_HINT)
    if isinstance(exc, ServiceRequestError):
        return ConnectorError(f"cannot reach Azure for {need.scope}: {str(exc).splitlines()[0][:200]}")
    if isinstance(exc, HttpResponseError):
        code, message = _error_body(exc)
        status = exc.status_code
        if status == 403:
            found = _ACTION_IN_MESSAGE.search(message)
            action = found.group(1) if found and not need.graph else need.action
            return ConnectorError(f"{action} denied on {need.scope} ({code or 'HTTP 403'})", need.fix())
        if status == 401:
            return ConnectorError(f"Azure rejected the credentials calling for {need.scope} ({code})", LOGIN_HINT)
        if status == 429:
            return ConnectorError(
                f"{need.scope}: still throttled (HTTP 429) after the retries",
                "run again later, or collect fewer --days",
            )
        if status == 404:
            return ConnectorError(f"{need.scope} not found ({code or 'HTTP 404'}: {message.splitlines()[0][:200]})")
        return ConnectorError(f"{need.action} on {need.scope} failed: HTTP {status} {code}: {message[:200]}")
    raise exc


class Caller:
    """Runs calls, turning Azure errors into one-line ``ConnectorError`` (retries are the SDK's)."""

    def call(self, need: Need, fn: Callable[[], T]) -> T:
        from azure.core.exceptions import AzureError

        try:
            return fn()
        except AzureError as exc:
            raise as_connector_error(exc, need) from None

    def optional(self, need: Need, fn: Callable[[], T], gaps: list[dict[str, Any]], what: str) -> T | None:
        """Like :meth:`call`, but a refused or missing API becomes a gap row (the collection goes on)."""
        try:
            return self.call(need, fn)
        except ConnectorError as exc:
            gaps.append(
                {"scope": need.scope, "reason": f"{what} not collected: {exc.one_line()}", "severity": "warning"}
            )
            return None


class RestClient:
    """Plain REST calls on the azure-core pipeline (bearer token for ``scope``, the shared retries),
    for the few reads no installed SDK covers (Microsoft Graph, ARM resource lists)."""

    def __init__(self, transport: Transport, base: str, scope: str) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, UserAgentPolicy

        options = transport.client_options()
        self.base = base.rstrip("/")
        self._client = PipelineClient(
            self.base,
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy("auditor"),
                options.pop("retry_policy"),
                BearerTokenCredentialPolicy(transport.credential, scope),
            ],
            **options,
        )

    def send(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        response = self._client.send_request(HttpRequest(method, url, json=body))
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        document = response.json()
        return document if isinstance(document, dict) else {}

    def pages(self, url: str, link: str = "nextLink") -> list[dict[str, Any]]:
        """Every ``value`` item of a paged list, following ``link`` (absolute URLs) to the end."""
        found: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            page = self.send("GET", next_url)
            found += [item for item in page.get("value") or [] if isinstance(item, dict)]
            next_url = page.get(link)
        return found


class StaticToken:
    """A credential for test servers (``--endpoint``): a fixed bearer token, so real tokens are never
    sent anywhere but Azure."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken("auditor-test-server", int(time.time()) + 3600)


def default_credential() -> Any:
    """``DefaultAzureCredential`` (environment, workload identity, managed identity, az / azd / PowerShell login)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(exclude_interactive_browser_credential=True)
