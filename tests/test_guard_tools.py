"""The guard around tool functions and MCP handlers, its decision log, and its import weight."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from auditor.guard import ActionBlocked, ActionDenied, DecisionLog, Guard
from auditor.guard.log import MAX_LINE
from tests.guard_support import MemoryQueue, identity, write_blocklist

ROOT = Path(__file__).resolve().parents[1]
AGENT = "agent://acme-agents/billing-agent"
SCHEMA = json.loads((ROOT / "auditor/schemas/guard-log.schema.json").read_text())


def billing_guard(tmp_path: Path, **kwargs: object) -> Guard:
    entry = identity(
        "tools",
        AGENT,
        "billing-agent",
        deny=["billing.void_invoice"],
        approval=["function.refund_order", "postgres.(unlisted tools)"],
        allow=["billing.get_invoice", "function.lookup_order"],
    )
    return Guard.from_blocklist(write_blocklist(tmp_path / "b.yaml", entry), identity="billing-agent", **kwargs)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tool_functions_sync_and_async(tmp_path: Path) -> None:
    log = tmp_path / "guard.jsonl"
    guard = billing_guard(tmp_path, queue=MemoryQueue(lambda r: (True, "erin")), log=log)
    ran: list[str] = []

    @guard.tool()
    def lookup_order(order_id: str) -> str:
        ran.append("lookup")
        return order_id

    @guard.tool("refund_order")
    async def refund(order_id: str, amount: float, api_key: str = "") -> str:
        ran.append("refund")
        return "refunded"

    @guard.tool("delete_everything")
    def delete_everything() -> None:
        ran.append("never")

    assert lookup_order("o-1") == "o-1"
    assert asyncio.run(refund("o-1", 5.0, api_key="sk-live-0123456789abcdefXYZ")) == "refunded"
    with pytest.raises(ActionBlocked) as caught:
        delete_everything()
    assert caught.value.rule == "guard-not-allowed"  # in no list of an allow-list identity
    assert ran == ["lookup", "refund"]
    flow = [(r["decision"], r["target"]) for r in records(log)]
    assert flow == [
        ("allowed", "function.lookup_order"),
        ("approval_requested", "function.refund_order"),
        ("approved", "function.refund_order"),
        ("blocked", "function.delete_everything"),
    ]
    assert records(log)[1]["params"] == {"order_id": "o-1", "amount": 5.0, "api_key": "[redacted]"}
    assert "sk-live" not in log.read_text()


def test_mcp_handler(tmp_path: Path) -> None:
    guard = billing_guard(tmp_path, queue=MemoryQueue(lambda r: (False, "frank")), approval_timeout=5)
    calls: list[str] = []

    @guard.mcp_handler("billing")
    async def call_tool(name: str, arguments: dict) -> list:
        calls.append(name)
        return [{"type": "text", "text": "ok"}]

    @guard.mcp_handler("postgres")
    def call_pg(name: str, arguments: dict) -> str:
        calls.append(name)
        return "ok"

    assert asyncio.run(call_tool("get_invoice", {"id": "i-1"}))
    with pytest.raises(ActionBlocked):
        asyncio.run(call_tool("void_invoice", {"id": "i-1"}))
    with pytest.raises(ActionDenied) as caught:
        call_pg("drop_table", {"table": "invoices"})  # the server's unlisted tools need approval
    assert caught.value.action == "postgres.drop_table" and caught.value.approver == "frank"
    assert calls == ["get_invoice"]


HOSTILE = {
    "password": "hunter2",
    "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlc2lnbmF0dXJl",
    "nested": [{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}],
    "conn": "Server=db;User Id=sa;Password=p@ss;",
    "url": "postgresql://agent:s3cret@db.internal/prod",
    "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "note": "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "blob": b"\x00" * 10,
    "Key": "reports/2026.csv",
}
SECRETS = ("hunter2", "eyJhbGci", "wJalrXUt", "p@ss", "s3cret", "MIIEow")


def test_the_decision_log_redacts_and_matches_its_schema(tmp_path: Path) -> None:
    log = tmp_path / "guard.jsonl"
    guard = billing_guard(tmp_path, log=log)
    guard.check("billing.get_invoice", kind="tool", params=HOSTILE)
    with pytest.raises(ActionBlocked):
        guard.check("billing.void_invoice", kind="tool", params={**HOSTILE, **{f"f{i}": "x" * 8000 for i in range(8)}})
    with pytest.raises(ActionBlocked, match="no approval queue"):
        guard.check("function.refund_order", kind="tool", params=HOSTILE)
    text = log.read_text()
    assert not any(secret in text for secret in SECRETS)
    allowed, _, gated = records(log)
    assert "params" not in allowed  # the hot path does not log parameters
    assert gated["params"]["Key"] == "reports/2026.csv" and gated["params"]["blob"] == "[10 bytes]"
    assert gated["params"]["password"] == "[redacted]"
    for record in records(log):
        jsonschema.validate(record, SCHEMA)
    assert all(len(line) <= MAX_LINE for line in text.encode().splitlines())
    assert "parameters left out" in json.dumps(records(log)[1]["params"])
    assert oct(log.stat().st_mode & 0o777) == "0o600"


def _append(path: str, worker: int, count: int) -> None:
    log = DecisionLog(path)
    for n in range(count):
        log.write({"decision": "allowed", "target": f"w{worker}-{n}", "params": {"pad": "y" * (n * 37 % 3000)}})


def test_appends_from_many_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "guard.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append, args=(str(path), w, 200)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
    lines = path.read_text().splitlines()
    assert sorted(json.loads(line)["target"] for line in lines) == sorted(
        f"w{w}-{n}" for w in range(4) for n in range(200)
    )


def test_importing_the_guard_is_light() -> None:
    code = (
        "import sys, auditor.guard\n"
        "heavy = ('polars', 'boto3', 'botocore', 'azure', 'typer', 'jsonschema', 'yaml', 'msgspec')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_protecting_boto3_loads_neither_polars_nor_azure(tmp_path: Path) -> None:
    code = (
        "import sys, boto3\nfrom auditor.guard import Guard\n"
        f"g = Guard.from_blocklist({str(tmp_path / 'b.yaml')!r}, identity='billing-agent')\n"
        "c = g.protect(boto3.Session(region_name='us-east-1', aws_access_key_id='a', aws_secret_access_key='b'))"
        ".client('s3', endpoint_url='http://127.0.0.1:9')\n"
        "g._aws.actions(c.meta.service_model.operation_model('DeleteBucket'), {})\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'polars', 'azure', 'typer'}))"
    )
    billing_guard(tmp_path)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
