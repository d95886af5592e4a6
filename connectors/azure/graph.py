"""Microsoft Graph reads for the live collector: the service principals that role assignments name
(display names, app ids, managed-identity type, tags) and the members of assigned groups.

The answers are written as Graph returns them, the shapes of ``az ad sp list`` and ``az ad group
member list`` that :mod:`.rbac` reads. Graph permissions are not Azure RBAC: the identity running
auditor needs ``Application.Read.All`` and ``GroupMember.Read.All`` (or ``Directory.Read.All``);
without them the collection goes on and the gap says what was not read.
"""

from __future__ import annotations

from typing import Any

from auditor.connectors.azure.arm import RestClient, Transport

SCOPE = "https://graph.microsoft.com/.default"
#: ``directoryObjects/getByIds`` takes at most this many ids a request.
IDS_PER_REQUEST = 1000


class GraphClient:
    """The two Graph v1.0 reads the collector makes."""

    def __init__(self, transport: Transport) -> None:
        self._rest = RestClient(transport, transport.endpoints.graph.rstrip("/") + "/v1.0", SCOPE)

    def service_principals(self, ids: list[str]) -> list[dict[str, Any]]:
        """The service principals (managed identities included) among ``ids``; other ids are skipped."""
        found: list[dict[str, Any]] = []
        for index in range(0, len(ids), IDS_PER_REQUEST):
            body = {"ids": ids[index : index + IDS_PER_REQUEST], "types": ["servicePrincipal"]}
            page = self._rest.send("POST", f"{self._rest.base}/directoryObjects/getByIds", body)
            found += [item for item in page.get("value") or [] if isinstance(item, dict)]
        return found

    def group_members(self, group: str) -> list[dict[str, Any]]:
        """Every member of ``group``, nested groups' members included (``transitiveMembers``)."""
        return self._rest.pages(f"{self._rest.base}/groups/{group}/transitiveMembers", "@odata.nextLink")
