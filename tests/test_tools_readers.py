"""Trace readers on a real public OTLP sample and on hostile variants: truncated, nested, mis-typed,
duplicated, future-dated, huge, not traces at all."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from conftest import END
from tools_support import audit_tools, tool_layer

from auditor.connectors.tools import calls, otlp, traces

REAL = Path(__file__).parent / "data" / "real" / "tools"
TOOLS = {"read_file": {"readOnlyHint": True}, "delete_file": {"destructiveHint": True}}


def test_the_protocol_example_reads_as_one_span():
    scan = traces.read_file(REAL / "otel-proto-examples-trace.json", 1 << 20)
    (span,) = scan.spans
    assert (span.trace, span.span, span.service, span.start) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "my.service",
        "2018-12-13T14:51:00Z",
    )
    assert span.role == "other" and not scan.gaps


def _bot(tmp_path):
    return tool_layer(tmp_path / "layer", TOOLS, {"read_file": 3})


def test_truncated_and_mis_typed_spans_are_counted_and_the_rest_is_read(tmp_path):
    manifest = _bot(tmp_path)
    good = (manifest.parent / "traces" / "bot.jsonl").read_text()
    doc = json.loads(good)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = "not a list"
    (manifest.parent / "traces" / "bot.jsonl").write_text(json.dumps(doc) + "\n" + good[: len(good) // 2] + "\n")
    result = audit_tools(manifest)
    assert result.permissions.filter(pl.col("action") == "srv.read_file")["calls"].to_list() == [3]
    reasons = " ".join(result.data.gaps["reason"].to_list())
    assert "malformed span" in reasons


def test_a_file_read_twice_counts_once(tmp_path):
    manifest = _bot(tmp_path)
    copy = manifest.parent / "traces" / "copy.jsonl"
    copy.write_text((manifest.parent / "traces" / "bot.jsonl").read_text())
    result = audit_tools(manifest)
    assert result.permissions.filter(pl.col("action") == "srv.read_file")["calls"].to_list() == [3]


def test_future_dated_spans_are_input_problems_not_the_window(tmp_path):
    manifest = _bot(tmp_path)
    path = manifest.parent / "traces" / "bot.jsonl"
    doc = json.loads(path.read_text())
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append(
        dict(spans[-1], spanId="f" * 16, startTimeUnixNano=str(int((END + timedelta(days=400)).timestamp()) * 10**9))
    )
    path.write_text(json.dumps(doc) + "\n")
    result = audit_tools(manifest)
    assert result.window("tools").end <= END
    assert any("dated after" in r for r in result.data.gaps["reason"].to_list())
    assert result.permissions.filter(pl.col("action") == "srv.read_file")["calls"].to_list() == [3]


def test_huge_and_foreign_files_are_listed_not_read(tmp_path):
    manifest = _bot(tmp_path)
    (manifest.parent / "traces" / "notes.json").write_text(json.dumps({"hello": "world"}))
    (manifest.parent / "traces" / "huge.jsonl").write_text("x" * 5000)
    result = audit_tools(manifest, max_file_bytes=4096)
    reasons = " ".join(result.data.gaps["reason"].to_list())
    assert "not a trace export" in reasons and "per-file cap" in reasons


def test_nested_values_too_deep_are_bad_spans():
    value: dict = {"stringValue": "x"}
    for _ in range(otlp.MAX_DEPTH + 2):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    problems = []
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "a",
                                "spanId": "b",
                                "startTimeUnixNano": "1",
                                "attributes": [{"key": "deep", "value": value}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    assert list(otlp.spans_of(doc, lambda where, exc: problems.append(exc))) == []
    assert problems


def test_attribution_walks_to_the_agent_span_and_merges_nested_views():
    def mk(span_id, parent, role, tool="", agent="", error=False, text=""):
        return otlp.Span(
            "t", span_id, parent, "2026-11-01T00:00:00Z", role, "otel-genai", tool, "", agent, "svc", error, text
        )

    spans = [
        mk("a", "", "agent", agent="planner"),
        mk("c", "a", "other"),
        mk("t1", "c", "tool", tool="mcp__fs__delete"),
        mk("t2", "t1", "tool", tool="delete", error=True, text="PermissionDenied"),
        mk("t3", "", "tool", tool="read"),
    ]
    resolved = calls.resolve(spans, lambda text: "Denied" in text)
    by_tool = {c.tool: c for c in resolved.calls}
    assert set(by_tool) == {"mcp__fs__delete", "read"} and resolved.merged == 1
    assert by_tool["mcp__fs__delete"].agent == "planner" and by_tool["mcp__fs__delete"].outcome == "denied"
    assert by_tool["read"].agent == "svc"  # no agent span: service.name


@pytest.mark.parametrize("name", [{"intValue": "5"}, {"boolValue": True}, {"arrayValue": {"values": []}}])
def test_a_tool_name_that_is_not_a_string_is_a_bad_span_not_a_tool(name):
    """Read as a tool "5", every call was used-not-granted and the tools it called looked unused."""
    problems = []
    span = {
        "traceId": "a",
        "spanId": "b",
        "name": "execute_tool search",
        "startTimeUnixNano": "1700000000000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
            {"key": "gen_ai.tool.name", "value": name},
        ],
    }
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    assert list(otlp.spans_of(doc, lambda where, exc: problems.append(exc))) == []
    assert [str(p) for p in problems] == [f"gen_ai.tool.name {str(otlp.any_value(name))[:40]!r} is not a string"]
