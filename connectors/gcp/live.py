"""Live GCP collection: read-only API calls that write the offline snapshot format.

``auditor collect gcp --project P`` (and ``auditor audit --gcp-project P``) use Application Default
Credentials and write the folder :class:`~auditor.connectors.gcp.files.GcpFiles` reads, so a live
audit and an offline audit of the same snapshot are the same audit by construction:

- IAM policies of the project and its ancestors (``google-cloud-resource-manager``, REST transport,
  policy version 3);
- resource-level bindings from Cloud Asset Inventory ``searchAllIamPolicies`` (optional);
- the roles they reference, and every predefined role (IAM REST API ``roles.get`` / ``roles.list``
  with ``view=FULL``, for the predefined-role suggestion), and the service accounts;
- Cloud Audit Logs (``google-cloud-logging`` ``list_entries`` with an explicit ``timestamp>=`` term,
  since the client silently narrows to 24 hours otherwise; page size 1000; backoff on quota errors)
  or, with a BigQuery table, one aggregation query run in BigQuery;
- IAM Recommender insights, when the API is enabled and readable (optional).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from auditor import __version__
from auditor.connectors.base import Progress, no_progress
from auditor.connectors.gcp.api import Caller, Need
from auditor.connectors.gcp.bigquery import FORMAT as AGGREGATE_FORMAT
from auditor.connectors.gcp.bigquery import aggregation_query, run_aggregation
from auditor.errors import ConnectorError, InputError
from auditor.fileio import atomic_file, write_json
from auditor.timefmt import iso_utc
from auditor.window import window_ending

SNAPSHOT_FORMAT = "auditor.gcp-snapshot/v1"
LOG_FILTER = 'logName:"cloudaudit.googleapis.com" AND timestamp>="{start}" AND timestamp<="{end}"'
INSIGHT_TYPE = "google.iam.policy.Insight"


@dataclass(frozen=True)
class Endpoints:
    """API base URLs; None keeps each client's default (tests point them at a local server)."""

    logging: str | None = None
    resourcemanager: str | None = None
    iam: str = "https://iam.googleapis.com"
    recommender: str = "https://recommender.googleapis.com"
    bigquery: str | None = None
    cloudasset: str = "https://cloudasset.googleapis.com"

    @classmethod
    def single(cls, base: str) -> Endpoints:
        return cls(base, base, base, base, base, base)


@dataclass(frozen=True)
class CollectOptions:
    project: str
    days: int = 30
    until: datetime | None = None
    bigquery_table: str | None = None
    bigquery_project: str | None = None  # project billed for the query (default: the audited project)
    predefined_roles: bool = True
    insights: bool = True
    page_size: int = 1000
    entries_per_file: int = 100_000


def _role_file(name: str) -> str:
    return name.replace("/", "_") + ".json"


@dataclass
class GcpCollector:
    options: CollectOptions
    credentials: Any
    endpoints: Endpoints = field(default_factory=Endpoints)
    caller: Caller = field(default_factory=Caller)
    progress: Progress = no_progress
    gaps: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from google.auth.transport.requests import AuthorizedSession

        self.session = AuthorizedSession(self.credentials)

    # -- REST helpers -------------------------------------------------------------------------

    def _get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        from google.api_core import exceptions

        response = self.session.get(url, params=params, timeout=60)
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        return response.json()

    def _pages(self, need: Need, url: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            query = {**params, **({"pageToken": token} if token else {})}
            page = self.caller.call(need, lambda q=query: self._get(url, q))
            yield from page.get(key, [])
            token = page.get("nextPageToken")
            if not token:
                return

    # -- policies -------------------------------------------------------------------------------

    def _resource_manager(self, kind: str) -> Any:
        from google.api_core.client_options import ClientOptions
        from google.cloud import resourcemanager_v3

        client_type = {
            "projects": resourcemanager_v3.ProjectsClient,
            "folders": resourcemanager_v3.FoldersClient,
            "organizations": resourcemanager_v3.OrganizationsClient,
        }[kind]
        options = ClientOptions(api_endpoint=self.endpoints.resourcemanager) if self.endpoints.resourcemanager else None
        return client_type(credentials=self.credentials, transport="rest", client_options=options)

    def _policy(self, resource: str, optional: bool) -> dict[str, Any] | None:
        from google.protobuf.json_format import MessageToDict

        kind = resource.split("/", 1)[0]
        client = self._resource_manager(kind)
        need = Need(
            f"resourcemanager.{kind}.getIamPolicy",
            resource,
            "roles/iam.securityReviewer",
        )
        request = {"resource": resource, "options": {"requested_policy_version": 3}}

        def fetch() -> Any:
            return client.get_iam_policy(request=request)

        policy = (
            self.caller.optional(need, fetch, self.gaps, f"IAM policy of {resource} (inherited bindings)")
            if optional
            else self.caller.call(need, fetch)
        )
        return MessageToDict(policy) if policy is not None else None

    def _ancestors(self, parent: str) -> list[str]:
        """Folders and organization above the project, nearest first (stops where reading is denied)."""
        found: list[str] = []
        while parent.startswith("folders/"):
            found.append(parent)
            client = self._resource_manager("folders")
            need = Need("resourcemanager.folders.get", parent, "roles/resourcemanager.folderViewer")
            folder = self.caller.optional(need, lambda p=parent, c=client: c.get_folder(name=p), self.gaps, "folder")
            if folder is None:
                return found
            parent = folder.parent
        if parent.startswith("organizations/"):
            found.append(parent)
        return found

    # -- roles, accounts, insights -----------------------------------------------------------------

    def _roles(self, out: Path, policies: list[dict[str, Any]]) -> int:
        roles_dir = out / "roles"
        roles_dir.mkdir(parents=True, exist_ok=True)
        have: set[str] = set()
        if self.options.predefined_roles:
            need = Need("roles.list (no permission needed)", "roles", "any authenticated identity")
            predefined = list(
                self._pages(need, f"{self.endpoints.iam}/v1/roles", "roles", {"view": "FULL", "pageSize": 1000})
            )
            write_json(roles_dir / "predefined.json", predefined)
            have = {r["name"] for r in predefined if isinstance(r, dict) and "name" in r}
        bound = sorted({b["role"] for p in policies for b in p.get("bindings", []) if "role" in b} - have)
        for index, name in enumerate(bound, start=1):
            scope = name.split("/roles/", 1)[0] if "/roles/" in name else "roles"
            need = Need(
                "iam.roles.get" if scope != "roles" else "roles.get (no permission needed)",
                name,
                "roles/iam.roleViewer",
            )
            role = self.caller.optional(
                need,
                lambda n=name: self._get(f"{self.endpoints.iam}/v1/{n}"),
                self.gaps,
                f"role definition {name} (its permissions are not counted)",
            )
            if role is not None:
                write_json(roles_dir / _role_file(name), role, indent=True)
            self.progress("role definitions", index, len(bound))
        return len(have) + len(bound)

    def _service_accounts(self, out: Path) -> None:
        project = self.options.project
        need = Need("iam.serviceAccounts.list", f"projects/{project}", "roles/iam.serviceAccountViewer")
        url = f"{self.endpoints.iam}/v1/projects/{project}/serviceAccounts"
        accounts = self.caller.optional(
            need,
            lambda: list(self._pages(need, url, "accounts", {"pageSize": 100})),
            self.gaps,
            "service accounts (agent labels)",
        )
        if accounts is not None:
            write_json(out / "service-accounts.json", accounts, indent=True)

    def _insights(self, out: Path) -> None:
        project = self.options.project
        need = Need("recommender.iamPolicyInsights.list", f"projects/{project}", "roles/recommender.iamViewer")
        url = (
            f"{self.endpoints.recommender}/v1/projects/{project}/locations/global/insightTypes/{INSIGHT_TYPE}/insights"
        )
        insights = self.caller.optional(
            need,
            lambda: list(self._pages(need, url, "insights", {"pageSize": 1000})),
            self.gaps,
            "IAM Recommender insights",
        )
        if insights is not None:
            write_json(out / "insights.json", insights, indent=True)

    # -- logs -------------------------------------------------------------------------------------

    def _asset_policies(self, out: Path) -> None:
        """Resource-level bindings (buckets, datasets, service accounts ...) from Cloud Asset Inventory."""
        project = self.options.project
        need = Need("cloudasset.assets.searchAllIamPolicies", f"projects/{project}", "roles/cloudasset.viewer")
        url = f"{self.endpoints.cloudasset}/v1/projects/{project}:searchAllIamPolicies"
        results = self.caller.optional(
            need,
            lambda: list(self._pages(need, url, "results", {"pageSize": 500})),
            self.gaps,
            "resource-level IAM policies (Cloud Asset Inventory)",
        )
        if results is not None:
            write_json(out / "asset-iam-policies.json", results, indent=True)

    def _logging_client(self) -> Any:
        from google.cloud import logging as cloud_logging

        options = {"api_endpoint": self.endpoints.logging} if self.endpoints.logging else None
        return cloud_logging.Client(
            project=self.options.project, credentials=self.credentials, _use_grpc=False, client_options=options
        )

    def _logs(self, out: Path, start: str, end: str) -> dict[str, Any]:
        """Every audit-log entry of the window into ``logs/entries-NNNNN.ndjson``, page by page.

        This is the ``entries:list`` call of ``Client.list_entries``, made through the client's own
        connection one page at a time: ``list_entries`` is a generator that hides page tokens, so it
        could not retry a page after a quota error, and entries are kept as the API's JSON verbatim."""
        connection = self._logging_client()._connection
        project = self.options.project
        request = {
            "resourceNames": [f"projects/{project}"],
            "filter": LOG_FILTER.format(start=start, end=end),
            "pageSize": self.options.page_size,
        }
        need = Need("logging.privateLogEntries.list", f"projects/{project}", "roles/logging.privateLogViewer")
        logs_dir = out / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        written, files = 0, 0
        with ExitStack() as chunk:  # each chunk file is renamed into place only once it is complete
            handle = None
            while True:
                page = self.caller.call(
                    need, lambda r=dict(request): connection.api_request(method="POST", path="/entries:list", data=r)
                )
                for entry in page.get("entries", []):
                    if handle is None or written % self.options.entries_per_file == 0:
                        chunk.close()
                        files += 1
                        handle = chunk.enter_context(atomic_file(logs_dir / f"entries-{files:05d}.ndjson"))
                    handle.write(orjson.dumps(entry) + b"\n")
                    written += 1
                self.progress("audit log entries", written, written)
                if not page.get("nextPageToken"):
                    break
                request["pageToken"] = page["nextPageToken"]
        return {"filter": request["filter"], "entries": written, "files": files}

    def _bigquery(self, out: Path, start: str, end: str) -> dict[str, Any]:
        from google.cloud import bigquery

        table = self.options.bigquery_table or ""
        query = aggregation_query(table)
        billing = self.options.bigquery_project or self.options.project
        options = {"api_endpoint": self.endpoints.bigquery} if self.endpoints.bigquery else None
        client = bigquery.Client(project=billing, credentials=self.credentials, client_options=options)
        need = Need(
            "bigquery.jobs.create",
            f"projects/{billing}",
            "roles/bigquery.jobUser (and roles/bigquery.dataViewer on the log dataset)",
        )
        rows = self.caller.call(need, lambda: run_aggregation(client, table, start, end))
        document = {
            "format": AGGREGATE_FORMAT,
            "table": table,
            "window": {"start": start, "end": end},
            "query": query,
            "rows": rows,
        }
        write_json(out / "bigquery-usage.json", document, indent=True)
        return {"bigquery_table": table, "rows": len(rows)}

    # -- the whole snapshot -----------------------------------------------------------------------

    def collect(self, out: Path) -> Path:
        if out.exists() and any(out.iterdir()):
            raise InputError(f"{out}: not empty", "pass a new folder for the snapshot")
        out.mkdir(parents=True, exist_ok=True)
        # Replaced at the end: a snapshot whose collection was interrupted is refused, not audited.
        write_json(out / "manifest.json", {"format": SNAPSHOT_FORMAT, "complete": False})
        project = self.options.project
        end_time = self.options.until or datetime.now(UTC)
        window = window_ending(end_time, self.options.days, "--until")
        start, end = iso_utc(window.start), iso_utc(window.end)
        client = self._resource_manager("projects")
        info = self.caller.call(
            Need("resourcemanager.projects.get", f"projects/{project}", "roles/browser"),
            lambda: client.get_project(name=f"projects/{project}"),
        )
        policy = self._policy(f"projects/{project}", optional=False) or {}
        policies = [policy]
        write_json(out / "policies" / "projects" / f"{project}.json", policy, indent=True)
        ancestors = self._ancestors(info.parent or "")
        for resource in ancestors:
            ancestor = self._policy(resource, optional=True)
            if ancestor is not None:
                kind, ident = resource.split("/", 1)
                write_json(out / "policies" / kind / f"{ident}.json", ancestor, indent=True)
                policies.append(ancestor)
        roles = self._roles(out, policies)
        self._service_accounts(out)
        self._asset_policies(out)
        if self.options.insights:
            self._insights(out)
        logs = self._bigquery(out, start, end) if self.options.bigquery_table else self._logs(out, start, end)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "tool": f"auditor {__version__}",
            "project": project,
            "project_number": (info.name or "").split("/", 1)[-1],
            "ancestors": ancestors,
            "collected_at": iso_utc(datetime.now(UTC)),
            "window": {"start": start, "end": end},
            "roles": roles,
            "logs": logs,
            "gaps": self.gaps,
        }
        write_json(out / "manifest.json", {**manifest, "complete": True}, indent=True)
        return out


def default_credentials() -> Any:
    """Application Default Credentials, or a one-line error saying how to get them."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except DefaultCredentialsError:
        raise ConnectorError(
            "no Google Application Default Credentials",
            "run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS",
        ) from None
    return credentials
