"""Live Azure collection: read-only calls that write the offline snapshot format.

``auditor collect azure --subscription S`` uses ``DefaultAzureCredential`` and writes the folder
:class:`~auditor.connectors.azure.files.AzureFiles` reads, so auditing a live collection is auditing
its snapshot:

- role assignments (``azure-mgmt-authorization`` ``role_assignments.list_for_subscription``: at,
  above and below the subscription, so management-group and root assignments are included);
- role definitions (``role_definitions.list`` at the subscription: built-in and custom ones; any
  assigned definition not among them by ``get_by_id``) and the provider operations
  (``provider_operations_metadata.list``, with resource types);
- the principals the assignments name and the members of assigned groups (Microsoft Graph;
  optional: refused reads are gaps, the audit then selects agents by ``--agent`` only);
- the Activity Log (``azure-mgmt-monitor`` ``activity_logs.list`` with an explicit
  ``eventTimestamp`` range, one day per request, ``nextLink`` pages), or, with ``--workspace``, one
  KQL aggregation over ``AzureActivity`` in Log Analytics (:mod:`.log_analytics`).

Models are written with ``serialize(keep_readonly=True)``: the ARM REST JSON, which the offline
reader parses like the ``az`` exports. Throttling is the SDK ``RetryPolicy``'s (bounded, honours
``Retry-After``); a refused call is one line naming the action (see :mod:`.arm`).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from auditor import __version__
from auditor.connectors.azure import graph
from auditor.connectors.azure.arm import Caller, Need, RestClient, Transport
from auditor.connectors.azure.log_analytics import FORMAT as AGGREGATE_FORMAT
from auditor.connectors.azure.log_analytics import aggregation_query, check_workspace, run_aggregation
from auditor.connectors.azure.rbac import guid_of
from auditor.connectors.base import Progress, no_progress
from auditor.errors import InputError
from auditor.fileio import atomic_file, write_json
from auditor.timefmt import iso_utc
from auditor.window import window_ending

SNAPSHOT_FORMAT = "auditor.azure-snapshot/v1"
#: How far back the Activity Log API answers.
RETENTION_DAYS = 90
ACTIVITY_FILTER = "eventTimestamp ge '{start}' and eventTimestamp le '{end}'"
ARM_SCOPE = "https://management.azure.com/.default"
RESOURCES_API = "2021-04-01"
IDENTITIES_API = "2023-01-31"


@dataclass(frozen=True)
class CollectOptions:
    subscription: str
    days: int = 30
    until: datetime | None = None
    workspace: str | None = None  # Log Analytics workspace id: aggregate AzureActivity there instead
    management_group: str | None = None  # also read the assignments and definitions made at this group
    graph: bool = True  # read principals and group members from Microsoft Graph
    records_per_file: int = 100_000


def _serialized(model: Any) -> dict[str, Any]:
    return model.serialize(keep_readonly=True)


def day_ranges(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``start .. end`` cut at UTC midnights (both ends inclusive; the next range starts where one ends)."""
    ranges = []
    cursor = start
    while cursor < end:
        midnight = datetime(cursor.year, cursor.month, cursor.day, tzinfo=UTC) + timedelta(days=1)
        ranges.append((cursor, min(midnight, end)))
        cursor = midnight
    return ranges or [(start, end)]


@dataclass
class AzureCollector:
    options: CollectOptions
    transport: Transport
    progress: Progress = no_progress
    caller: Caller = field(default_factory=Caller)
    now: datetime | None = None  # the collection time (tests pin it)
    gaps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def scope(self) -> str:
        return f"/subscriptions/{self.options.subscription}"

    # -- clients ----------------------------------------------------------------------------------

    def _authorization(self) -> Any:
        from azure.mgmt.authorization import AuthorizationManagementClient

        return AuthorizationManagementClient(
            self.transport.credential,
            self.options.subscription,
            base_url=self.transport.endpoints.arm,
            **self.transport.client_options(),
        )

    def _monitor(self) -> Any:
        from azure.mgmt.monitor import MonitorManagementClient

        return MonitorManagementClient(
            self.transport.credential,
            self.options.subscription,
            base_url=self.transport.endpoints.arm,
            **self.transport.client_options(),
        )

    # -- RBAC -------------------------------------------------------------------------------------

    @property
    def group_scope(self) -> str | None:
        group = self.options.management_group
        return f"/providers/Microsoft.Management/managementGroups/{group}" if group else None

    def _assignments(self, client: Any) -> list[dict[str, Any]]:
        need = Need("Microsoft.Authorization/roleAssignments/read", self.scope)
        found = self.caller.call(
            need, lambda: [_serialized(a) for a in client.role_assignments.list_for_subscription()]
        )
        group = self.group_scope
        if group is not None:  # at and above the management group (inherited by the subscription)
            above = self.caller.call(
                Need("Microsoft.Authorization/roleAssignments/read", group),
                lambda: [_serialized(a) for a in client.role_assignments.list_for_scope(group, filter="atScope()")],
            )
            found += _new(found, above)
        return found

    def _definitions(self, client: Any, assignments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        need = Need("Microsoft.Authorization/roleDefinitions/read", self.scope)
        found = self.caller.call(need, lambda: [_serialized(d) for d in client.role_definitions.list(self.scope)])
        group = self.group_scope
        if group is not None:  # custom roles defined at the management group
            at_group = self.caller.call(
                Need("Microsoft.Authorization/roleDefinitions/read", group),
                lambda: [_serialized(d) for d in client.role_definitions.list(group)],
            )
            found += _new(found, at_group)
        have = {str(d.get("name", "")).lower() for d in found}
        referenced = {
            guid_of(str(a["properties"]["roleDefinitionId"])): str(a["properties"]["roleDefinitionId"])
            for a in assignments
            if isinstance(a.get("properties"), dict) and a["properties"].get("roleDefinitionId")
        }
        for guid, definition_id in sorted(referenced.items()):
            if guid in have:
                continue
            role = self.caller.optional(
                Need("Microsoft.Authorization/roleDefinitions/read", definition_id),
                lambda i=definition_id: _serialized(client.role_definitions.get_by_id(i)),
                self.gaps,
                f"role definition {definition_id} (its operations are not counted)",
            )
            if role is not None:
                found.append(role)
        return found

    def _operations(self, client: Any) -> list[dict[str, Any]]:
        need = Need("Microsoft.Authorization/providerOperations/read", "/providers/Microsoft.Authorization")
        return self.caller.call(
            need,
            lambda: [_serialized(p) for p in client.provider_operations_metadata.list(expand="resourceTypes")],
        )

    # -- usage ------------------------------------------------------------------------------------

    def _activity_log(self, out: Path, start: datetime, end: datetime) -> dict[str, Any]:
        """The window's Activity Log, a day per request, into ``activity-log/events-NNNNN.ndjson``."""
        client = self._monitor()
        need = Need("Microsoft.Insights/eventtypes/values/read", self.scope)
        folder = out / "activity-log"
        ranges = day_ranges(start, end)
        written, files, requests = 0, 0, 0
        with ExitStack() as chunk:  # each file is renamed into place only once it is complete
            handle = None
            for index, (low, high) in enumerate(ranges, start=1):
                query = ACTIVITY_FILTER.format(start=_arm_time(low), end=_arm_time(high))
                events = self.caller.call(need, lambda q=query: list(client.activity_logs.list(filter=q)))
                requests += 1
                for event in events:
                    when = event.event_timestamp
                    if when is not None and high < end and when >= high:
                        continue  # the next day's request returns it (both ends of a range are inclusive)
                    if handle is None or written % self.options.records_per_file == 0:
                        chunk.close()
                        files += 1
                        handle = chunk.enter_context(atomic_file(folder / f"events-{files:05d}.ndjson"))
                    handle.write(orjson.dumps(_serialized(event)) + b"\n")
                    written += 1
                self.progress("Activity Log days", index, len(ranges))
        folder.mkdir(parents=True, exist_ok=True)
        return {
            "source": "activity-log",
            "filter": ACTIVITY_FILTER,
            "records": written,
            "files": files,
            "days": requests,
        }

    def _log_analytics(self, out: Path, start: datetime, end: datetime) -> dict[str, Any]:
        from azure.monitor.query import LogsQueryClient

        workspace = check_workspace(self.options.workspace or "")
        client = LogsQueryClient(
            self.transport.credential,
            endpoint=self.transport.endpoints.log_analytics,
            **self.transport.client_options(),
        )
        need = Need("Microsoft.OperationalInsights/workspaces/query/AzureActivity/read", f"workspace {workspace}")
        rows, partial = self.caller.call(need, lambda: run_aggregation(client, workspace, start, end))
        if partial:
            self.gaps.append(
                {
                    "scope": f"workspace {workspace}",
                    "reason": f"the AzureActivity aggregation returned a partial result ({partial[:300]})",
                    "severity": "error",
                }
            )
        document = {
            "format": AGGREGATE_FORMAT,
            "workspace": workspace,
            "window": {"start": iso_utc(start), "end": iso_utc(end)},
            "query": aggregation_query(iso_utc(start), iso_utc(end)),
            "partial_error": partial or None,
            "rows": rows,
        }
        write_json(out / "log-analytics-usage.json", document, indent=True)
        self.progress("Log Analytics aggregation", 1, 1)
        return {"source": "log-analytics", "workspace": workspace, "rows": len(rows)}

    # -- the whole snapshot -----------------------------------------------------------------------

    def _window(self, now: datetime) -> tuple[datetime, datetime]:
        end = min(self.options.until or now, now).replace(microsecond=0)
        window = window_ending(end, self.options.days, "--until")
        if self.options.workspace is None and window.start < now - timedelta(days=RETENTION_DAYS):
            raise InputError(
                f"the Activity Log keeps {RETENTION_DAYS} days: a {self.options.days}-day window ending "
                f"{iso_utc(end)} starts before it",
                "pass fewer --days or a later --until, or --workspace WORKSPACE_ID (Log Analytics keeps longer)",
            )
        return window.start, window.end

    def collect(self, out: Path) -> Path:
        now = (self.now or utc_now()).astimezone(UTC).replace(microsecond=0)
        start, end = self._window(now)
        if self.options.workspace is not None:
            check_workspace(self.options.workspace)
        if out.exists() and any(out.iterdir()):
            raise InputError(f"{out}: not empty", "pass a new folder for the snapshot")
        out.mkdir(parents=True, exist_ok=True)
        # Replaced at the end: a snapshot whose collection was interrupted is refused, not audited.
        write_json(out / "manifest.json", {"format": SNAPSHOT_FORMAT, "complete": False})
        client = self._authorization()
        assignments = self._assignments(client)
        write_json(out / "role-assignments.json", assignments, indent=True)
        self.progress("role assignments", 1, 3)
        definitions = self._definitions(client, assignments)
        write_json(out / "role-definitions.json", definitions, indent=True)
        self.progress("role definitions", 2, 3)
        operations = self._operations(client)
        write_json(out / "provider-operations.json", operations, indent=True)
        self.progress("provider operations", 3, 3)
        principals = self._principals(out, assignments) if self.options.graph else None
        identities = self._managed_identities(out)
        usage = (
            self._log_analytics(out, start, end)
            if self.options.workspace is not None
            else self._activity_log(out, start, end)
        )
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "tool": f"auditor {__version__}",
            "subscription": self.options.subscription.lower(),
            "management_group": self.options.management_group,
            "collected_at": iso_utc(now),
            "window": {"start": iso_utc(start), "end": iso_utc(end)},
            "counts": {
                "role_assignments": len(assignments),
                "role_definitions": len(definitions),
                "providers": len(operations),
                "principals": principals,
                "managed_identities": identities,
            },
            "usage": usage,
            "gaps": self.gaps,
        }
        write_json(out / "manifest.json", {**manifest, "complete": True}, indent=True)
        return out

    def _managed_identities(self, out: Path) -> int | None:
        """ARM resources carrying a system-assigned identity, and the user-assigned identities: their
        ARM tags select agents like Graph tags do (optional: a refusal is a gap)."""
        rest = RestClient(self.transport, self.transport.endpoints.arm, ARM_SCOPE)
        base = f"{rest.base}{self.scope}"
        resources = self.caller.optional(
            Need("Microsoft.Resources/subscriptions/resources/read", self.scope),
            lambda: rest.pages(f"{base}/resources?api-version={RESOURCES_API}"),
            self.gaps,
            "resources with system-assigned identities (their ARM tags)",
        )
        identities = self.caller.optional(
            Need("Microsoft.ManagedIdentity/userAssignedIdentities/read", self.scope),
            lambda: rest.pages(
                f"{base}/providers/Microsoft.ManagedIdentity/userAssignedIdentities?api-version={IDENTITIES_API}"
            ),
            self.gaps,
            "user-assigned managed identities (their ARM tags)",
        )
        if resources is None and identities is None:
            return None
        carrying = [
            r for r in resources or [] if isinstance(r.get("identity"), dict) and r["identity"].get("principalId")
        ]
        found = carrying + _new(carrying, identities or [])
        write_json(out / "managed-identities.json", found, indent=True)
        return len(found)

    def _principals(self, out: Path, assignments: Iterable[dict[str, Any]]) -> int | None:
        """Service principals the assignments name, and the members of assigned groups (Graph)."""
        ids, groups = set(), set()
        for assignment in assignments:
            props = assignment.get("properties") or {}
            principal, kind = str(props.get("principalId") or "").lower(), str(props.get("principalType") or "")
            if not principal:
                continue
            (groups if kind.lower() in ("group", "foreigngroup") else ids).add(principal)
        client = graph.GraphClient(self.transport)
        members: dict[str, list[dict[str, Any]]] = {}
        for group in sorted(groups):
            found = self.caller.optional(
                Need("GroupMember.Read.All", f"group {group}", graph=True),
                lambda g=group: client.group_members(g),
                self.gaps,
                f"members of group {group} (its assignments are not counted)",
            )
            if found is not None:
                members[group] = found
                write_json(out / "group-members" / f"{group}.json", found, indent=True)
                ids |= {str(m.get("id", "")).lower() for m in found if m.get("id")}
        principals = self.caller.optional(
            Need("Application.Read.All", "service principals", graph=True),
            lambda: client.service_principals(sorted(ids)),
            self.gaps,
            "service principals (names, app ids and tags for agent selection)",
        )
        if principals is None:
            return None
        write_json(out / "service-principals.json", principals, indent=True)
        return len(principals)


def _new(have: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``more``'s entries whose ARM id is not in ``have``."""
    ids = {str(item.get("id", "")).lower() for item in have}
    return [item for item in more if str(item.get("id", "")).lower() not in ids]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _arm_time(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
