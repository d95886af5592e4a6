"""Test peers for the live AWS connector: moto in server mode, and a small "AWS edge" in front of it.

moto (``ThreadedMotoServer`` on 127.0.0.1) serves IAM, S3, STS, Organizations, Athena and CloudTrail
trails. The edge is a stdlib HTTP server that answers, in AWS's own wire formats, what moto lacks
(``cloudtrail:LookupEvents`` in the JSON 1.1 protocol, ``iam:GenerateServiceLastAccessedDetails`` /
``GetServiceLastAccessedDetails`` in the query/XML protocol, ``athena:GetTableMetadata``) and the
faults the tests need (throttling, access denied, expired tokens, a KMS-encrypted log object, STS
refusing a role that does not exist), and forwards every other request to moto unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "aws"
MANAGEMENT = "123456789012"  # moto's default account: the caller's
IAM_NS = "https://iam.amazonaws.com/doc/2010-05-08/"
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/auditor-test-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/auditor-test-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
}
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE")


@contextlib.contextmanager
def aws_environment(managed_policies: bool | Collection[str] = True) -> Iterator[None]:
    """Fake credentials, no profile files, no real endpoint: nothing can reach a real AWS account.

    ``managed_policies``: moto accounts created meanwhile get AWS's real managed policies: all ~1,600
    (True), only those named (what an export attaches: every authorization-details call then lists
    only them, as it would in an account, instead of serializing 1,600 documents), or none (False).
    The test peers answer at once: asynchronous jobs (Access Advisor, Athena) are polled every 10 ms."""
    from moto.iam import models as moto_iam

    from auditor.connectors.aws import access_advisor, athena

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(access_advisor, "POLL_START", 0.01)
        patch.setattr(athena, "POLL_START", 0.01)
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        patch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", str(bool(managed_policies)).lower())
        if not isinstance(managed_policies, bool):
            every = json.loads(moto_iam.aws_managed_policies_data)
            wanted = {name: every[name] for name in managed_policies}
            patch.setattr(moto_iam, "aws_managed_policies_data", json.dumps(wanted))
        for name in UNSET:
            patch.delenv(name, raising=False)
        yield


def aws_managed_names(auth: dict[str, Any]) -> list[str]:
    """The AWS managed policies an authorization-details export holds."""
    return [p["PolicyName"] for p in auth.get("Policies", []) if ":iam::aws:policy/" in p["Arn"]]


@cache
def moto_url() -> str:
    """One moto server per test process (tests reset it with :func:`reset_moto`)."""
    for name, value in AWS_ENV.items():
        os.environ.setdefault(name, value)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    atexit.register(server.stop)
    host, port = server.get_host_and_port()
    return f"http://{host}:{port}"


def _moto_address() -> tuple[str, int]:
    host, port = urlsplit(moto_url()).netloc.split(":")
    return host, int(port)


def _moto_post(path: str, body: str = "") -> int:
    connection = HTTPConnection(*_moto_address(), timeout=60)
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    status = connection.getresponse().status
    connection.close()
    return status


def reset_moto() -> None:
    assert _moto_post("/moto-api/reset") == 200


def set_athena_results(results: list[dict[str, Any]]) -> None:
    """Queue Athena results in moto, in the order queries will be started."""
    body = json.dumps({"account_id": MANAGEMENT, "region": "us-east-1", "results": results})
    assert _moto_post("/moto-api/static/athena/query-results", body) == 201


def client(service: str, session: boto3.Session | None = None, region: str = "us-east-1") -> Any:
    return (session or boto3.Session()).client(service, region_name=region, endpoint_url=moto_url())


def member_session(account: str, role: str = "OrganizationAccountAccessRole") -> boto3.Session:
    """Credentials inside a moto account (moto lets the caller assume into any account)."""
    creds = client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/{role}", RoleSessionName="seed")
    c = creds["Credentials"]
    return boto3.Session(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"], region_name="us-east-1")


# ----------------------------------------------------------------------------- the edge


def _xml(action: str, result: str, namespace: str = IAM_NS) -> bytes:
    return (
        f'<{action}Response xmlns="{namespace}"><{action}Result>{result}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    ).encode()


def _xml_error(code: str, message: str, namespace: str = IAM_NS) -> bytes:
    return (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()


def _member(tag: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return f"<{tag}>" + "".join(f"<member>{_fields(v)}</member>" for v in value) + f"</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _fields(item: dict[str, Any]) -> str:
    return "".join(_member(k, v) for k, v in item.items())


@dataclass
class Edge:
    """What the edge answers itself. Tests set these fields; ``calls`` records (service, operation)."""

    lookup_events: list[dict[str, Any]] = field(default_factory=list)  # CloudTrail records
    lookup_region: str = "us-east-1"
    throttle_first: set[str] = field(default_factory=set)  # operations answered ThrottlingException once
    deny: set[str] = field(default_factory=set)  # operations answered AccessDenied
    expire: set[str] = field(default_factory=set)  # operations answered ExpiredToken
    kms_locked: set[str] = field(default_factory=set)  # S3 keys answered like an undecryptable SSE-KMS object
    regions: list[str] | None = None  # what ec2:DescribeRegions answers (None: moto's ~30; each costs a client)
    advisor: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # ARN -> ServicesLastAccessed
    partition_keys: list[str] = field(default_factory=lambda: ["timestamp"])
    calls: list[tuple[str, str]] = field(default_factory=list)
    jobs: dict[str, list[Any]] = field(default_factory=dict)  # job id -> [arn, polls]
    url: str = ""

    def handle(self, service: str, region: str, op: str, body: bytes, path: str) -> tuple[int, str, bytes] | None:
        self.calls.append((service, op))
        if op in self.throttle_first:
            self.throttle_first.discard(op)
            if service == "iam":
                return 400, "text/xml", _xml_error("Throttling", "Rate exceeded")
            return (
                400,
                "application/x-amz-json-1.1",
                json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode(),
            )
        if op in self.deny or op in self.expire:
            code = "AccessDenied" if op in self.deny else "ExpiredToken"
            caller = f"arn:aws:sts::{MANAGEMENT}:assumed-role/auditor-readonly/auditor"
            message = f"User: {caller} is not authorized to perform: {service}:{op}"
            if service in ("iam", "sts"):
                return 403, "text/xml", _xml_error(code, message, STS_NS if service == "sts" else IAM_NS)
            json_code = "AccessDeniedException" if code == "AccessDenied" else "ExpiredTokenException"
            return 400, "application/x-amz-json-1.1", json.dumps({"__type": json_code, "message": message}).encode()
        if service == "s3" and op == "GET" and path.split("?")[0].split("/", 2)[-1] in self.kms_locked:
            message = (
                f"User: arn:aws:sts::{MANAGEMENT}:assumed-role/auditor-readonly/auditor is not authorized to perform: "
                f"kms:Decrypt on resource: arn:aws:kms:us-east-1:{MANAGEMENT}:key/4f1c2a9e because no identity-based "
                "policy allows the kms:Decrypt action"
            )
            return (
                403,
                "application/xml",
                (
                    '<?xml version="1.0" encoding="UTF-8"?>'
                    f"<Error><Code>AccessDenied</Code><Message>{escape(message)}</Message>"
                    f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId><HostId>edge</HostId></Error>"
                ).encode(),
            )
        if service == "cloudtrail" and op == "LookupEvents":
            return self._lookup(region, json.loads(body or b"{}"))
        if service == "iam" and op in ("GenerateServiceLastAccessedDetails", "GetServiceLastAccessedDetails"):
            return self._advisor(op, {k: v[0] for k, v in parse_qs(body.decode()).items()})
        if service == "athena" and op == "GetTableMetadata":
            request = json.loads(body)
            metadata = {
                "Name": request["TableName"],
                "TableType": "EXTERNAL_TABLE",
                "Columns": [{"Name": "eventtime", "Type": "string"}],
                "PartitionKeys": [{"Name": k, "Type": "string"} for k in self.partition_keys],
            }
            return 200, "application/x-amz-json-1.1", json.dumps({"TableMetadata": metadata}).encode()
        if service == "ec2" and op == "DescribeRegions" and self.regions is not None:
            items = "".join(
                f"<item><regionName>{r}</regionName><regionEndpoint>ec2.{r}.amazonaws.com</regionEndpoint>"
                "<optInStatus>opt-in-not-required</optInStatus></item>"
                for r in self.regions
            )
            document = (
                '<DescribeRegionsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                f"<requestId>{uuid.uuid4()}</requestId><regionInfo>{items}</regionInfo></DescribeRegionsResponse>"
            )
            return 200, "text/xml", document.encode()
        if service == "sts" and op == "AssumeRole":
            return self._assume_role({k: v[0] for k, v in parse_qs(body.decode()).items()})
        return None

    def _lookup(self, region: str, request: dict[str, Any]) -> tuple[int, str, bytes]:
        start, end = request.get("StartTime", 0), request.get("EndTime", 2**40)
        events = [
            e
            for e in (self.lookup_events if region == self.lookup_region else [])
            if start <= datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")).timestamp() <= end
        ]
        offset = int(request.get("NextToken") or 0)
        size = min(int(request.get("MaxResults") or 50), 50)
        page = events[offset : offset + size]
        items = [
            {
                "EventId": e["eventID"],
                "EventName": e["eventName"],
                "ReadOnly": str(e.get("readOnly", True)).lower(),
                "EventTime": datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00")).timestamp(),
                "EventSource": e["eventSource"],
                "Username": e["userIdentity"].get("arn", "").rsplit("/", 1)[-1],
                "Resources": [],
                "CloudTrailEvent": json.dumps(e),
            }
            for e in page
        ]
        response: dict[str, Any] = {"Events": items}
        if offset + size < len(events):
            response["NextToken"] = str(offset + size)
        return 200, "application/x-amz-json-1.1", json.dumps(response).encode()

    def _advisor(self, op: str, params: dict[str, str]) -> tuple[int, str, bytes]:
        if op == "GenerateServiceLastAccessedDetails":
            job = str(uuid.uuid4())
            self.jobs[job] = [params["Arn"], 0]
            return 200, "text/xml", _xml(op, f"<JobId>{job}</JobId>")
        arn, polls = self.jobs[params["JobId"]]
        self.jobs[params["JobId"]][1] += 1
        if polls == 0:  # AWS needs a moment: the first poll finds the job running
            return (
                200,
                "text/xml",
                _xml(
                    op,
                    "<JobStatus>IN_PROGRESS</JobStatus><JobType>ACTION_LEVEL</JobType>"
                    "<JobCreationDate>2026-11-21T00:00:00Z</JobCreationDate>",
                ),
            )
        services = self.advisor.get(arn, [])
        marker = int(params.get("Marker") or 0)
        size = int(params.get("MaxItems") or 2)  # small pages, so pagination is exercised
        page = services[marker : marker + size]
        more = marker + size < len(services)
        result = (
            "<JobStatus>COMPLETED</JobStatus><JobType>ACTION_LEVEL</JobType>"
            "<JobCreationDate>2026-11-21T00:00:00Z</JobCreationDate>"
            + _member("ServicesLastAccessed", page)
            + "<JobCompletionDate>2026-11-21T00:00:05Z</JobCompletionDate>"
            + f"<IsTruncated>{str(more).lower()}</IsTruncated>"
            + (f"<Marker>{marker + size}</Marker>" if more else "")
        )
        return 200, "text/xml", _xml(op, result)

    def _assume_role(self, params: dict[str, str]) -> tuple[int, str, bytes] | None:
        """STS refuses a role that does not exist (moto would hand out credentials anyway)."""
        from moto.iam.models import iam_backends

        arn = params["RoleArn"]
        account, name = arn.split(":")[4], arn.rsplit("/", 1)[-1]
        if any(role.name == name for role in iam_backends[account]["aws"].roles.values()):
            return None
        message = (
            f"User: arn:aws:iam::{MANAGEMENT}:user/moto is not authorized to perform: sts:AssumeRole on resource: {arn}"
        )
        return 403, "text/xml", _xml_error("AccessDenied", message, STS_NS)


class _Handler(BaseHTTPRequestHandler):
    edge: Edge
    moto: tuple[str, int]

    def log_message(self, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        scope = _SCOPE.search(self.headers.get("Authorization", ""))
        region, service = scope.groups() if scope else ("us-east-1", "")
        target = self.headers.get("X-Amz-Target")
        if target:
            op = target.rsplit(".", 1)[-1]
        elif service in ("iam", "sts", "ec2"):  # the query protocol
            op = parse_qs(body.decode()).get("Action", [""])[0]
        else:
            op = self.command
        answer = self.edge.handle(service, region, op, body, self.path)
        if answer is None:
            status, headers, payload = self._forward(body)
        else:
            status, content_type, payload = answer
            headers = [("Content-Type", content_type), ("x-amzn-RequestId", str(uuid.uuid4()))]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = HTTPConnection(*self.moto, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
        connection.request(self.command, self.path, body=body or None, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        skip = ("connection", "transfer-encoding", "content-length", "server", "date")
        return response.status, [(k, v) for k, v in response.getheaders() if k.lower() not in skip], payload

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve


def start_edge(edge: Edge) -> Edge:
    handler = type("Handler", (_Handler,), {"edge": edge, "moto": _moto_address()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    atexit.register(server.shutdown)
    edge.url = f"http://127.0.0.1:{server.server_address[1]}"
    return edge


# ----------------------------------------------------------------------------- seeding


def seed_iam(iam: Any, auth: dict[str, Any]) -> None:
    """Recreate an authorization-details export in a moto account (AWS managed policies exist already)."""
    for policy in auth.get("Policies", []):
        if ":iam::aws:policy/" in policy["Arn"]:
            continue
        versions = sorted(policy["PolicyVersionList"], key=lambda v: v["VersionId"])
        created = iam.create_policy(
            PolicyName=policy["PolicyName"], Path=policy["Path"], PolicyDocument=json.dumps(versions[0]["Document"])
        )
        for version in versions[1:]:
            iam.create_policy_version(
                PolicyArn=created["Policy"]["Arn"],
                PolicyDocument=json.dumps(version["Document"]),
                SetAsDefault=version["IsDefaultVersion"],
            )
    for group in auth.get("GroupDetailList", []):
        iam.create_group(GroupName=group["GroupName"], Path=group["Path"])
        for inline in group["GroupPolicyList"]:
            iam.put_group_policy(
                GroupName=group["GroupName"],
                PolicyName=inline["PolicyName"],
                PolicyDocument=json.dumps(inline["PolicyDocument"]),
            )
        for attached in group["AttachedManagedPolicies"]:
            iam.attach_group_policy(GroupName=group["GroupName"], PolicyArn=attached["PolicyArn"])
    for kind, entries in (("Role", auth.get("RoleDetailList", [])), ("User", auth.get("UserDetailList", []))):
        for entity in entries:
            name = entity[f"{kind}Name"]
            params: dict[str, Any] = {f"{kind}Name": name, "Path": entity["Path"], "Tags": entity.get("Tags", [])}
            if kind == "Role":
                params["AssumeRolePolicyDocument"] = json.dumps(entity["AssumeRolePolicyDocument"])
            if "PermissionsBoundary" in entity:
                params["PermissionsBoundary"] = entity["PermissionsBoundary"]["PermissionsBoundaryArn"]
            getattr(iam, f"create_{kind.lower()}")(**params)
            for inline in entity.get(f"{kind}PolicyList", []):
                getattr(iam, f"put_{kind.lower()}_policy")(
                    **{f"{kind}Name": name},
                    PolicyName=inline["PolicyName"],
                    PolicyDocument=json.dumps(inline["PolicyDocument"]),
                )
            for attached in entity["AttachedManagedPolicies"]:
                getattr(iam, f"attach_{kind.lower()}_policy")(**{f"{kind}Name": name}, PolicyArn=attached["PolicyArn"])
            for group in entity.get("GroupList", []):
                iam.add_user_to_group(GroupName=group, UserName=name)


def upload_logs(s3: Any, bucket: str, root: Path, prefix: str = "", keep: Any = None) -> list[str]:
    """Upload every file below ``root/AWSLogs`` to ``bucket`` under ``prefix`` (8 at a time); returns the keys."""
    chosen = {}
    for path in sorted((root / "AWSLogs").rglob("*.json.gz")):
        key = prefix + path.relative_to(root).as_posix()
        if keep is None or keep(key):
            chosen[key] = path
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(lambda item: s3.put_object(Bucket=bucket, Key=item[0], Body=item[1].read_bytes()), chosen.items())
        )
    return list(chosen)
