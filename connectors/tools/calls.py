"""Tool spans to tool calls: which agent made each, one call counted once, and how it ended.

Attribution walks a span's parents to the nearest agent span (OTel GenAI ``invoke_agent``,
OpenInference ``AGENT``, OpenLLMetry ``agent``) and takes its agent name; without one, the name the
tool span carries (``gen_ai.agent.name``), then the resource's ``service.name``.

One call, one count: a span read twice (a file and a copy of it) is one span; a tool span below
another tool span of the same tool (an MCP client span inside the framework's ``execute_tool``
span, an OpenInference span beside GenAI instrumentation), or sharing its call id in the trace, is
the same call seen by a second instrumentation.

Outcome: a call whose span (or a nested view of it) failed with a refusal (``denied_errors`` of
``tools/classification.yaml`` matched against ``error.type``, the status message or the exception
type) is ``denied``; any other call, failed or not, passed the permission check: ``used``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from auditor.connectors.tools.otlp import Span

MAX_ANCESTORS = 256  # deeper chains (or cycles) stop the walk


@dataclass(frozen=True, slots=True)
class Call:
    agent: str  # the agent name (or service.name) the call is attributed to
    tool: str  # the tool name as the span gives it
    when: str
    outcome: str  # used | denied
    evidence: str  # the outermost instrumentation that saw it
    trace: str


@dataclass(frozen=True)
class Resolved:
    calls: list[Call]
    activity: dict[str, tuple[str, str]]  # agent name -> (first, last) span time attributed to it
    duplicates: int  # spans read more than once
    merged: int  # spans that were a second instrumentation's view of a call already counted


def short_tool(name: str) -> str:
    """The tool part of a qualified name (``mcp__srv__tool``, ``Target___tool``, ``srv.tool``)."""
    if name.startswith("mcp__") and "__" in name[5:]:
        return name[5:].split("__", 1)[1]
    if "___" in name:
        return name.split("___", 1)[1]
    return name


def resolve(spans: Iterable[Span], is_refusal: Callable[[str], bool]) -> Resolved:
    by_id: dict[tuple[str, str], Span] = {}
    duplicates = 0
    for span in spans:
        key = (span.trace, span.span)
        if key in by_id:
            duplicates += 1
        else:
            by_id[key] = span
    agent_of: dict[tuple[str, str], str] = {}

    def ancestors(span: Span) -> Iterable[Span]:
        seen = {span.span}
        current = span
        for _ in range(MAX_ANCESTORS):
            parent = by_id.get((current.trace, current.parent)) if current.parent else None
            if parent is None or parent.span in seen:
                return
            seen.add(parent.span)
            yield parent
            current = parent

    def agent(span: Span) -> str:
        key = (span.trace, span.span)
        if key not in agent_of:
            found = span.agent if span.role == "agent" else ""
            if not found:
                found = next((a.agent for a in ancestors(span) if a.role == "agent" and a.agent), "")
            agent_of[key] = found or span.agent or span.service
        return agent_of[key]

    outer: dict[tuple[str, str], list[Span]] = {}  # the counted span -> every view of its call
    by_call_id: dict[tuple[str, str], tuple[str, str]] = {}
    merged = 0
    for key, span in by_id.items():
        if span.role != "tool":
            continue
        tool = short_tool(span.tool)
        hosts = [a for a in ancestors(span) if a.role == "tool" and short_tool(a.tool) == tool]
        host = hosts[-1] if hosts else None  # the outermost view is the one counted
        same_id = by_call_id.get((span.trace, span.call_id)) if span.call_id else None
        if host is not None:
            merged += 1
            outer.setdefault((host.trace, host.span), []).append(span)
        elif same_id is not None:
            merged += 1
            outer.setdefault(same_id, []).append(span)
        else:
            outer.setdefault(key, []).insert(0, span)
            if span.call_id:
                by_call_id[(span.trace, span.call_id)] = key
    calls = []
    for key, views in outer.items():
        counted = by_id[key]
        refused = any(v.error and is_refusal(v.error_text) for v in views)
        calls.append(
            Call(
                agent(counted),
                counted.tool,
                counted.start,
                "denied" if refused else "used",
                counted.instrumentation,
                counted.trace,
            )
        )
    activity: dict[str, tuple[str, str]] = {}
    for span in by_id.values():
        name = agent(span)
        if name:
            first, last = activity.get(name, (span.start, span.start))
            activity[name] = (min(first, span.start), max(last, span.start))
    return Resolved(calls, activity, duplicates, merged)
