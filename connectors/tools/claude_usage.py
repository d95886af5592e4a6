"""Claude Code tool calls, from its session transcripts and its OpenTelemetry log events.

Transcripts (``~/.claude/projects/<project>/<session>.jsonl``): one JSON object a line; an
``assistant`` line's ``message.content[]`` holds ``tool_use`` blocks (``id``, ``name``, ``input``),
and a later ``user`` line the ``tool_result`` block with the same ``tool_use_id`` (``is_error``,
``content``). Telemetry (https://code.claude.com/docs/en/monitoring-usage, "Events"): OTLP JSON
logs (``resourceLogs`` → ``scopeLogs`` → ``logRecords``, one export a line or a document), the
event name in the ``event.name`` attribute or the body (``claude_code.tool_result``,
``claude_code.tool_decision``); attributes ``session.id``, ``tool_name``, ``tool_use_id``,
``success``, ``decision`` / ``decision_type`` (``accept`` | ``reject``), ``source`` /
``decision_source``, and with ``OTEL_LOG_TOOL_DETAILS=1`` the input (``tool_input``, or
``tool_parameters``: ``bash_command``, ``mcp_server_name`` + ``mcp_tool_name`` for ``mcp_tool``).

A session is told by its id (``sessionId`` of a transcript line, ``session.id`` of an event) and
its project by the transcript's folder (``~/.claude/projects/<encoded cwd>/``) or ``cwd``: the
manifest maps sessions and projects to agents, so one export can hold several agents' sessions.

One call, one count: a call seen in both (the same ``tool_use_id``) or twice counts once. Outcome:
a rejected decision, or a result Claude Code wrote for a refused call (``claude_code_refusals`` of
``tools/classification.yaml``), is ``denied``; any other call, failed or not, is ``used``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from auditor import fileio
from auditor.connectors.tools.otlp import BadSpan, attributes
from auditor.errors import InputError
from auditor.timefmt import iso_utc, normalize_iso

TRANSCRIPT, TELEMETRY = "claude-code-transcript", "claude-code-telemetry"


@dataclass(frozen=True)
class ClaudeCall:
    session: str
    call_id: str
    tool: str  # Claude Code's name: Bash, Read, mcp__server__tool
    tool_input: dict[str, Any] | None  # None: not recorded
    when: str
    outcome: str  # used | denied
    evidence: str


@dataclass
class ClaudeScan:
    calls: list[ClaudeCall] = field(default_factory=list)
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)  # session -> (first, last) record time
    projects: dict[str, set[str]] = field(default_factory=dict)  # session -> its projects folder, encoded cwd
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, reason)
    duplicates: int = 0

    def saw(self, session: str, when: str) -> None:
        first, last = self.sessions.get(session, (when, when))
        self.sessions[session] = (min(first, when), max(last, when))


def project_folder(cwd: str) -> str:
    """The folder of ``~/.claude/projects/`` Claude Code keeps a working directory's sessions in
    (every character other than a letter, a digit or ``-`` becomes ``-``); a folder name is kept."""
    return re.sub(r"[^A-Za-z0-9-]", "-", cwd)


def _lines(path: Path, max_bytes: int) -> Iterator[tuple[int, Any]]:
    raw = fileio.read_input(path, max_bytes)
    try:
        yield 1, orjson.loads(raw)
        return
    except orjson.JSONDecodeError:
        pass
    for number, line in enumerate(raw.splitlines(), start=1):
        if line.strip():
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, exc


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str))
    return ""


def read_transcript(path: Path, max_bytes: int, is_refusal: Callable[[str], bool], scan: ClaudeScan) -> None:
    pending: dict[str, ClaudeCall] = {}
    results: dict[str, ClaudeCall] = {}
    for number, line in _lines(path, max_bytes):
        where = f"{path} line {number}"
        if isinstance(line, Exception) or not isinstance(line, dict):
            scan.problems.append((where, "not a JSON object"))
            continue
        when = normalize_iso(line["timestamp"]) if isinstance(line.get("timestamp"), str) else None
        session = line.get("sessionId") if isinstance(line.get("sessionId"), str) else path.stem
        if when is None:
            continue  # summaries and snapshots carry no time and no tool call
        scan.saw(session, when)
        folders = scan.projects.setdefault(session, {path.parent.name})
        if isinstance(line.get("cwd"), str):
            folders.add(project_folder(line["cwd"]))
        message = line.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                if not isinstance(block.get("name"), str) or not isinstance(block.get("id"), str):
                    scan.problems.append((where, "tool_use block without name or id"))
                    continue
                tool_input = block.get("input") if isinstance(block.get("input"), dict) else None
                call = ClaudeCall(session, block["id"], block["name"], tool_input, when, "used", TRANSCRIPT)
                if block["id"] in pending:
                    scan.duplicates += 1
                pending[block["id"]] = call
            elif block.get("type") == "tool_result" and isinstance(block.get("tool_use_id"), str):
                refused = block.get("is_error") is True and is_refusal(_text(block.get("content")))
                if refused and block["tool_use_id"] in pending:
                    results[block["tool_use_id"]] = replace(pending[block["tool_use_id"]], outcome="denied")
    scan.calls += [results.get(k, call) for k, call in pending.items()]


def _event(record: dict[str, Any], attrs: dict[str, Any]) -> str:
    name = attrs.get("event.name")
    if not isinstance(name, str):
        body = record.get("body")
        name = body.get("stringValue") if isinstance(body, dict) else None
    return name.removeprefix("claude_code.") if isinstance(name, str) else ""


def _when(record: dict[str, Any], attrs: dict[str, Any]) -> str | None:
    for key in ("timeUnixNano", "observedTimeUnixNano"):
        try:
            nanos = int(record.get(key) or 0)
        except (TypeError, ValueError):
            continue
        if nanos > 0:
            return iso_utc(datetime.fromtimestamp(nanos / 1e9, UTC))
    stamp = attrs.get("event.timestamp")
    return normalize_iso(stamp) if isinstance(stamp, str) else None


def _telemetry_input(attrs: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    tool = str(attrs.get("tool_name", ""))
    for key in ("tool_input", "tool_parameters"):
        value = attrs.get(key)
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                value = None
        if isinstance(value, dict):
            if tool == "mcp_tool" and isinstance(value.get("mcp_server_name"), str):
                tool = f"mcp__{value['mcp_server_name']}__{value.get('mcp_tool_name', '')}"
            if "command" not in value and isinstance(value.get("full_command") or value.get("bash_command"), str):
                value = {**value, "command": value.get("full_command") or value.get("bash_command")}
            return tool, value
    return tool, None


def read_telemetry(path: Path, max_bytes: int, scan: ClaudeScan) -> None:
    decisions: dict[str, ClaudeCall] = {}
    results: list[ClaudeCall] = []
    for number, document in _lines(path, max_bytes):
        where = f"{path} line {number}"
        resources = document.get("resourceLogs") if isinstance(document, dict) else None
        if not isinstance(resources, list):
            scan.problems.append((where, "not an OTLP logs export (no resourceLogs)"))
            continue
        for resource in resources:
            scopes = resource.get("scopeLogs") if isinstance(resource, dict) else None
            for scope in scopes if isinstance(scopes, list) else []:
                records = scope.get("logRecords") if isinstance(scope, dict) else None
                for record in records if isinstance(records, list) else []:
                    try:
                        attrs = attributes(record.get("attributes") or [])
                    except (BadSpan, AttributeError):
                        scan.problems.append((where, "log record with malformed attributes"))
                        continue
                    when, session = _when(record, attrs), attrs.get("session.id")
                    if when is None or not isinstance(session, str):
                        continue
                    scan.saw(session, when)
                    event = _event(record, attrs)
                    if event not in ("tool_result", "tool_decision"):
                        continue
                    tool, tool_input = _telemetry_input(attrs)
                    if not tool:
                        scan.problems.append((where, f"{event} event without tool_name"))
                        continue
                    decision = attrs.get("decision", attrs.get("decision_type"))
                    outcome = "denied" if decision == "reject" else "used"
                    call_id = str(attrs.get("tool_use_id") or f"{session}/{when}/{tool}")
                    call = ClaudeCall(session, call_id, tool, tool_input, when, outcome, TELEMETRY)
                    if event == "tool_decision":
                        decisions[call_id] = call
                    else:
                        results.append(call)
    seen = {c.call_id for c in results}
    for call in results:  # an accepted call has a decision and a result: the result is counted
        decided = decisions.get(call.call_id)
        scan.calls.append(replace(call, outcome="denied") if decided and decided.outcome == "denied" else call)
    scan.calls += [c for k, c in decisions.items() if k not in seen]  # a rejected call has no result


def merge(scan: ClaudeScan) -> list[ClaudeCall]:
    """One call per ``tool_use_id``: the telemetry's view (it records decisions) with the
    transcript's input when the telemetry has none; denied if either view says so."""
    out: dict[str, ClaudeCall] = {}
    for call in scan.calls:
        known = out.get(call.call_id)
        if known is None:
            out[call.call_id] = call
            continue
        scan.duplicates += 1
        tool_input = known.tool_input if known.tool_input is not None else call.tool_input
        tool = known.tool if known.tool != "mcp_tool" else call.tool
        denied = "denied" if "denied" in (known.outcome, call.outcome) else "used"
        out[call.call_id] = replace(known, tool=tool, tool_input=tool_input, outcome=denied)
    return list(out.values())


def read(
    transcripts: list[Path], telemetry: list[Path], max_bytes: int, is_refusal: Callable[[str], bool]
) -> ClaudeScan:
    """Every call of these files (missing or unreadable files are problems, not failures)."""
    scan = ClaudeScan()
    for paths, reader in ((transcripts, "transcript"), (telemetry, "telemetry")):
        files, problems = fileio.walk_files(paths)
        scan.problems += [(str(p), r) for p, r in problems]
        for path in sorted(files):
            try:
                if reader == "transcript":
                    read_transcript(path, max_bytes, is_refusal, scan)
                else:
                    read_telemetry(path, max_bytes, scan)
            except InputError as exc:
                scan.problems.append((str(path), str(exc)))
    scan.calls = merge(scan)
    return scan
