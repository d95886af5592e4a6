"""The agent manifest (YAML, JSON Schema ``auditor/schemas/agents.schema.json``): which agents exist,
the tools and MCP servers each is wired to, and the cloud identity it runs as.

Agents whose tools are defined in code (OpenAI Agents SDK, LangGraph, Strands, pydantic-ai) have no
configuration file to read; the manifest says what they hold. Paths are relative to the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from auditor import fileio
from auditor.connectors.tools.claude_usage import project_folder
from auditor.errors import InputError

DEFAULT_PROJECT = "local"
HINT = "see auditor/schemas/agents.schema.json and fixtures/tools/agents.yaml"
MAX_MANIFEST_BYTES = 4 << 20
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
RUNS_AS_KINDS = {"aws_role": "aws", "gcp_service_account": "gcp", "azure_managed_identity": "azure"}


@dataclass(frozen=True)
class ClaudeCodeSpec:
    managed: Path | None
    user: Path | None
    project: Path | None
    transcripts: tuple[Path, ...]
    telemetry: tuple[Path, ...]
    sessions: frozenset[str] = frozenset()  # session ids of this agent
    projects: frozenset[str] = frozenset()  # ~/.claude/projects/<folder> names of this agent

    @property
    def selective(self) -> bool:
        """Whether the agent names its sessions (else it takes every session no other agent names)."""
        return bool(self.sessions or self.projects)


@dataclass(frozen=True)
class AgentSpec:
    name: str
    description: str
    aliases: tuple[str, ...]
    runs_as: dict[str, str]  # aws_role | gcp_service_account | azure_managed_identity -> id
    gateway: str | None
    tools: tuple[dict[str, Any], ...]
    mcp_configs: tuple[Path, ...]
    mcp_servers: tuple[dict[str, Any], ...]
    claude_code: ClaudeCodeSpec | None = None


@dataclass(frozen=True)
class Manifest:
    path: Path
    project: str
    trusted_servers: frozenset[str]
    tools_lists: tuple[Path, ...]
    traces: tuple[Path, ...]
    agents: tuple[AgentSpec, ...]


@cache
def schema() -> dict[str, Any]:
    return json.loads(resources.files("auditor").joinpath("schemas/agents.schema.json").read_text())


def load_manifest(path: Path) -> Manifest:
    """The manifest at ``path``, validated; a one-line InputError naming the first problem."""
    raw = fileio.read_input(path, MAX_MANIFEST_BYTES)
    try:
        doc = yaml.load(raw, Loader=_LOADER)  # a safe loader (C or Python)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})", HINT) from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(doc))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise InputError(f"{path}: {where}: {error.message}", HINT)
    base = path.parent
    names = [a["name"] for a in doc["agents"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{path}: agent {twice[0]!r} is listed twice", "give every agent its own name")
    return Manifest(
        path=path,
        project=doc.get("project", DEFAULT_PROJECT),
        trusted_servers=frozenset(doc.get("trusted_servers", ())),
        tools_lists=_paths(base, doc.get("tools_lists"), "tools-list"),
        traces=_paths(base, doc.get("traces"), "traces"),
        agents=tuple(_agent(a, base) for a in doc["agents"]),
    )


def _paths(base: Path, given: list[str] | None, default: str) -> tuple[Path, ...]:
    if given is not None:
        return tuple(base / p for p in given)
    return (base / default,) if (base / default).exists() else ()


def _agent(entry: dict[str, Any], base: Path) -> AgentSpec:
    return AgentSpec(
        name=entry["name"],
        description=entry.get("description", ""),
        aliases=tuple(entry.get("aliases", ())),
        runs_as=dict(entry.get("runs_as", {})),
        gateway=entry.get("gateway"),
        tools=tuple(entry.get("tools", ())),
        mcp_configs=tuple(base / p for p in entry.get("mcp_configs", ())),
        mcp_servers=tuple(entry.get("mcp_servers", ())),
        claude_code=_claude_code(entry.get("claude_code"), base),
    )


def _claude_code(entry: dict[str, Any] | None, base: Path) -> ClaudeCodeSpec | None:
    if entry is None:
        return None

    def path(key: str) -> Path | None:
        return base / entry[key] if key in entry else None

    return ClaudeCodeSpec(
        managed=path("managed"),
        user=path("user"),
        project=path("project"),
        transcripts=tuple(base / p for p in entry.get("transcripts", ())),
        telemetry=tuple(base / p for p in entry.get("telemetry", ())),
        sessions=frozenset(entry.get("sessions", ())),
        projects=frozenset(project_folder(p) for p in entry.get("projects", ())),
    )
