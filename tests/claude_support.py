"""A Claude Code agent written from a few facts: settings in several scopes, session transcripts and
OpenTelemetry log events, for the tool-layer tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from conftest import END


def settings(allow=(), ask=(), deny=(), **extra: Any) -> dict[str, Any]:
    return {"permissions": {"allow": list(allow), "ask": list(ask), "deny": list(deny)}, **extra}


def write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def transcript_lines(session: str, calls: list[tuple[str, str, dict[str, Any], str | None]], start: datetime) -> str:
    """``calls``: (tool_use id, tool name, input, refusal text or None), one a minute from ``start``."""
    lines = []
    for index, (call_id, name, tool_input, refusal) in enumerate(calls):
        when = start + timedelta(minutes=index)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        use = {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}
        lines.append({"type": "assistant", "sessionId": session, "timestamp": stamp, "message": {"content": [use]}})
        result = {"type": "tool_result", "tool_use_id": call_id, "content": refusal or "ok"}
        if refusal:
            result["is_error"] = True
        lines.append({"type": "user", "sessionId": session, "timestamp": stamp, "message": {"content": [result]}})
    return "".join(json.dumps(line) + "\n" for line in lines)


def kv(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": {"stringValue": str(v)}} for k, v in attrs.items()]


def telemetry_line(records: list[tuple[datetime, str, dict[str, Any]]]) -> str:
    """One OTLP logs export: (time, event name, attributes) per record."""
    logs = [
        {
            "timeUnixNano": str(int(when.timestamp()) * 1_000_000_000),
            "body": {"stringValue": f"claude_code.{event}"},
            "attributes": kv({"event.name": event, **attrs}),
        }
        for when, event, attrs in records
    ]
    resource = {"attributes": kv({"service.name": "claude-code"})}
    scope = {"scope": {"name": "com.anthropic.claude_code.events"}, "logRecords": logs}
    return json.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": [scope]}]}) + "\n"


def claude_layer(
    root: Path,
    scopes: dict[str, dict[str, Any]],
    calls: list[tuple[str, str, dict[str, Any], str | None]],
    daily: bool = True,
) -> Path:
    """One agent ``dev`` whose settings are ``scopes`` (managed, user, project, local), with a
    session every day of the window (when ``daily``) and ``calls`` in the last one."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "managed": root / "managed" / "managed-settings.json",
        "user": root / "home" / "settings.json",
        "project": root / "repo" / ".claude" / "settings.json",
        "local": root / "repo" / ".claude" / "settings.local.json",
    }
    for scope, doc in scopes.items():
        write_json(files[scope], doc)
    (root / "repo").mkdir(exist_ok=True)
    sessions = root / "transcripts"
    sessions.mkdir(exist_ok=True)
    if daily:
        for day in range(30):
            start = END - timedelta(days=30 - day, hours=2)
            (sessions / f"day-{day}.jsonl").write_text(
                transcript_lines(f"s{day}", [], start)
                or json.dumps(
                    {
                        "type": "user",
                        "sessionId": f"s{day}",
                        "timestamp": start.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                        "message": {"content": [{"type": "text", "text": "hi"}]},
                    }
                )
                + "\n"
            )
    (sessions / "last.jsonl").write_text(transcript_lines("last", calls, END - timedelta(hours=1)))
    claude: dict[str, Any] = {"project": "repo", "transcripts": ["transcripts"]}
    claude |= {"managed": "managed"} if "managed" in scopes else {}
    claude |= {"user": "home/settings.json"} if "user" in scopes else {}
    manifest = {"version": 1, "project": "lab", "agents": [{"name": "dev", "claude_code": claude}]}
    (root / "agents.yaml").write_text(yaml.safe_dump(manifest))
    return root / "agents.yaml"
