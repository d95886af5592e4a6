"""A local HTTPS server answering the real Azure routes the live collector calls.

ARM (``Microsoft.Authorization`` role assignments, role definitions and provider operations,
``Microsoft.Insights`` Activity Log ``eventtypes/management/values``), Microsoft Graph v1.0
(``directoryObjects/getByIds``, ``groups/{id}/transitiveMembers``) and the Log Analytics query API
(``POST /v1/workspaces/{id}/query``), in their wire shapes: ARM pages ``{"value", "nextLink"}``,
Graph pages with ``@odata.nextLink``, query answers ``{"tables": [{"name", "columns", "rows"}]}``
and the partial-error answer. It throttles (429 + ``Retry-After``) and refuses (403 with ARM's
``AuthorizationFailed`` body) on demand, and records every request. TLS with a trustme CA, so the
SDK clients run their real bearer-token policy. The data is ``fixtures/azure``'s.
"""

from __future__ import annotations

import importlib.util
import json
import ssl
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import trustme

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT / "fixtures" / "azure"
SUB = "3f2b5c1e-8d4a-4b7e-9c21-6a0e5d7f1b42"
WORKSPACE = "6c1d0b8e-2f4a-4c3b-9a7e-1d2c3b4a5f60"
OID = "http://schemas.microsoft.com/identity/claims/objectidentifier"


def _json(name: str) -> Any:
    return json.loads((FIXTURE / name).read_text())


@cache
def fixture_events() -> tuple[dict[str, Any], ...]:
    """Every Activity Log record of the fixture window as EventData (what ARM returns): the
    generator's own records, before it splits them over three export shapes."""
    spec = importlib.util.spec_from_file_location("_generate_azure_for_tests", ROOT / "fixtures" / "generate_azure.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.activity())


def arm_assignment(flat: dict[str, Any]) -> dict[str, Any]:
    """An ``az role assignment list`` entry as ARM returns it (``properties`` nested, no az additions)."""
    keys = ("roleDefinitionId", "principalId", "principalType", "scope", "condition", "conditionVersion")
    props = {k: flat.get(k) for k in keys}
    props |= {k: flat.get(k) for k in ("createdOn", "updatedOn", "createdBy", "updatedBy", "description")}
    return {"id": flat["id"], "name": flat["name"], "type": flat["type"], "properties": props}


def arm_definition(flat: dict[str, Any]) -> dict[str, Any]:
    """An ``az role definition list`` entry as ARM returns it."""
    guid = flat["name"]
    return {
        "id": flat.get("id") or f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
        "name": guid,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": flat["roleName"],
            "type": flat["roleType"],
            "description": flat.get("description"),
            "assignableScopes": flat.get("assignableScopes", []),
            "permissions": flat["permissions"],
        },
    }


def arm_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@dataclass
class FakeAzure:
    """In-memory Azure answering the collector's routes; ``base`` is set once it serves."""

    events: list[dict[str, Any]] = field(default_factory=lambda: list(fixture_events()))
    assignments: list[dict[str, Any]] = field(
        default_factory=lambda: [arm_assignment(a) for a in _json("role-assignments.json")]
    )
    definitions: list[dict[str, Any]] = field(
        default_factory=lambda: [arm_definition(d) for d in _json("role-definitions.json")]
    )
    unlisted_definitions: set[str] = field(default_factory=set)  # GUIDs only get_by_id answers
    hide_inherited: bool = False  # the subscription's list omits assignments above it
    operations: list[dict[str, Any]] = field(default_factory=lambda: _json("provider-operations.json"))
    principals: list[dict[str, Any]] = field(default_factory=lambda: _json("service-principals.json"))
    groups: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {p.stem: json.loads(p.read_text()) for p in (FIXTURE / "group-members").glob("*.json")}
    )
    arm_tags: dict[str, dict[str, str]] = field(default_factory=dict)  # managed identity object id -> ARM tags
    page_size: int = 4
    throttle: dict[str, int] = field(default_factory=dict)  # route -> 429 answers left
    retry_after: str = "1"
    denied: dict[str, str] = field(default_factory=dict)  # route -> action named in the 403
    partial_query: bool = False
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    authorization: list[str] = field(default_factory=list)  # the Authorization header of every request
    base: str = ""

    # -- routing ---------------------------------------------------------------------------------

    @staticmethod
    def route(method: str, path: str) -> str:
        lowered = path.lower()
        if lowered.startswith("/v1/workspaces/"):
            return "logs.query"
        if lowered == "/v1.0/directoryobjects/getbyids":
            return "graph.principals"
        if lowered.startswith("/v1.0/groups/"):
            return "graph.members"
        if lowered.endswith("/providers/microsoft.managedidentity/userassignedidentities"):
            return "identities"
        if lowered.startswith("/subscriptions/") and lowered.endswith("/resources"):
            return "resources"
        if lowered.endswith("/providers/microsoft.authorization/roleassignments"):
            return "assignments"
        if lowered.endswith("/providers/microsoft.authorization/roledefinitions"):
            return "definitions"
        if "/providers/microsoft.authorization/roledefinitions/" in lowered:
            return "definition"
        if lowered == "/providers/microsoft.authorization/provideroperations":
            return "operations"
        if lowered.endswith("/providers/microsoft.insights/eventtypes/management/values"):
            return "activity"
        return "unknown"

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any, dict[str, str]]:
        self.requests.append((method, path, query))
        key = self.route(method, path)
        if self.throttle.get(key, 0) > 0:
            self.throttle[key] -= 1
            message = "Number of requests exceeded the limit. Please retry after a while."
            return 429, arm_error("TooManyRequests", message), {"Retry-After": self.retry_after}
        if key in self.denied:
            return 403, self._refusal(key, path), {}
        handler = getattr(self, "_" + key.replace(".", "_"), None)
        if handler is None:
            return 404, arm_error("NotFound", f"no route {method} {path}"), {}
        status, reply = handler(path, query, body)
        return status, reply, {}

    def _refusal(self, key: str, path: str) -> dict[str, Any]:
        if key.startswith("graph."):
            return arm_error("Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
        if key == "logs.query":
            return arm_error(
                "InsufficientAccessError",
                "The provided credentials have insufficient access to perform the requested operation",
            )
        scope = path.split("/providers/Microsoft.", 1)[0] or "/"
        caller = "0c8f7b0e-1111-4a4a-9b9b-222233334444"
        return arm_error(
            "AuthorizationFailed",
            f"The client '{caller}' with object id '{caller}' does not have authorization to perform action "
            f"'{self.denied[key]}' over scope '{scope}' or the scope is invalid. If access was recently granted, "
            "please refresh your credentials.",
        )

    def _page(self, items: list[Any], path: str, query: dict[str, str], link: str = "nextLink") -> dict[str, Any]:
        start = int(query.get("$skiptoken") or 0)
        page: dict[str, Any] = {"value": items[start : start + self.page_size]}
        if start + self.page_size < len(items):
            following = {k: v for k, v in query.items() if k != "$skiptoken"} | {
                "$skiptoken": str(start + self.page_size)
            }
            page[link] = f"{self.base}{path}?{urlencode(following)}"
        return page

    # -- ARM -------------------------------------------------------------------------------------

    def _assignments(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        scope = path.split("/providers/Microsoft.Authorization/", 1)[0]
        if scope.startswith("/providers/Microsoft.Management/managementGroups/"):
            if query.get("$filter") != "atScope()":
                return 400, arm_error("BadRequest", "management group scope needs $filter=atScope()")
            above = [a for a in self.assignments if scope.lower().startswith(a["properties"]["scope"].lower())]
            return 200, self._page(above, path, query)
        below = [a for a in self.assignments if a["properties"]["scope"].lower().startswith(scope.lower())]
        return 200, self._page(below if self.hide_inherited else self.assignments, path, query)

    def _definitions(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        listed = [d for d in self.definitions if d["name"] not in self.unlisted_definitions]
        return 200, self._page(listed, path, query)

    def _definition(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        guid = path.rstrip("/").rsplit("/", 1)[-1].lower()
        found = next((d for d in self.definitions if d["name"] == guid), None)
        if found is None:
            return 404, arm_error("RoleDefinitionDoesNotExist", "The specified role definition does not exist.")
        return 200, found

    def _operations(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        return 200, self._page(self.operations, path, query)

    def _activity(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        bounds = _filter_bounds(query.get("$filter", ""))
        if bounds is None:
            return 400, arm_error("BadRequest", "The $filter must contain eventTimestamp ge '...'.")
        low, high = bounds
        found = [e for e in self.events if low <= _instant(e["eventTimestamp"]) <= high]
        return 200, self._page(found, path, query)

    def _managed(self, explicit: bool) -> list[dict[str, Any]]:
        """The fixture's managed identities and the resource each one's ``alternativeNames`` names."""
        found = []
        for p in self.principals:
            names = p.get("alternativeNames") or []
            if p.get("servicePrincipalType") != "ManagedIdentity" or (f"isExplicit={explicit}" not in names):
                continue
            resource = next(n for n in names if n.startswith("/subscriptions/"))
            found.append((p, resource))
        return found

    def _resources(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        items = [
            {
                "id": resource,
                "name": resource.rsplit("/", 1)[-1],
                "type": "/".join(resource.split("/providers/", 1)[1].split("/")[:2]),
                "location": "westeurope",
                "tags": self.arm_tags.get(p["id"], {}),
                "identity": {
                    "principalId": p["id"],
                    "tenantId": "72f988bf-0000-4000-8000-00000000beef",
                    "type": "SystemAssigned",
                },
            }
            for p, resource in self._managed(False)
        ]
        storage = (
            f"/subscriptions/{SUB}/resourceGroups/rg-agents/providers/Microsoft.Storage/storageAccounts/stagentreports"
        )
        items.append(
            {
                "id": storage,
                "name": "stagentreports",
                "type": "Microsoft.Storage/storageAccounts",
                "tags": {"agent": "true"},
            }
        )
        return 200, self._page(items, path, query)

    def _identities(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        items = [
            {
                "id": resource,
                "name": resource.rsplit("/", 1)[-1],
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "location": "westeurope",
                "tags": self.arm_tags.get(p["id"], {}),
                "properties": {
                    "principalId": p["id"],
                    "clientId": p["appId"],
                    "tenantId": "72f988bf-0000-4000-8000-00000000beef",
                },
            }
            for p, resource in self._managed(True)
        ]
        return 200, self._page(items, path, query)

    # -- Graph -----------------------------------------------------------------------------------

    def _graph_principals(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        wanted = {i.lower() for i in body.get("ids", [])}
        found = [
            {"@odata.type": "#microsoft.graph.servicePrincipal", **p} for p in self.principals if p["id"] in wanted
        ]
        return 200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects", "value": found}

    def _graph_members(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        group = path.split("/")[3].lower()
        if group not in self.groups:
            return 404, arm_error("Request_ResourceNotFound", f"Resource '{group}' does not exist.")
        return 200, self._page(self.groups[group], path, query, "@odata.nextLink")

    # -- Log Analytics ---------------------------------------------------------------------------

    def _logs_query(self, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        start, end = body["timespan"].split("/")
        rows = aggregate(self.events, _instant(start), _instant(end))
        columns = [
            ("Kind", "string"),
            ("SubscriptionId", "string"),
            ("Day", "string"),
            ("Records", "long"),
            ("Category", "string"),
            ("Principal", "string"),
            ("AppId", "string"),
            ("Operation", "string"),
            ("Ok", "bool"),
            ("Signals", "string"),
            ("Calls", "long"),
            ("FirstSeen", "datetime"),
            ("LastSeen", "datetime"),
            ("Scopes", "dynamic"),
        ]
        table = {
            "name": "PrimaryResult",
            "columns": [{"name": n, "type": t} for n, t in columns],
            "rows": [[r.get(n) for n, _ in columns] for r in rows],
        }
        reply: dict[str, Any] = {"tables": [table]}
        if self.partial_query:
            table["rows"] = table["rows"][: len(table["rows"]) // 2]
            reply["error"] = {
                "code": "PartialError",
                "message": "There were some errors when processing your query.",
                "details": [
                    {
                        "code": "EngineError",
                        "message": "Something went wrong processing your query on the server.",
                        "innererror": {"code": "-2133196797", "message": "Query result set has exceeded the limit."},
                    }
                ],
            }
        return 200, reply


def _instant(text: str) -> str:
    return text[:19] + "Z"


def _filter_bounds(text: str) -> tuple[str, str] | None:
    """``eventTimestamp ge 'A' and eventTimestamp le 'B'`` -> (A, B) as second-precision instants."""
    parts = text.split("'")
    if "eventTimestamp ge" not in text or len(parts) < 2:
        return None
    low = _instant(parts[1])
    high = _instant(parts[3]) if "eventTimestamp le" in text and len(parts) > 3 else "9999-12-31T23:59:59Z"
    return low, high


def aggregate(events: list[dict[str, Any]], start: str, end: str) -> list[dict[str, Any]]:
    """What the collector's KQL returns over ``events`` (EventData), computed here in Python."""
    inside = [e for e in events if start <= _instant(e["eventTimestamp"]) <= end]
    requests: dict[tuple, dict[str, Any]] = {}
    days: dict[tuple[str, str], list] = defaultdict(lambda: [0, "~", ""])
    for e in inside:
        when = e["eventTimestamp"][:23] + "Z"
        sub = e["subscriptionId"].lower()
        day = days[(sub, when[:10])]
        day[0] += 1
        day[1], day[2] = min(day[1], when), max(day[2], when)
        claims = e.get("claims") or {}
        principal = (claims.get(OID) or claims.get("oid") or "").lower()
        operation = (e.get("authorization") or {}).get("action") or e["operationName"]["value"].upper()
        request = e.get("operationId") or e.get("correlationId") or e["eventDataId"]
        key = (sub, e["category"]["value"], principal, (claims.get("appid") or "").lower(), operation, request)
        failed = e["status"]["value"] in ("Failed", "Failure")
        mine = requests.setdefault(key, {"ok": False, "signals": set(), "first": when, "last": when, "scope": None})
        mine["ok"] |= not failed
        if failed:
            mine["signals"].add(f"{e['subStatus']['value']} {(e.get('properties') or {}).get('statusCode', '')}")
        mine["first"], mine["last"] = min(mine["first"], when), max(mine["last"], when)
        mine["scope"] = mine["scope"] or (e.get("authorization") or {}).get("scope")
    groups: dict[tuple, dict[str, Any]] = {}
    for (sub, category, principal, app, operation, _), r in requests.items():
        key = (sub, category, principal, app, operation, r["ok"], "|".join(sorted(r["signals"])))
        g = groups.setdefault(key, {"calls": 0, "first": r["first"], "last": r["last"], "scopes": []})
        g["calls"] += 1
        g["first"], g["last"] = min(g["first"], r["first"]), max(g["last"], r["last"])
        if r["scope"] and r["scope"] not in g["scopes"] and len(g["scopes"]) < 64:
            g["scopes"].append(r["scope"])
    rows = [
        {
            "Kind": "calls",
            "SubscriptionId": sub,
            "Category": category,
            "Principal": principal,
            "AppId": app,
            "Operation": operation,
            "Ok": ok,
            "Signals": signals,
            "Calls": g["calls"],
            "FirstSeen": g["first"],
            "LastSeen": g["last"],
            "Scopes": json.dumps(g["scopes"]),  # dynamic columns arrive as JSON text
        }
        for (sub, category, principal, app, operation, ok, signals), g in sorted(groups.items())
    ]
    rows += [
        {"Kind": "day", "SubscriptionId": sub, "Day": day, "Records": n, "FirstSeen": first, "LastSeen": last}
        for (sub, day), (n, first, last) in sorted(days.items())
    ]
    return rows


@dataclass(frozen=True)
class Served:
    url: str
    ca_file: Path


@contextmanager
def serve(fake: FakeAzure, folder: Path) -> Iterator[Served]:
    """Run ``fake`` over HTTPS on 127.0.0.1 (ephemeral port); the CA certificate goes to ``folder``."""
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca_file = folder / "fake-azure-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            fake.authorization.append(self.headers.get("Authorization") or "")
            status, reply, headers = fake.handle(method, url.path, query, body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.base = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        yield Served(fake.base, ca_file)
    finally:
        server.shutdown()
        server.server_close()
