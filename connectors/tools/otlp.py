"""Spans out of trace exports (no file I/O here): what a tool-call audit needs of each span.

Shapes read: OTLP JSON as the OpenTelemetry collector's ``file`` exporter writes it (one
``ExportTraceServiceRequest`` per line: ``resourceSpans`` → ``scopeSpans`` (or the older
``instrumentationLibrarySpans``) → ``spans``, attributes as ``{key, value: {stringValue | intValue |
...}}`` lists, ids as hex, times as nanosecond strings or numbers), one such document or an array of
them; and the OpenTelemetry SDK's JSON spans (``ConsoleSpanExporter``, Phoenix / OpenInference span
exports: ``context.trace_id``, ``parent_id``, ``start_time``, flat ``attributes``), one per line or
in an array. A span without ids or a valid start time, or with mis-typed attributes, is a bad
record; the rest of the file is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from auditor.timefmt import iso_utc, normalize_iso

MAX_DEPTH = 64  # kvlist / array values nested deeper are not read

# Which instrumentation a tool span comes from, and where each puts the tool's name.
GENAI, OPENINFERENCE, MCP, OPENLLMETRY, CLAUDE_CODE = "otel-genai", "openinference", "mcp", "openllmetry", "claude-code"
_TOOL_NAME_KEYS = ("gen_ai.tool.name", "tool.name", "mcp.tool.name", "tool_name", "traceloop.entity.name")
_CALL_ID_KEYS = ("gen_ai.tool.call.id", "tool.id", "tool_call.id", "tool_use_id", "jsonrpc.request.id")
_AGENT_KEYS = ("gen_ai.agent.name", "agent.name", "agent_name")


@dataclass(frozen=True, slots=True)
class Span:
    """One span, reduced to what attribution, de-duplication and outcomes need."""

    trace: str
    span: str
    parent: str
    start: str  # YYYY-MM-DDTHH:MM:SSZ
    role: str  # tool | agent | other
    instrumentation: str  # for tool spans: otel-genai | openinference | mcp | openllmetry | claude-code
    tool: str
    call_id: str
    agent: str  # the agent name the span itself carries
    service: str  # resource service.name
    error: bool
    error_text: str  # error.type, status message and exception types, "; "-joined


class BadSpan(ValueError):
    pass


def any_value(value: Any, depth: int = 0) -> Any:
    """An OTLP ``AnyValue`` as a Python value (64-bit ints may be strings); BadSpan if mis-typed."""
    if not isinstance(value, dict) or depth > MAX_DEPTH:
        raise BadSpan("attribute value is not an AnyValue object")
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            raise BadSpan(f"intValue {value['intValue']!r} is not an integer") from None
    if "arrayValue" in value:
        return [any_value(v, depth + 1) for v in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return attributes((value["kvlistValue"] or {}).get("values") or [], depth + 1)
    return value.get("bytesValue")


def attributes(pairs: Any, depth: int = 0) -> dict[str, Any]:
    """An OTLP ``KeyValue`` list (or an SDK export's flat mapping) as a dict."""
    if isinstance(pairs, dict):
        return pairs
    if not isinstance(pairs, list):
        raise BadSpan("attributes is not a list")
    out: dict[str, Any] = {}
    for pair in pairs:
        if not isinstance(pair, dict) or not isinstance(pair.get("key"), str):
            raise BadSpan("attribute without a string key")
        out[pair["key"]] = any_value(pair.get("value"), depth)
    return out


def _text(attrs: dict[str, Any], keys: tuple[str, ...]) -> str:
    for key in keys:
        value = attrs.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return ""


def _nanos(value: Any) -> str:
    try:
        nanos = int(value)
        return iso_utc(datetime.fromtimestamp(nanos / 1e9, UTC))
    except (TypeError, ValueError, OverflowError, OSError):
        raise BadSpan(f"start time {value!r} is not a time") from None


def _role(attrs: dict[str, Any], name: str) -> tuple[str, str]:
    operation = str(attrs.get("gen_ai.operation.name", ""))
    method = str(attrs.get("mcp.method.name", "") or attrs.get("rpc.method", ""))
    kind = str(attrs.get("openinference.span.kind", "")).upper()
    traceloop = str(attrs.get("traceloop.span.kind", "")).lower()
    if method == "tools/call":
        return "tool", MCP
    if operation == "execute_tool":
        return "tool", GENAI
    if kind == "TOOL":
        return "tool", OPENINFERENCE
    if traceloop == "tool":
        return "tool", OPENLLMETRY
    if name == "claude_code.tool" or (name.startswith("claude_code.") and "tool_name" in attrs):
        return "tool", CLAUDE_CODE
    if operation in ("invoke_agent", "create_agent") or kind == "AGENT" or traceloop == "agent":
        return "agent", ""
    return "other", ""


def _tool_name(attrs: dict[str, Any], name: str) -> str:
    for key in _TOOL_NAME_KEYS:
        value = attrs.get(key)
        if value is not None and not isinstance(value, str):  # counted as a tool "5", the real one unused
            raise BadSpan(f"{key} {str(value)[:40]!r} is not a string")
    found = _text(attrs, _TOOL_NAME_KEYS)
    if found:
        return found
    for prefix in ("execute_tool ", "tools/call "):
        if name.startswith(prefix):
            return name[len(prefix) :].strip()
    return name.removesuffix(".tool") if name.endswith(".tool") else ""


def _agent_name(attrs: dict[str, Any], name: str, role: str) -> str:
    found = _text(attrs, _AGENT_KEYS)
    if found or role != "agent":
        return found
    if name.startswith("invoke_agent "):
        return name[len("invoke_agent ") :].strip()
    return _text(attrs, ("traceloop.entity.name",)) or name


def _errors(attrs: dict[str, Any], status: Any, events: Any) -> tuple[bool, str]:
    texts = [str(attrs["error.type"])] if attrs.get("error.type") else []
    code = status.get("code", status.get("status_code")) if isinstance(status, dict) else None
    if isinstance(status, dict) and status.get("message", status.get("description")):
        texts.append(str(status.get("message") or status.get("description")))
    for event in events if isinstance(events, list) else []:
        if isinstance(event, dict) and event.get("name") == "exception":
            try:
                kind = attributes(event.get("attributes") or [])
            except BadSpan:
                continue
            if kind.get("exception.type"):
                texts.append(str(kind["exception.type"]))
    errored = code in (2, "2", "STATUS_CODE_ERROR", "ERROR") or bool(attrs.get("error.type"))
    if attrs.get("success") is False or str(attrs.get("success")).lower() == "false":  # Claude Code
        errored = True
    return errored, "; ".join(texts)


def build_span(
    trace: Any,
    span_id: Any,
    parent: Any,
    start: str,
    name: Any,
    attrs: dict[str, Any],
    service: str,
    status: Any,
    events: Any,
) -> Span:
    if not isinstance(trace, str) or not trace or not isinstance(span_id, str) or not span_id:
        raise BadSpan("span without traceId / spanId")
    name = name if isinstance(name, str) else ""
    role, instrumentation = _role(attrs, name)
    tool = _tool_name(attrs, name) if role == "tool" else ""
    if role == "tool" and not tool:
        raise BadSpan("tool span without a tool name")
    errored, error_text = _errors(attrs, status, events)
    return Span(
        trace.lower().removeprefix("0x"),
        span_id.lower().removeprefix("0x"),
        parent.lower().removeprefix("0x") if isinstance(parent, str) else "",
        start,
        role,
        instrumentation,
        tool,
        _text(attrs, _CALL_ID_KEYS) if role == "tool" else "",
        _agent_name(attrs, name, role),
        service,
        errored,
        error_text,
    )


def spans_of(document: Any, bad: Callable[[str, Exception], None], where: str = "") -> Iterator[Span]:
    """The spans of one decoded value (an OTLP request, an SDK span, or an array of either)."""
    if isinstance(document, list):
        for index, item in enumerate(document):
            yield from spans_of(item, bad, f"{where}[{index}]")
        return
    if not isinstance(document, dict):
        bad(where, BadSpan("not a JSON object"))
        return
    if "resourceSpans" in document:
        yield from _otlp(document, bad, where)
    elif "context" in document and ("start_time" in document or "name" in document):
        try:
            yield _sdk_span(document)
        except BadSpan as exc:
            bad(where, exc)
    else:
        bad(where, BadSpan("neither OTLP resourceSpans nor an OpenTelemetry SDK span"))


def _otlp(document: dict[str, Any], bad: Callable[[str, Exception], None], where: str) -> Iterator[Span]:
    resources = document.get("resourceSpans")
    if not isinstance(resources, list):
        bad(where, BadSpan("resourceSpans is not a list"))
        return
    for r, resource in enumerate(resources):
        try:
            resource_attrs = attributes(((resource or {}).get("resource") or {}).get("attributes") or [])
            scopes = resource.get("scopeSpans", resource.get("instrumentationLibrarySpans")) or []
            if not isinstance(scopes, list):
                raise BadSpan("scopeSpans is not a list")
        except (BadSpan, AttributeError) as exc:
            bad(f"{where}resourceSpans[{r}]", exc if isinstance(exc, BadSpan) else BadSpan("not an object"))
            continue
        service = _text(resource_attrs, ("service.name",))
        for s, scope in enumerate(scopes):
            spans = scope.get("spans") if isinstance(scope, dict) else None
            for index, raw in enumerate(spans if isinstance(spans, list) else []):
                try:
                    if not isinstance(raw, dict):
                        raise BadSpan("span is not an object")
                    yield build_span(
                        raw.get("traceId"),
                        raw.get("spanId"),
                        raw.get("parentSpanId"),
                        _nanos(raw.get("startTimeUnixNano")),
                        raw.get("name"),
                        attributes(raw.get("attributes") or []),
                        service,
                        raw.get("status"),
                        raw.get("events"),
                    )
                except (BadSpan, RecursionError) as exc:
                    bad(f"{where}resourceSpans[{r}].scopeSpans[{s}].spans[{index}]", exc)


def _sdk_span(raw: dict[str, Any]) -> Span:
    context = raw.get("context") if isinstance(raw.get("context"), dict) else {}
    start = normalize_iso(str(raw.get("start_time", ""))) if isinstance(raw.get("start_time"), str) else None
    if start is None:
        raise BadSpan(f"start_time {raw.get('start_time')!r} is not a time")
    resource = raw.get("resource") if isinstance(raw.get("resource"), dict) else {}
    resource_attrs = attributes(resource.get("attributes") or {})
    return build_span(
        context.get("trace_id"),
        context.get("span_id"),
        raw.get("parent_id"),
        start,
        raw.get("name"),
        attributes(raw.get("attributes") or {}),
        _text(resource_attrs, ("service.name",)),
        raw.get("status"),
        raw.get("events"),
    )


def decode(raw: bytes, bad: Callable[[str, Exception], None]) -> list[Span]:
    """Every readable span of one file's text: one JSON document, or one per line."""
    try:
        return list(spans_of(orjson.loads(raw), bad))
    except orjson.JSONDecodeError:
        pass
    spans: list[Span] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad(f"line {number}", exc)
            continue
        spans += spans_of(document, bad, f"line {number} ")
    return spans
