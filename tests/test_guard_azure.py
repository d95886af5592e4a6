"""The guard in a real Azure SDK client (azure-mgmt-authorization) against a local HTTPS server."""

from __future__ import annotations

import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
import yaml
from azure.core.credentials import AccessToken
from azure.mgmt.authorization import AuthorizationManagementClient
from hypothesis import given
from hypothesis import strategies as st

from auditor.guard import ActionBlocked, ActionDenied, Guard
from auditor.guard.arm import operation
from tests.guard_support import MemoryQueue, identity, write_blocklist

DATA = Path(__file__).parent / "data" / "guard"
SUB = "3f2b5c1e-8d4a-4b7e-9c21-6a0e5d7f1b42"
MI = "de34afc6-b272-5712-9fee-8745f88bf4c4"
SCOPE = f"/subscriptions/{SUB}/resourceGroups/rg-agents"


class FakeCredential:
    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


class _Arm(BaseHTTPRequestHandler):
    seen: list[tuple[str, str]]

    def log_message(self, *args: object) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append((self.command, self.path.split("?")[0]))
        path = self.path.split("?")[0]
        if self.command == "GET" and path.endswith("/roleAssignments"):
            payload = {"value": [_assignment("a1")]}
        elif self.command in ("PUT", "DELETE"):
            payload = _assignment(path.rsplit("/", 1)[-1], json.loads(body or b"{}").get("properties"))
        else:
            payload = {}
        data = json.dumps(payload).encode()
        self.send_response(200 if self.command != "PUT" else 201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_DELETE = do_POST = _serve


def _assignment(name: str, properties: dict | None = None) -> dict:
    return {
        "id": f"{SCOPE}/providers/Microsoft.Authorization/roleAssignments/{name}",
        "name": name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": properties
        or {
            "roleDefinitionId": f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/r",
            "principalId": MI,
            "scope": SCOPE,
        },
    }


@pytest.fixture
def arm(tmp_path: Path) -> Iterator[tuple[str, list, str]]:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    seen: list[tuple[str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Arm,), {"seen": seen}))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    yield f"https://127.0.0.1:{server.server_address[1]}", seen, str(ca_path)
    server.shutdown()


def _guard(tmp_path: Path, **kwargs: object) -> Guard:
    entry = identity(
        "azure",
        MI,
        "func-triage",
        deny=["Microsoft.Authorization/roleAssignments/delete"],
        approval=["Microsoft.Authorization/roleAssignments/write"],
    )
    return Guard.from_blocklist(write_blocklist(tmp_path / "b.yaml", entry), identity="func-triage", **kwargs)


def _client(guard: Guard, arm: tuple[str, list, str]) -> AuthorizationManagementClient:
    url, _, ca = arm
    return AuthorizationManagementClient(
        FakeCredential(), SUB, base_url=url, connection_verify=ca, per_call_policies=[guard.azure_policy()]
    )


def test_blocked_allowed_and_approved_azure_calls(tmp_path: Path, arm) -> None:
    queue = MemoryQueue(lambda r: (True, "carol"))
    log = tmp_path / "guard.jsonl"
    guard = _guard(tmp_path, queue=queue, log=log)
    client = _client(guard, arm)
    _, seen, _ = arm
    assert [a.name for a in client.role_assignments.list_for_subscription()] == ["a1"]  # allowed: a read
    assert seen == [("GET", f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments")]
    with pytest.raises(ActionBlocked) as caught:
        client.role_assignments.delete(SCOPE, "a1")
    assert caught.value.action == "Microsoft.Authorization/roleAssignments/delete"
    assert len(seen) == 1  # the server received nothing
    name = str(uuid.uuid4())
    parameters = {"role_definition_id": "/x", "principal_id": MI}
    created = client.role_assignments.create(SCOPE, name, parameters)  # waits, approved, sent unchanged
    assert created.name == name and seen[-1][0] == "PUT" and len(seen) == 2
    (request,) = queue.requests.values()
    assert request.target == "Microsoft.Authorization/roleAssignments/write"
    assert request.resource == f"{SCOPE}/providers/Microsoft.Authorization/roleAssignments/{name}"
    assert request.params["body"]["properties"]["principalId"] == MI
    decisions = [json.loads(line)["decision"] for line in log.read_text().splitlines()]
    assert decisions == ["allowed", "blocked", "approval_requested", "approved"]


def test_a_denied_azure_approval_sends_nothing(tmp_path: Path, arm) -> None:
    guard = _guard(tmp_path, queue=MemoryQueue(lambda r: (False, "dave")))
    client = _client(guard, arm)
    with pytest.raises(ActionDenied) as caught:
        client.role_assignments.create(SCOPE, str(uuid.uuid4()), {"role_definition_id": "/x", "principal_id": MI})
    assert (caught.value.status, caught.value.approver) == ("denied", "dave")
    assert arm[1] == []


def test_arm_operations_of_real_azure_cli_requests() -> None:
    expected = [
        "Microsoft.KeyVault/vaults/read",
        "Microsoft.Resources/subscriptions/resources/read",
        "Microsoft.KeyVault/vaults/write",
        None,  # the vault's data plane: not an ARM operation
        "Microsoft.KeyVault/vaults/delete",
        "Microsoft.KeyVault/deletedVaults/read",
    ]
    requests = yaml.safe_load((DATA / "azure_cli_keyvault_softdelete_requests.yaml").read_text())
    assert [operation(r["method"], r["uri"]) for r in requests] == expected


def test_arm_operation_shapes() -> None:
    sa = f"{SCOPE}/providers/Microsoft.Storage/storageAccounts/sa1"
    assert operation("POST", f"{sa}/listKeys?api-version=1") == "Microsoft.Storage/storageAccounts/listKeys/action"
    assert operation("DELETE", f"{sa}/blobServices/default/containers/c") == (
        "Microsoft.Storage/storageAccounts/blobServices/containers/delete"
    )
    assert operation("PATCH", sa) == "Microsoft.Storage/storageAccounts/write"
    assert operation("DELETE", SCOPE) == "Microsoft.Resources/subscriptions/resourceGroups/delete"
    assert operation("POST", f"/subscriptions/{SUB}/providers/Microsoft.Compute/register") == (
        "Microsoft.Compute/register/action"
    )
    ext = f"{sa}/providers/Microsoft.Authorization/roleAssignments/x"
    assert operation("PUT", ext) == "Microsoft.Authorization/roleAssignments/write"  # the innermost provider
    for hostile in ("", "/", "/providers", "/providers/notanamespace/x", "/foo/bar", "/subscriptions/../../etc"):
        assert operation("DELETE", hostile) is None or operation("DELETE", hostile).startswith("Microsoft.")


segment = st.text(st.sampled_from("abcXYZ09-_."), min_size=1, max_size=6)


@given(
    ns=st.sampled_from(["Microsoft.Storage", "Microsoft.Compute"]),
    types=st.lists(segment, min_size=1, max_size=3),
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "HEAD"]),
)
def test_a_resource_path_names_its_type_and_verb(ns: str, types: list[str], method: str) -> None:
    path = SCOPE + f"/providers/{ns}/" + "/".join(f"{t}/name{i}" for i, t in enumerate(types))
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}[method]
    assert operation(method, "https://management.azure.com" + path) == f"{ns}/{'/'.join(types)}/{verb}"
