"""``auditor collect mcp`` against a real MCP server (the SDK's MCPServer, tests/mcp_servers/) over
stdio and over streamable HTTP on 127.0.0.1: every page of tools/list with its annotations, no tool
called, secrets never written, failures one line each, and the capture audited tool by tool."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import END, run_cli
from tools_support import audit_tools, request, span

from auditor.connectors.tools.collect import MASK, collect, launches
from auditor.connectors.tools.mcp_config import read_tools_list

SERVER = Path(__file__).parent / "mcp_servers" / "inventory_server.py"
TOOLS = ["add_item", "delete_item", "get_item", "list_items", "restock"]
SECRET = "tok-7f3c9a51e2"


def _config(tmp_path: Path, servers: dict) -> Path:
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": servers}))
    return path


def _stdio(calls: Path, token: str = SECRET) -> dict:
    return {
        "command": sys.executable,
        "args": [str(SERVER), "stdio"],
        "env": {"INVENTORY_CALLS": str(calls), "INVENTORY_REQUIRE_TOKEN": SECRET, "INVENTORY_TOKEN": token},
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    """The same server over streamable HTTP on a free loopback port: (url, calls log)."""
    port, calls = _free_port(), tmp_path / "http-calls.log"
    process = subprocess.Popen(
        [sys.executable, str(SERVER), "http", str(port)],
        env={"PATH": "/usr/bin:/bin", "INVENTORY_CALLS": str(calls)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):  # wait until it listens (or died)
            if process.poll() is not None:
                pytest.fail("the MCP test server exited")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", calls
    finally:
        process.terminate()
        process.wait(10)


def _everything_written(folder: Path) -> str:
    return "".join(p.read_text() for p in folder.rglob("*") if p.is_file())


def test_stdio_capture_reads_every_page_with_annotations_and_calls_no_tool(tmp_path):
    calls = tmp_path / "calls.log"
    (outcome,) = collect([_config(tmp_path, {"inventory": _stdio(calls)})], tmp_path / "out", timeout=60)
    assert not outcome.error, outcome.error
    assert (outcome.tools, outcome.pages) == (5, 3)  # two tools a page
    server, tools = read_tools_list(outcome.file)
    assert server == "inventory" and sorted(t.name for t in tools) == TOOLS
    hints = {t.name: t.annotations for t in tools}
    assert hints["delete_item"] == {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True}
    assert hints["restock"] == {}  # listed without annotations
    assert not calls.exists()  # initialize + tools/list only
    assert SECRET not in _everything_written(tmp_path / "out")


def test_streamable_http_capture_with_headers(tmp_path, http_server):
    url, calls = http_server
    config = _config(tmp_path, {"inv-http": {"type": "http", "url": url, "headers": {"X-Api-Key": "${INV_KEY}"}}})
    (found,), _ = launches(config, environ={"INV_KEY": SECRET})
    assert found.headers == {"X-Api-Key": SECRET}  # ${VAR} from the environment
    (outcome,) = collect([config], tmp_path / "out", timeout=60, environ={"INV_KEY": SECRET})
    assert not outcome.error, outcome.error
    assert outcome.tools == 5 and outcome.pages == 3
    document = json.loads(outcome.file.read_text())
    assert document["transport"] == "http" and document["server"] == "inv-http"
    assert not calls.exists()
    written = _everything_written(tmp_path / "out")
    assert SECRET not in written and url not in written


def test_failures_are_one_line_each_masked_counted_and_fatal_only_with_strict(tmp_path):
    calls = tmp_path / "calls.log"
    leak = "import os, sys; sys.stderr.write('token=' + os.environ['TOKEN'] + '\\n'); sys.exit(1)"
    config = _config(
        tmp_path,
        {
            "good": _stdio(calls),
            "wrong-token": _stdio(calls, token="not-the-token"),
            "leaky": {"command": sys.executable, "args": ["-c", leak], "env": {"TOKEN": SECRET}},
            "editor-input": {"type": "http", "url": "https://x.example/mcp", "headers": {"A": "${input:key}"}},
            "off": {"command": "nothing", "disabled": True},
        },
    )
    out = tmp_path / "out"
    run = run_cli("collect", "mcp", config, "--out", out, "--timeout", "20")
    assert run.code == 0, run.err
    assert "collected 1 of 4 server(s)" in run.out
    failed = [line for line in run.err.splitlines() if line.startswith("auditor: not collected:")]
    assert sorted(line.split(":")[2].strip() for line in failed) == ["editor-input", "leaky", "wrong-token"]
    assert "Traceback" not in run.err and SECRET not in run.err + run.out
    assert any("leaky" in line and f"token={MASK}" in line for line in failed)
    assert [p.name for p in out.iterdir()] == ["good.json"]
    strict = run_cli("collect", "mcp", config, "--out", out, "--timeout", "20", "--server", "wrong-token", "--strict")
    assert strict.code == 2 and "not collected" in strict.err


def test_a_server_that_never_answers_times_out(tmp_path):
    config = _config(tmp_path, {"hangs": {"command": sys.executable, "args": ["-c", "import time; time.sleep(120)"]}})
    (outcome,) = collect([config], tmp_path / "out", timeout=1)
    assert outcome.error == "no answer before the timeout"
    assert not list((tmp_path / "out").glob("*.json"))


def test_capture_round_trips_into_the_audit_with_tool_level_grants(tmp_path):
    root = tmp_path / "layer"
    root.mkdir()
    _config(root, {"inventory": _stdio(tmp_path / "calls.log")})
    manifest = {"version": 1, "project": "lab", "trusted_servers": ["inventory"]}
    manifest["agents"] = [{"name": "bot", "mcp_configs": ["mcp.json"]}]
    (root / "agents.yaml").write_text(yaml.safe_dump(manifest))
    run = run_cli("collect", "mcp", "--tools-manifest", root / "agents.yaml", "--timeout", "60")
    assert run.code == 0, run.err
    assert (root / "tools-list" / "inventory.json").is_file()
    spans = []
    for day in range(31):
        when = END - timedelta(days=30 - day, minutes=5)
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bot"}
        spans.append(span(f"{day:032x}", f"{day:016x}", "invoke_agent bot", when, attrs))
        tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_item"}
        spans.append(span(f"{day:032x}", f"{day + 100:016x}", "execute_tool get_item", when, tool, f"{day:016x}"))
    (root / "traces").mkdir()
    (root / "traces" / "bot.jsonl").write_text(json.dumps(request("bot", spans)) + "\n")
    result = audit_tools(root / "agents.yaml")
    rows = result.permissions.filter(pl.col("provider") == "tools")
    states = dict(rows.select("action", "state").iter_rows())
    assert sorted(states) == [f"inventory.{t}" for t in TOOLS]  # tool level, no "(unlisted tools)"
    assert states["inventory.get_item"] == "used" and states["inventory.delete_item"] == "unused"
    levels = dict(rows.select("action", "access_level").iter_rows())
    assert levels["inventory.get_item"] == "Read" and levels["inventory.restock"] == "Destructive"


def test_a_configuration_without_servers_is_one_line(tmp_path):
    bad = tmp_path / "mcp.json"
    bad.write_text('{"servers": 3}')
    run = run_cli("collect", "mcp", bad, "--out", tmp_path / "out")
    assert run.code == 2 and "mcpServers" in run.err and "Traceback" not in run.err
