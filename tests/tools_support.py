"""Shared helpers of the tool-layer tests: a tool-layer folder written from a few facts, and the
audit of a manifest."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from conftest import END, audit

from auditor.connectors.tools.source import ToolSource

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tools" / "agents.yaml"


def kv(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": str(v)}} for k, v in attrs.items()]


def span(
    trace: str, span_id: str, name: str, when: datetime, attrs: dict[str, Any], parent: str = "", **extra: Any
) -> dict[str, Any]:
    out = {
        "traceId": trace,
        "spanId": span_id,
        "name": name,
        "startTimeUnixNano": str(int(when.timestamp()) * 1_000_000_000),
        "attributes": kv(attrs),
        **extra,
    }
    if parent:
        out["parentSpanId"] = parent
    return out


def request(service: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceSpans": [{"resource": {"attributes": kv({"service.name": service})}, "scopeSpans": [{"spans": spans}]}]
    }


def tool_layer(
    root: Path,
    tools: dict[str, dict[str, Any] | None],
    calls: dict[str, int],
    instrumented: bool = True,
    server: str = "srv",
    trusted: bool = True,
) -> Path:
    """A manifest of one agent ``bot`` wired to one server exposing ``tools`` (name -> annotations),
    with a daily ``invoke_agent`` span for 31 days when instrumented and ``calls[name]`` calls."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mcp.json").write_text(json.dumps({"mcpServers": {server: {"command": "srv"}}}))
    (root / "tools-list").mkdir(exist_ok=True)
    listed = [{"name": n, "inputSchema": {}, **({"annotations": a} if a is not None else {})} for n, a in tools.items()]
    (root / "tools-list" / f"{server}.json").write_text(json.dumps({"tools": listed}))
    manifest = {
        "version": 1,
        "project": "lab",
        "trusted_servers": [server] if trusted else [],
        "agents": [{"name": "bot", "mcp_configs": ["mcp.json"]}],
    }
    (root / "agents.yaml").write_text(yaml.safe_dump(manifest))
    (root / "traces").mkdir(exist_ok=True)
    if instrumented:
        spans = []
        for day in range(31):
            when = END - timedelta(days=30 - day, minutes=5)
            spans.append(
                span(
                    f"{day:032x}",
                    f"{day:016x}",
                    "invoke_agent bot",
                    when,
                    {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "bot"},
                )
            )
        for index, (name, count) in enumerate(sorted(calls.items())):
            for n in range(count):
                when = END - timedelta(days=n + 1)
                spans.append(
                    span(
                        f"{29 - n:032x}",
                        f"{index + 1:08x}{n:08x}",
                        f"execute_tool {name}",
                        when,
                        {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name},
                        parent=f"{29 - n:016x}",
                    )
                )
        (root / "traces" / "bot.jsonl").write_text(json.dumps(request("bot-svc", spans)) + "\n")
    return root / "agents.yaml"


def audit_tools(manifest: Path, max_file_bytes: int = 1 << 30, **options: Any):
    return audit(ToolSource(manifest, max_file_bytes=max_file_bytes), **options)
