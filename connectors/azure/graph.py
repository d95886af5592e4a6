"""Microsoft Graph reads for the live collector: the service principals that role assignments name
(display names, app ids, managed-identity type, tags) and the members of assigned groups.

The answers are written as Graph returns them, the shapes of ``az ad sp list`` and ``az ad group
member list`` that :mod:`.rbac` reads. Graph permissions are not Azure RBAC: the identity running
auditor needs ``Application.Read.All`` and ``GroupMember.Read.All`` (or ``Directory.Read.All``);
without them the collection goes on and the gap says what was not read.
"""

from __future__ import annotations

from typing import Any

from auditor.connectors.azure.arm import Transport

SCOPE = "https://graph.microsoft.com/.default"
#: ``directoryObjects/getByIds`` takes at most this many ids a request.
IDS_PER_REQUEST = 1000


class GraphClient:
    """A minimal Graph v1.0 client on the azure-core pipeline (bearer token, the shared retries)."""

    def __init__(self, transport: Transport) -> None:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import BearerTokenCredentialPolicy, HeadersPolicy, UserAgentPolicy

        options = transport.client_options()
        self._base = transport.endpoints.graph.rstrip("/") + "/v1.0"
        self._client = PipelineClient(
            self._base,
            policies=[
                HeadersPolicy({"Accept": "application/json"}),
                UserAgentPolicy("auditor"),
                options.pop("retry_policy"),
                BearerTokenCredentialPolicy(transport.credential, SCOPE),
            ],
            **options,
        )

    def _send(self, method: str, url: str, body: Any = None) -> dict[str, Any]:
        from azure.core.exceptions import HttpResponseError
        from azure.core.rest import HttpRequest

        response = self._client.send_request(HttpRequest(method, url, json=body))
        if response.status_code >= 400:
            raise HttpResponseError(response=response)
        document = response.json()
        return document if isinstance(document, dict) else {}

    def _pages(self, url: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        next_url: str | None = url
        while next_url:
            page = self._send("GET", next_url)
            found += [item for item in page.get("value") or [] if isinstance(item, dict)]
            next_url = page.get("@odata.nextLink")
        return found

    def service_principals(self, ids: list[str]) -> list[dict[str, Any]]:
        """The service principals (managed identities included) among ``ids``; other ids are skipped."""
        found: list[dict[str, Any]] = []
        for index in range(0, len(ids), IDS_PER_REQUEST):
            body = {"ids": ids[index : index + IDS_PER_REQUEST], "types": ["servicePrincipal"]}
            page = self._send("POST", f"{self._base}/directoryObjects/getByIds", body)
            found += [item for item in page.get("value") or [] if isinstance(item, dict)]
        return found

    def group_members(self, group: str) -> list[dict[str, Any]]:
        """Every member of ``group``, nested groups' members included (``transitiveMembers``)."""
        return self._pages(f"{self._base}/groups/{group}/transitiveMembers")
