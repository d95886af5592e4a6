"""The guard with real boto3 against a moto server on 127.0.0.1 (through the test edge, which records
every request that reaches the server side)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from auditor.approvals import open_queue
from auditor.guard import ActionBlocked, ActionDenied, Guard
from tests.aws_live_support import AWS_ENV, Edge, aws_environment, start_edge
from tests.guard_support import AGENT, MemoryQueue, identity, s3_blocklist, write_blocklist

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def edge() -> Edge:
    with aws_environment(False):
        yield start_edge(Edge())


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def s3_with_object(session: boto3.Session, edge: Edge) -> tuple[object, str]:
    s3 = session.client("s3", endpoint_url=edge.url)
    bucket = f"guard-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="report.csv", Body=b"a,b\n")
    return s3, bucket


def s3_calls(edge: Edge) -> list[str]:
    return [op for service, op in edge.calls if service == "s3"]


def test_a_blocked_call_sends_nothing_and_an_allowed_one_goes_through(tmp_path: Path, edge: Edge) -> None:
    log = tmp_path / "guard.jsonl"
    guard = Guard.from_blocklist(s3_blocklist(tmp_path / "b.yaml"), identity=AGENT, log=log)
    session = guard.protect(boto3.Session(region_name="us-east-1"))
    s3, bucket = s3_with_object(session, edge)  # clients made after protect() are covered
    before = s3_calls(edge)
    with pytest.raises(ActionBlocked) as caught:
        s3.delete_bucket(Bucket=bucket)
    assert (caught.value.action, caught.value.rule) == ("s3:DeleteBucket", "test-destroy")
    assert s3_calls(edge) == before  # the server received nothing
    s3.head_bucket(Bucket=bucket)  # allowed (s3:ListBucket), and the bucket is still there
    assert s3_calls(edge) == [*before, "HEAD"]
    decisions = [(r["decision"], r["target"]) for r in records(log)]
    assert decisions == [
        ("allowed", "s3:CreateBucket"),
        ("allowed", "s3:PutObject"),
        ("blocked", "s3:DeleteBucket"),
        ("allowed", "s3:ListBucket"),
    ]
    blocked = records(log)[2]
    assert blocked["resource"] == f"arn:aws:s3:::{bucket}" and blocked["identity"] == AGENT
    assert blocked["operation"] == "s3.DeleteBucket"


def test_what_protect_covers(tmp_path: Path, edge: Edge) -> None:
    guard = Guard.from_blocklist(s3_blocklist(tmp_path / "b.yaml"), identity=AGENT)
    session = boto3.Session(region_name="us-east-1")
    early = session.client("s3", endpoint_url=edge.url)
    guard.protect(session)
    _, bucket = s3_with_object(session, edge)
    with pytest.raises(ActionBlocked):
        session.resource("s3", endpoint_url=edge.url).Bucket(bucket).delete()
    guard.protect(early)  # a client made before protect(session) is guarded once protected itself
    guard.protect(early)  # twice is once
    with pytest.raises(ActionBlocked):
        early.delete_bucket(Bucket=bucket)
    with pytest.raises(ActionBlocked):  # presigning a blocked call is blocked too
        early.generate_presigned_url("delete_bucket", Params={"Bucket": bucket})
    with pytest.raises(TypeError, match="boto3 Session"):
        guard.protect(object())


def test_request_dependent_actions_follow_the_parameters(tmp_path: Path, edge: Edge) -> None:
    path = write_blocklist(tmp_path / "b.yaml", identity("aws", AGENT, "a", deny=["s3:GetObjectVersion"]))
    guard = Guard.from_blocklist(path, identity=AGENT)
    session = guard.protect(boto3.Session(region_name="us-east-1"))
    s3, bucket = s3_with_object(session, edge)
    assert s3.get_object(Bucket=bucket, Key="report.csv")["Body"].read() == b"a,b\n"
    with pytest.raises(ActionBlocked, match="s3:GetObjectVersion"):
        s3.get_object(Bucket=bucket, Key="report.csv", VersionId="v1")
    deny = ["dynamodb:DeleteItem", "dynamodb:PartiQLDelete"]
    deny_delete = write_blocklist(tmp_path / "d.yaml", identity("aws", AGENT, "a", deny=deny))
    ddb = Guard.from_blocklist(deny_delete, identity=AGENT).protect(session.client("dynamodb", endpoint_url=edge.url))
    before = list(edge.calls)
    with pytest.raises(ActionBlocked, match="dynamodb:PartiQLDelete"):  # PartiQL: the statement's verb
        ddb.execute_statement(Statement="DELETE FROM t WHERE pk = 'a'")
    with pytest.raises(ActionBlocked, match="dynamodb:DeleteItem"):  # parameters do not name it: every action
        ddb.transact_write_items(TransactItems=[{"Put": {"TableName": "t", "Item": {"pk": {"S": "a"}}}}])
    assert edge.calls == before


def test_a_call_that_passes_a_role_is_checked_for_iam_passrole(tmp_path: Path, edge: Edge) -> None:
    """IAM authorizes iam:PassRole on every role a call hands to a service; the audit counts it from
    CloudTrail, so the guard must check it too (create_function, create_stack and task definitions went out)."""
    path = write_blocklist(tmp_path / "b.yaml", identity("aws", AGENT, "a", deny=["iam:PassRole"]))
    session = Guard.from_blocklist(path, identity=AGENT).protect(boto3.Session(region_name="us-east-1"))
    role = "arn:aws:iam::123456789012:role/admin"
    before = list(edge.calls)
    calls = [
        lambda: session.client("lambda", endpoint_url=edge.url).create_function(
            FunctionName="f", Runtime="python3.12", Role=role, Handler="h.h", Code={"ZipFile": b"x"}
        ),
        lambda: session.client("cloudformation", endpoint_url=edge.url).create_stack(
            StackName="s", TemplateBody="{}", RoleARN=role
        ),
        lambda: session.client("ecs", endpoint_url=edge.url).register_task_definition(
            family="t", containerDefinitions=[{"name": "c", "image": "i"}], taskRoleArn=role
        ),
    ]
    for call in calls:
        with pytest.raises(ActionBlocked, match="iam:PassRole"):
            call()
    assert edge.calls == before
    sts = session.client("sts", endpoint_url=edge.url)
    with pytest.raises(ClientError, match="AssumeRole"):  # sent (moto knows no such role): it assumes one, passes none
        sts.assume_role(RoleArn=role, RoleSessionName="guard")


def approve_all(request):
    return True, "alice"


def deny_all(request):
    return False, "bob"


@pytest.mark.parametrize(
    ("answer", "timeout", "status"),
    [(approve_all, 30, "approved"), (deny_all, 30, "denied"), (None, 0.3, "expired")],
    ids=["approved", "denied", "expired"],
)
def test_an_approval_call_waits_for_the_queue(tmp_path: Path, edge: Edge, answer, timeout, status) -> None:
    log = tmp_path / "guard.jsonl"
    queue = MemoryQueue(answer)
    guard = Guard.from_blocklist(
        s3_blocklist(tmp_path / "b.yaml"), identity=AGENT, queue=queue, approval_timeout=timeout, log=log
    )
    session = guard.protect(boto3.Session(region_name="us-east-1"))
    s3, bucket = s3_with_object(session, edge)
    before = s3_calls(edge)
    if status == "approved":
        s3.delete_object(Bucket=bucket, Key="report.csv")
        assert s3_calls(edge) == [*before, "DELETE"]
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    else:
        with pytest.raises(ActionDenied) as caught:
            s3.delete_object(Bucket=bucket, Key="report.csv")
        assert caught.value.status == status and caught.value.action == "s3:DeleteObject"
        assert s3_calls(edge) == before
    (request,) = queue.requests.values()
    assert (request.target, request.identity, request.rule) == ("s3:DeleteObject", AGENT, "test-gate")
    assert request.params == {"Bucket": bucket, "Key": "report.csv"}
    flow = [r["decision"] for r in records(log) if r["target"] == "s3:DeleteObject"]
    assert flow == ["approval_requested", status]
    last = [r for r in records(log) if r["target"] == "s3:DeleteObject"][-1]
    assert last["request_id"] == request.id
    assert last["approver"] == {"approved": "alice", "denied": "bob", "expired": None}[status]


def _agent(tmp_path: Path, edge: Edge, queue: Path, bucket: str, timeout: float) -> subprocess.Popen:
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(ROOT)}
    args = [str(s3_blocklist(tmp_path / "b.yaml")), AGENT, str(queue), edge.url, bucket, "report.csv", str(timeout)]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "guard_agent.py"), *args, str(tmp_path / "guard.jsonl")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pending(queue: Path, agent: subprocess.Popen) -> str:
    deadline = time.monotonic() + 120
    with_queue = None
    while time.monotonic() < deadline:
        if queue.exists():
            with_queue = with_queue or open_queue(queue)
            pending = with_queue.list("pending")
            if pending:
                with_queue.close()
                return pending[0].id
        assert agent.poll() is None, agent.communicate()
        time.sleep(0.05)
    raise AssertionError("the agent never asked for approval")


@pytest.mark.parametrize("verb", ["approve", "deny"])
def test_approved_or_denied_from_another_process_through_the_cli(tmp_path: Path, edge: Edge, verb: str) -> None:
    session = boto3.Session(region_name="us-east-1")
    s3, bucket = s3_with_object(session, edge)
    queue = tmp_path / "approvals.db"
    agent = _agent(tmp_path, edge, queue, bucket, 120)
    request_id = _pending(queue, agent)
    before = s3_calls(edge)
    assert "DELETE" not in before  # waiting: nothing sent yet
    cli = subprocess.run(
        [sys.executable, "-m", "auditor", "approvals", verb, request_id, "--queue", str(queue), "--as", "alice"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert cli.returncode == 0, cli.stderr
    out, err = agent.communicate(timeout=120)
    if verb == "approve":
        assert agent.returncode == 0, err
        assert out.split() == ["asking", "deleted"]
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        assert "DELETE" in s3_calls(edge)
    else:
        assert agent.returncode == 3, err
        assert out.split() == ["asking", "refused", "denied", "alice"]
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
        assert "DELETE" not in s3_calls(edge)
    flow = [(r["decision"], r.get("approver")) for r in records(tmp_path / "guard.jsonl")]
    assert flow == [("approval_requested", None), ("approved" if verb == "approve" else "denied", "alice")]


def test_an_unanswered_request_expires_in_the_agent(tmp_path: Path, edge: Edge) -> None:
    session = boto3.Session(region_name="us-east-1")
    s3, bucket = s3_with_object(session, edge)
    agent = _agent(tmp_path, edge, tmp_path / "approvals.db", bucket, 1.0)
    out, err = agent.communicate(timeout=120)
    assert agent.returncode == 3, err
    assert out.split() == ["asking", "refused", "expired", "None"]
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1
    assert open_queue(tmp_path / "approvals.db").list("expired")[0].target == "s3:DeleteObject"


def test_the_readme_example_runs_against_the_bundled_fixtures(tmp_path: Path, edge: Edge) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### In the agent: `auditor.guard`", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = {**os.environ, **AWS_ENV, "PYTHONPATH": str(ROOT), "AWS_ENDPOINT_URL": edge.url}
    audit = [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(ROOT / "fixtures/aws"), "--out", "out", "-q"]
    subprocess.run(audit, cwd=tmp_path, env=env, check=True, capture_output=True)
    agent = subprocess.Popen(
        [sys.executable, "-c", snippet],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    request_id = _pending(tmp_path / "approvals.db", agent)
    assert [c for c in edge.calls if c[0] == "cloudformation"] == []  # waiting: nothing sent
    listed = subprocess.run(
        [sys.executable, "-m", "auditor", "approvals", "list", "--queue", "approvals.db"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert request_id in listed.stdout and "cloudformation:DeleteStack" in listed.stdout
    approve = ["approvals", "approve", request_id, "--queue", "approvals.db", "--note", "CHG-42"]
    subprocess.run([sys.executable, "-m", "auditor", *approve], cwd=tmp_path, env=env, check=True, capture_output=True)
    _, err = agent.communicate(timeout=120)
    assert agent.returncode == 0, err
    assert [c for c in edge.calls if c[0] == "cloudformation"] == [("cloudformation", "POST")]  # approved: sent
    flow = [r["decision"] for r in records(tmp_path / "guard.jsonl")]
    assert flow == ["approval_requested", "approved"]
