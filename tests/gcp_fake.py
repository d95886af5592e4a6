"""A local HTTP server answering the real Google REST routes the live GCP collector calls.

Serves Resource Manager v3 (projects, folders, organizations, getIamPolicy), IAM v1 (roles,
service accounts), Recommender v1 (insights), Cloud Logging v2 (``entries:list``) and BigQuery v2
(``jobs.insert``, ``jobs.get``, ``getQueryResults``) from in-memory data, with pagination, a
configurable number of quota errors (HTTP 429) and permission-denied answers, and records every
request. Stdlib only: ``ThreadingHTTPServer`` on 127.0.0.1, an ephemeral port.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse


@dataclass
class FakeGcp:
    project: str
    project_number: str
    parent: str  # folders/N or organizations/N
    policies: dict[str, dict[str, Any]]  # resource -> policy JSON
    roles: dict[str, dict[str, Any]]
    entries: list[dict[str, Any]] = field(default_factory=list)
    service_accounts: list[dict[str, Any]] = field(default_factory=list)
    insights: list[dict[str, Any]] | None = None
    asset_policies: list[dict[str, Any]] = field(default_factory=list)
    folder_parents: dict[str, str] = field(default_factory=dict)
    bigquery_rows: list[dict[str, Any]] = field(default_factory=list)
    denied: dict[str, str] = field(default_factory=dict)  # route key -> permission named in the 403
    quota_errors: dict[str, int] = field(default_factory=dict)  # route key -> 429 answers before success
    page_size_cap: int = 1000
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    # -- routing ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        key = self._route_key(method, path)
        if key in self.denied:
            permission = self.denied[key]
            return 403, _error(
                403, f"Permission '{permission}' denied on resource (or it may not exist).", "PERMISSION_DENIED"
            )
        if self.quota_errors.get(key, 0) > 0:
            self.quota_errors[key] -= 1
            return 429, _error(429, "Quota exceeded for quota metric 'Read requests'.", "RESOURCE_EXHAUSTED")
        handler = getattr(self, "_" + key.replace(".", "_").replace(":", "_"), None)
        if handler is None:
            return 404, _error(404, f"no route {method} {path}", "NOT_FOUND")
        return handler(path, query, body)

    @staticmethod
    def _route_key(method: str, path: str) -> str:
        if path == "/v2/entries:list":
            return "logging.entries"
        if path.startswith("/bigquery/v2/"):
            return "bigquery." + ("insert" if method == "POST" else "results" if "/queries/" in path else "job")
        if path.endswith(":searchAllIamPolicies"):
            return "assets"
        if path.endswith(":getIamPolicy"):
            return "policy." + path.split("/")[2]
        if path.startswith("/v3/"):
            return "rm." + path.split("/")[2]
        if "/insightTypes/" in path:
            return "insights"
        if path.endswith("/serviceAccounts"):
            return "serviceaccounts"
        if path == "/v1/roles":
            return "roles.list"
        return "roles.get"

    # -- handlers --------------------------------------------------------------------------------

    def _rm_projects(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, {
            "name": f"projects/{self.project_number}",
            "projectId": self.project,
            "parent": self.parent,
            "state": "ACTIVE",
            "displayName": self.project,
        }

    def _rm_folders(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        name = path.removeprefix("/v3/")
        return 200, {"name": name, "parent": self.folder_parents.get(name, ""), "state": "ACTIVE"}

    def _policy(self, path: str) -> tuple[int, Any]:
        resource = path.removeprefix("/v3/").removesuffix(":getIamPolicy")
        if resource.startswith("projects/") and resource != f"projects/{self.project}":
            return 404, _error(404, f"{resource} not found", "NOT_FOUND")
        return 200, self.policies.get(resource, {"etag": "ACAB"})

    def _policy_projects(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return self._policy(path)

    _policy_folders = _policy_projects
    _policy_organizations = _policy_projects

    def _page(self, items: list[Any], query: dict[str, str], key: str) -> tuple[int, Any]:
        size = min(int(query.get("pageSize", self.page_size_cap)), self.page_size_cap)
        start = int(query.get("pageToken") or 0)
        page: dict[str, Any] = {key: items[start : start + size]}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return 200, page

    def _roles_list(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return self._page(
            sorted((r for n, r in self.roles.items() if n.startswith("roles/")), key=lambda r: r["name"]),
            query,
            "roles",
        )

    def _roles_get(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        name = path.removeprefix("/v1/")
        if name not in self.roles:
            return 404, _error(404, f"Role {name} not found.", "NOT_FOUND")
        return 200, self.roles[name]

    def _assets(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return self._page(self.asset_policies, query, "results")

    def _serviceaccounts(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return self._page(self.service_accounts, query, "accounts")

    def _insights(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.insights is None:
            return 403, _error(
                403, "Recommender API has not been used in project before or it is disabled.", "PERMISSION_DENIED"
            )
        return self._page(self.insights, query, "insights")

    def _logging_entries(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        wanted = {"pageSize": str(body.get("pageSize", self.page_size_cap)), "pageToken": body.get("pageToken", "")}
        entries = [e for e in self.entries if _in_filter(e, body.get("filter", ""))]
        return self._page(entries, wanted, "entries")

    # BigQuery: one job, results paged with pageToken.
    _SCHEMA: ClassVar[list[tuple[str, str, str]]] = [
        ("project", "STRING", "NULLABLE"),
        ("principal", "STRING", "NULLABLE"),
        ("service", "STRING", "NULLABLE"),
        ("method", "STRING", "NULLABLE"),
        ("permission", "STRING", "NULLABLE"),
        ("granted", "BOOLEAN", "NULLABLE"),
        ("calls", "INTEGER", "NULLABLE"),
        ("first_seen", "STRING", "NULLABLE"),
        ("last_seen", "STRING", "NULLABLE"),
        ("days", "STRING", "REPEATED"),
    ]

    def _bigquery_insert(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        job = body.get("jobReference", {}).get("jobId", "job-1")
        return 200, {
            "jobReference": {"projectId": self.project, "jobId": job, "location": "EU"},
            "configuration": body.get("configuration"),
            "status": {"state": "RUNNING"},
        }

    def _bigquery_job(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        job = path.rsplit("/", 1)[-1]
        return 200, {
            "jobReference": {"projectId": self.project, "jobId": job, "location": "EU"},
            "configuration": {
                "query": {
                    "query": "...",
                    "destinationTable": {"projectId": self.project, "datasetId": "_anon", "tableId": "anon"},
                }
            },
            "status": {"state": "DONE"},
            "statistics": {},
        }

    def _bigquery_results(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        job = path.rsplit("/", 1)[-1]
        size = min(int(query.get("maxResults") or self.page_size_cap), self.page_size_cap)
        start = int(query.get("pageToken") or 0)
        rows = self.bigquery_rows[start : start + size]
        reply: dict[str, Any] = {
            "jobReference": {"projectId": self.project, "jobId": job, "location": "EU"},
            "schema": {"fields": [{"name": n, "type": t, "mode": m} for n, t, m in self._SCHEMA]},
            "rows": [{"f": [_bq_cell(row.get(n), m) for n, _, m in self._SCHEMA]} for row in rows],
            "totalRows": str(len(self.bigquery_rows)),
            "jobComplete": True,
        }
        if start + size < len(self.bigquery_rows):
            reply["pageToken"] = str(start + size)
        return 200, reply


def _bq_cell(value: Any, mode: str) -> dict[str, Any]:
    if mode == "REPEATED":
        return {"v": [{"v": str(v)} for v in value or []]}
    if isinstance(value, bool):
        return {"v": "true" if value else "false"}
    return {"v": None if value is None else str(value)}


def _in_filter(entry: dict[str, Any], text: str) -> bool:
    """The time bounds of the collector's filter (timestamp>="..." AND timestamp<="...")."""
    when = entry.get("timestamp", "")[:19] + "Z"
    for part in text.split(" AND "):
        if part.startswith('timestamp>="'):
            if when < part.split('"')[1]:
                return False
        elif part.startswith('timestamp<="') and when > part.split('"')[1]:
            return False
    return True


def _error(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}


@contextmanager
def serve(fake: FakeGcp) -> Iterator[str]:
    """Run ``fake`` on 127.0.0.1; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            status, reply = fake.handle(method, url.path, query, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
