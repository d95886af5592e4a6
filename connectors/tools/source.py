"""The tool-layer source: what each agent may call (manifest, MCP client configurations, captured
``tools/list`` results) against what its traces show it called.

Identities: one per agent of the manifest, ``agent://<project>/<name>``, audited under the account
``<project>`` (the host or project the agents run in: the manifest's ``project``, default
``local``). Permissions: tool names ``<server>.<tool>`` (:mod:`.inventory`). A server whose tools
were not captured is granted at server granularity: its catalog holds the tools the traces name
plus ``<server>.(unlisted tools)``, the rest of the server, which is unused when none of the
server's tools was called and unobservable when some were.

Observability: an agent's tools are observable from its first span onwards; an agent with no span
in the traces, or whose traces start after the window start, has every tool unobservable there.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from auditor import model
from auditor.catalog import Catalog
from auditor.connectors.base import Evidence, GrantSet, LogStats, Progress, UsageRequest, WindowEnd, no_progress
from auditor.connectors.log_scan import ScanCounters
from auditor.connectors.tools import claude_settings, claude_usage, traces
from auditor.connectors.tools.calls import Call, Resolved, resolve, short_tool
from auditor.connectors.tools.classify import LEVELS, ToolRules
from auditor.connectors.tools.inventory import BUILTIN, FUNCTION, UNLISTED, Server, Tool, server_key, split_id
from auditor.connectors.tools.manifest import RUNS_AS_KINDS, AgentSpec, Manifest, load_manifest
from auditor.connectors.tools.mcp_config import read_config, read_tools_list
from auditor.errors import InputError
from auditor.fileio import DEFAULT_CAP, walk_files
from auditor.ruleset import Rules
from auditor.selection import AgentSelector
from auditor.timefmt import iso_utc, parse_iso

PROVIDER = "tools"
WIDER_SHAPES = 3  # an allow wildcard whose calls show at most this many inputs is wider than used
_TIME = pl.Datetime("us", "UTC")


def identity_of(project: str, agent: str) -> str:
    return f"agent://{project}/{agent}"


def unlisted(server: str) -> str:
    return f"{server}.{UNLISTED}"


@dataclass
class AgentTools:
    """What one agent is wired to."""

    spec: AgentSpec
    identity: str
    servers: dict[str, Server] = field(default_factory=dict)
    functions: list[Tool] = field(default_factory=list)
    claude: claude_settings.Settings | None = None
    builtins: list[str] = field(default_factory=list)  # Claude Code tools that run without asking

    def granted_ids(self) -> set[str]:
        ids = {t.id for t in self.functions} | set(self.builtins)
        if self.claude is not None:
            ids |= {n for r in self.claude.of("allow") if not r.mcp for n in r.catalog_names()}
        for server in self.servers.values():
            ids |= {t.id for t in server.tools or ()}
        return ids

    def unenumerated(self) -> list[str]:
        return sorted(k for k, s in self.servers.items() if s.tools is None)

    def resolve(self, raw: str) -> tuple[str | None, list[str]]:
        """(catalog name, candidates): the tool a span's name means for this agent; None with the
        candidates when it is ambiguous, None and [] when nothing granted matches."""
        if raw.startswith(f"{BUILTIN}."):
            return raw, []
        if raw.startswith("mcp__") and "__" in raw[5:]:
            server, tool = raw[5:].split("__", 1)
            return f"{server_key(server)}.{tool}", []
        if "___" in raw:
            target, tool = raw.split("___", 1)
            keys = [k for k, s in self.servers.items() if s.target == target]
            if len(keys) == 1:
                return f"{keys[0]}.{tool}", []
        ids = self.granted_ids()
        if raw in ids:
            return raw, []
        name = short_tool(raw)
        matches = sorted(i for i in ids if split_id(i)[1] == name)
        if len(matches) == 1:
            return matches[0], []
        open_servers = self.unenumerated()
        if not matches and len(open_servers) == 1:
            return f"{open_servers[0]}.{name}", []
        if matches or open_servers:
            return None, matches + [unlisted(k) for k in open_servers]
        return f"{FUNCTION}.{name}", []  # granted by nothing: used, not granted


@dataclass
class ToolSource:
    """The agent manifest (and the files it names), plus extra trace paths."""

    manifest_path: Path
    extra_traces: tuple[Path, ...] = ()
    max_file_bytes: int = DEFAULT_CAP  # read before the core's request (the catalog needs the traces' tool names)
    provider: str = PROVIDER
    name: str = "tools"
    _manifest: Manifest | None = field(default=None, repr=False)
    _agents: dict[str, AgentTools] = field(default_factory=dict, repr=False)
    _tiers: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)  # id -> (level, basis)
    _scan: traces.TraceScan | None = field(default=None, repr=False)
    _resolved: Resolved | None = field(default=None, repr=False)
    _walk_gaps: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list), repr=False)
    _claude_times: list[str] = field(default_factory=list, repr=False)  # every Claude Code record's time
    _claude_blind: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set), repr=False)
    _claude_gaps: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _subjects: dict[Call, tuple[str, list[str]]] = field(default_factory=dict, repr=False)  # what a call matched
    _stated: list[dict[str, Any]] = field(default_factory=list, repr=False)  # SOURCE_FINDINGS rows

    # -- the questions ------------------------------------------------------------------------

    def grants(self, selector: AgentSelector, rules: Rules) -> GrantSet:
        manifest = self._manifest = load_manifest(self.manifest_path)
        tool_rules = ToolRules.of(rules)
        trusted = manifest.trusted_servers | tool_rules.trusted_servers
        listed = self._tools_lists(manifest)
        identities, statements = [], []
        for spec in manifest.agents:
            agent = self._agent(spec, manifest, listed, trusted, tool_rules)
            self._agents[spec.name] = agent
            for alias in spec.aliases:
                self._agents.setdefault(alias, agent)
            identities.append(self._identity_row(agent, manifest))
            statements += self._statements(agent, manifest)
        return GrantSet(
            identities=model.frame(identities, model.IDENTITIES), grants=model.frame(statements, model.GRANTS)
        )

    def catalog(self, grants: GrantSet, rules: Rules) -> Catalog:
        tool_rules = ToolRules.of(rules)
        resolved = self._calls(rules)
        for agent in {id(a): a for a in self._agents.values()}.values():
            for tool in agent.functions:
                self._classify(tool, True, tool_rules)
            for name in sorted(agent.granted_ids()):
                if name.startswith(f"{BUILTIN}."):
                    self._classify(Tool(*split_id(name)), False, tool_rules)
            for server in agent.servers.values():
                for tool in server.tools or ():
                    self._classify(tool, server.trusted, tool_rules)
                if server.tools is None:
                    self._tiers[unlisted(server.key)] = (LEVELS["destructive-default"], "tools not enumerated")
        for call in resolved.calls:
            agent = self._agents.get(call.agent)
            if agent is None:
                continue
            name, _ = agent.resolve(call.tool)
            if name and name not in self._tiers:
                self._classify(Tool(*split_id(name)), False, tool_rules)  # seen only: no annotations
        levels = {name: level for name, (level, _) in self._tiers.items()}
        return Catalog(
            PROVIDER,
            levels,
            f"tool inventory of {self.manifest_path} ({len(levels)} tools)",
            service_separator=".",
            level_of=lambda name: LEVELS["destructive-default"],
        )

    def collected_at(self) -> datetime | None:
        return None

    def window_end(self, cap: datetime, rules: Rules, workers: int | None) -> WindowEnd:
        scan = self._read_traces(workers)
        self._calls(rules)
        limit = iso_utc(cap)
        times = [*(s.start for s in scan.spans), *self._claude_times]
        newest = max((t for t in times if t <= limit), default="")
        origin = ", ".join(str(p) for p in self._trace_paths())
        return WindowEnd(parse_iso(newest) if newest else None, f"the newest span in {origin or 'no traces'}")

    def usage(self, request: UsageRequest, progress: Progress = no_progress) -> Evidence:
        manifest = self._read()
        scan = self._read_traces(request.workers)
        resolved = self._calls(request.rules)
        start, end, cap = iso_utc(request.window.start), iso_utc(request.window.end), iso_utc(request.cap)
        project = manifest.project
        counts: dict[tuple[str, str, str, str], list[Any]] = {}
        unmapped: dict[tuple[str, str, str], int] = defaultdict(int)
        ambiguous: dict[str, set[str]] = defaultdict(set)
        strangers: dict[str, int] = defaultdict(int)
        called_servers: dict[str, set[str]] = defaultdict(set)
        subjects: dict[tuple[str, str], set[str]] = defaultdict(set)
        for call in resolved.calls:
            if call.when > cap or not start <= call.when <= end:
                continue
            agent = self._agents.get(call.agent)
            if agent is None:
                strangers[call.agent or "(no agent name, no service.name)"] += 1
                continue
            if agent.identity not in request.agents:
                continue
            name, candidates = agent.resolve(call.tool)
            if name is None:
                unmapped[(agent.identity, call.tool, "matches several granted tools: " + ", ".join(candidates))] += 1
                ambiguous[agent.identity].update(candidates)
                continue
            called_servers[agent.identity].add(split_id(name)[0])
            if call in self._subjects:
                subject, rules_matched = self._subjects[call]
                for rule in rules_matched:
                    subjects[(agent.identity, rule)].add(subject)
            row = counts.setdefault((agent.identity, name, call.outcome, call.evidence), [0, call.when, call.when])
            row[0] += 1
            row[1], row[2] = min(row[1], call.when), max(row[2], call.when)
        stated = [s for s in self._stated if s["identity"] in request.agents]
        for (identity, rule), seen in sorted(subjects.items()):
            if "*" in rule and 0 < len(seen) <= WIDER_SHAPES:
                stated.append(
                    _stated(
                        project,
                        identity,
                        "wider-than-used",
                        f"Claude Code allow rule {rule} is wider than used: in the window it matched only "
                        + "; ".join(sorted(seen)),
                        [f"{BUILTIN}.{rule}"],
                        "allow just these (one rule each) and drop the wildcard",
                    )
                )
        usage = [
            {
                "provider": PROVIDER,
                "account": project,
                "identity": identity,
                "action": action,
                "outcome": outcome,
                "evidence": evidence,
                "calls": n,
                "first_seen": parse_iso(first),
                "last_seen": parse_iso(last),
                "resources": [],
                "all_with_resource": False,
            }
            for (identity, action, outcome, evidence), (n, first, last) in sorted(counts.items())
        ]
        return Evidence(
            usage=model.frame(usage, model.USAGE),
            unmapped=model.frame(
                [
                    {"provider": PROVIDER, "account": project, "identity": i, "event": e, "calls": n, "reason": r}
                    for (i, e, r), n in sorted(unmapped.items())
                ],
                model.UNMAPPED,
            ),
            observability=model.frame(
                self._observability(request, resolved, ambiguous, called_servers), model.OBSERVABILITY
            ),
            gaps=model.frame(self._gaps(scan, strangers, project), model.GAPS),
            logs=(self._stats(scan, resolved, start, end, cap, project),),
            notes=dict(self._notes),
            findings=model.frame(stated, model.SOURCE_FINDINGS),
        )

    def inputs(self) -> tuple[str, ...]:
        manifest = self._manifest
        files = [self.manifest_path]
        if manifest is not None:
            files += [*manifest.tools_lists, *self._trace_paths()]
            for spec in manifest.agents:
                files += spec.mcp_configs
                if spec.claude_code is not None:
                    files += [*spec.claude_code.transcripts, *spec.claude_code.telemetry]
            for agent in self._agents.values():
                files += [Path(f) for f in (agent.claude.files if agent.claude else ())]
        return tuple(dict.fromkeys(str(p) for p in files))

    # -- grants -------------------------------------------------------------------------------

    def _read(self) -> Manifest:
        assert self._manifest is not None, "grants() first"
        return self._manifest

    def _tools_lists(self, manifest: Manifest) -> dict[str, list[Tool]]:
        files, problems = walk_files(manifest.tools_lists)
        if problems:
            path, reason = problems[0]
            raise InputError(f"{path}: {reason}", "list captured tools/list results only")
        listed: dict[str, list[Tool]] = {}
        for path in sorted(files):
            server, tools = read_tools_list(path)
            listed.setdefault(server_key(server), []).extend(tools)
        return listed

    def _agent(
        self,
        spec: AgentSpec,
        manifest: Manifest,
        listed: dict[str, list[Tool]],
        trusted: frozenset[str],
        tool_rules: ToolRules,
    ) -> AgentTools:
        agent = AgentTools(spec, identity_of(manifest.project, spec.name))
        notes = self._notes[agent.identity]
        configs = list(spec.mcp_configs)
        claude = spec.claude_code
        if claude is not None:
            agent.claude = claude_settings.load(claude.managed, claude.user, claude.project)
            notes += agent.claude.notes
            self._stated += [
                _stated(
                    manifest.project,
                    agent.identity,
                    "ignored-rule" if r.kind == "allow" else "ignored-restriction",
                    f"Claude Code {r.kind} rule {r.text} is accepted but never applied: {why}",
                    r.catalog_names() if r.kind == "allow" else [],
                    f"{r.scope} settings {r.origin}"
                    + ("" if r.kind == "allow" else f": what it means to {r.kind} is not {r.kind}ed; fix the rule"),
                )
                for r, why in agent.claude.ignored
            ]
            whole = {r.tool for r in agent.claude.of("deny") if r.specifier is None}
            agent.builtins = sorted(f"{BUILTIN}.{t}" for t in tool_rules.claude_no_approval - whole)
            if claude.project is not None and (claude.project / ".mcp.json").is_file():
                configs.append(claude.project / ".mcp.json")
        for path in configs:
            servers, disabled = read_config(path)
            notes += disabled
            for server in servers:
                agent.servers.setdefault(server.key, server)
        for entry in spec.mcp_servers:
            key = server_key(entry["name"])
            server = agent.servers.setdefault(
                key, Server(key, entry["name"], "http" if "url" in entry else "stdio", str(manifest.path))
            )
            server.trusted = bool(entry.get("trusted", False))
            server.target = entry.get("gateway_target") or server.target
        for server in agent.servers.values():
            server.trusted = server.trusted or server.name in trusted or server.key in trusted
            tools = listed.get(server.key)
            server.tools = (
                [Tool(server.key, t.name, t.annotations, t.description, t.origin) for t in tools] if tools else None
            )
            if server.tools is None:
                notes.append(
                    f"MCP server {server.name}: no tools/list captured, so its grant is at server granularity "
                    f"(only the tools its traces name are audited one by one; `auditor collect mcp` captures the list)"
                )
            elif not server.trusted and any(t.annotations for t in server.tools):
                notes.append(
                    f"MCP server {server.name} is not trusted: its tool annotations are shown, not used "
                    "(trust it in the manifest or tools/classification.yaml)"
                )
        agent.functions = [
            Tool(FUNCTION, t["name"], t.get("annotations", {}), t.get("description", ""), str(manifest.path))
            for t in spec.tools
        ]
        for kind, cloud_id in sorted(spec.runs_as.items()):
            notes.append(f"runs as {RUNS_AS_KINDS[kind]} identity {cloud_id}: its cloud grants are audited there")
            self._notes[cloud_id].append(
                f"agent {spec.name} ({PROVIDER}) runs as this identity: its tools are audited as {agent.identity}"
            )
        return agent

    def _identity_row(self, agent: AgentTools, manifest: Manifest) -> dict[str, Any]:
        spec = agent.spec
        return {
            "provider": PROVIDER,
            "account": manifest.project,
            "identity": agent.identity,
            "name": spec.name,
            "kind": "agent",
            "is_agent": True,
            "selected_by": f"agent manifest {manifest.path}",
            "tags": [],
            "service_linked": False,
            "disabled": False,
            "groups": [],
            "instance_profiles": [],
            "notes": [],
            "attributes": json.dumps(
                {
                    "description": spec.description,
                    "runs_as": spec.runs_as,
                    "gateway": spec.gateway,
                    "gateway_targets": {k: s.target for k, s in agent.servers.items()},
                    **(
                        {"claude_code": {k: [r.text for r in agent.claude.of(k)] for k in ("deny", "ask", "allow")}}
                        if agent.claude is not None
                        else {}
                    ),
                },
                sort_keys=True,
            ),
        }

    def _statements(self, agent: AgentTools, manifest: Manifest) -> list[dict[str, Any]]:
        rows = []
        for server in agent.servers.values():
            rows.append(
                _statement(
                    agent,
                    manifest,
                    f"mcp:{server.key}",
                    [f"{server.key}.*"],
                    f"MCP server {server.name} ({server.origin})",
                    "mcp-server",
                )
            )
        if agent.claude is not None:
            for rule in agent.claude.of("allow"):
                rows.append(
                    _statement(
                        agent,
                        manifest,
                        f"claude:{rule.scope}:{rule.text}",
                        rule.catalog_names(),
                        f"Claude Code {rule.scope} settings {rule.origin}: allow {rule.text}",
                        "claude-settings",
                    )
                )
        if agent.builtins:
            rows.append(
                _statement(
                    agent,
                    manifest,
                    "claude:no-approval",
                    agent.builtins,
                    "Claude Code tools that run without asking (claude_code_no_approval in tools/classification.yaml)",
                    "claude-builtin",
                )
            )
        if agent.functions:
            rows.append(
                _statement(
                    agent,
                    manifest,
                    "functions",
                    [t.id for t in agent.functions],
                    f"function tools in {manifest.path}",
                    "function-tools",
                )
            )
        return rows

    def _classify(self, tool: Tool, trusted: bool, rules: ToolRules) -> None:
        if tool.id not in self._tiers:
            tier = rules.classify(tool, trusted)
            self._tiers[tool.id] = (tier.level, tier.basis)

    def tier_basis(self) -> dict[str, tuple[str, str]]:
        """Per tool: its access level and which rule decided it (for reports and emitters)."""
        return dict(self._tiers)

    # -- usage --------------------------------------------------------------------------------

    def _trace_paths(self) -> tuple[Path, ...]:
        return (*self._read().traces, *self.extra_traces)

    def _read_traces(self, workers: int | None) -> traces.TraceScan:
        if self._scan is None:
            files, self._walk_gaps = traces.find_files(self._trace_paths())
            self._scan = traces.scan(files, workers, self.max_file_bytes)
        return self._scan

    def _calls(self, rules: Rules) -> Resolved:
        if self._resolved is None:
            tool_rules = ToolRules.of(rules)
            spans = resolve(self._read_traces(None).spans, tool_rules.is_refusal)
            activity = dict(spans.activity)
            calls, duplicates = list(spans.calls), spans.duplicates
            claude = [a for a in {id(a): a for a in self._agents.values()}.values() if a.spec.claude_code is not None]
            scans = {a.identity: self._claude_scan(a, tool_rules) for a in claude}
            owners = self._session_owners(claude, scans)
            taken: set[str] = set()
            for agent in claude:
                duplicates += self._claude_calls(agent, scans[agent.identity], owners, calls, activity, taken)
            dropped = {s for scan in scans.values() for s in scan.sessions} - taken - set(owners)
            if dropped:
                self._claude_gaps.append(
                    model.gap(
                        PROVIDER,
                        self._read().project,
                        "Claude Code sessions",
                        f"{len(dropped)} session(s) in the Claude Code inputs that no agent's `sessions` or "
                        f"`projects` names (e.g. {min(dropped)}): not counted for any agent",
                        "warning",
                        len(dropped),
                    )
                )
            self._resolved = Resolved(calls, activity, duplicates, spans.merged)
        return self._resolved

    def _claude_scan(self, agent: AgentTools, tool_rules: ToolRules) -> claude_usage.ClaudeScan:
        spec = agent.spec.claude_code
        assert spec is not None
        scan = claude_usage.read(
            list(spec.transcripts), list(spec.telemetry), self.max_file_bytes, tool_rules.is_claude_refusal
        )
        project = self._read().project
        for where, reason in scan.problems:  # files several agents read: one gap each
            row = model.gap(PROVIDER, project, where, reason, "warning")
            if row not in self._claude_gaps:
                self._claude_gaps.append(row)
        return scan

    def _session_owners(
        self, agents: list[AgentTools], scans: dict[str, claude_usage.ClaudeScan]
    ) -> dict[str, str | None]:
        """Session -> the agent whose ``sessions`` or ``projects`` name it (None: several do, so it
        counts for none). A session's project is known from its transcript, for its telemetry too."""
        projects: dict[str, set[str]] = defaultdict(set)
        for scan in scans.values():
            for session, folders in scan.projects.items():
                projects[session] |= folders
        owners: dict[str, str | None] = {}
        for session in sorted({s for scan in scans.values() for s in scan.sessions}):
            names = sorted(
                a.spec.name
                for a in agents
                if a.spec.claude_code is not None
                and (session in a.spec.claude_code.sessions or projects[session] & a.spec.claude_code.projects)
            )
            if len(names) > 1:
                self._claude_gaps.append(
                    model.gap(
                        PROVIDER,
                        self._read().project,
                        f"Claude Code session {session}",
                        f"named by agents {', '.join(names)}: counted for none (name it in one agent only)",
                        "warning",
                    )
                )
            if names:
                owners[session] = names[0] if len(names) == 1 else None
        return owners

    def _claude_calls(
        self,
        agent: AgentTools,
        scan: claude_usage.ClaudeScan,
        owners: dict[str, str | None],
        calls: list[Call],
        activity: dict[str, tuple[str, str]],
        taken: set[str],
    ) -> int:
        """Add the agent's Claude Code calls (each named by the permission it used) and activity:
        those of the sessions it names, or, when it names none, of every session no agent names."""
        spec, settings = agent.spec.claude_code, agent.claude
        assert spec is not None and settings is not None
        project = self._read().project

        def mine(session: str) -> bool:
            return owners[session] == agent.spec.name if session in owners else not spec.selective

        for session, (first, last) in scan.sessions.items():
            if not mine(session):
                continue
            taken.add(session)
            self._claude_times += [first, last]
            known = activity.get(agent.spec.name)
            activity[agent.spec.name] = (min(first, known[0]), max(last, known[1])) if known else (first, last)
        unnamed = 0
        for call in scan.calls:
            if not mine(call.session):
                continue
            if call.tool == "mcp_tool":  # telemetry without OTEL_LOG_TOOL_DETAILS: the MCP tool is not named
                unnamed += 1
                continue
            name, subject, matched, candidates = _claude_permission(settings, call)
            self._claude_blind[agent.identity].update(candidates)
            counted = Call(agent.spec.name, name, call.when, call.outcome, call.evidence, call.session)
            calls.append(counted)
            if matched:
                self._subjects[counted] = (subject, matched)
        if unnamed:
            self._claude_gaps.append(
                model.gap(
                    PROVIDER,
                    project,
                    f"agent {agent.spec.name}",
                    f"{unnamed} MCP tool call(s) in Claude Code telemetry without the tool's name (export with "
                    "OTEL_LOG_TOOL_DETAILS=1, or add the session transcripts)",
                    "warning",
                    unnamed,
                )
            )
        return scan.duplicates

    def _observability(
        self,
        request: UsageRequest,
        resolved: Resolved,
        ambiguous: dict[str, set[str]],
        called_servers: dict[str, set[str]],
    ) -> list[dict[str, Any]]:
        rows = []
        project = self._read().project
        start = request.window.start
        for agent in {id(a): a for a in self._agents.values()}.values():
            if agent.identity not in request.agents:
                continue
            names = (agent.spec.name, *agent.spec.aliases)
            seen = [resolved.activity[n] for n in names if n in resolved.activity]
            first = min((f for f, _ in seen), default="")
            reason = None
            if not first:
                reason = (
                    f"no span of agent {agent.spec.name} in the traces: its runtime is not instrumented or its "
                    "traces were not exported"
                )
            elif parse_iso(first) > start + timedelta(days=1):
                reason = (
                    f"the traces of agent {agent.spec.name} start at {first}, after the window start: its tool "
                    "calls before then cannot be shown"
                )
            if reason:
                rows.append(_blind(project, agent.identity, ["*"], reason))
                continue
            blind = self._claude_blind.get(agent.identity)
            if blind:
                rows.append(
                    _blind(
                        project,
                        agent.identity,
                        sorted(blind),
                        "Claude Code calls whose input was not recorded: which of these allow rules they matched "
                        "cannot be told",
                    )
                )
            if ambiguous.get(agent.identity):
                rows.append(
                    _blind(
                        project,
                        agent.identity,
                        sorted(ambiguous[agent.identity]),
                        "called under a name several granted tools share",
                    )
                )
            for key in agent.unenumerated():
                if key in called_servers.get(agent.identity, ()):
                    rows.append(
                        _blind(
                            project,
                            agent.identity,
                            [unlisted(key)],
                            f"MCP server {agent.servers[key].name}: no tools/list captured, and tools the traces "
                            "do not name cannot be enumerated",
                        )
                    )
        return rows

    def _gaps(self, scan: traces.TraceScan, strangers: dict[str, int], project: str) -> list[dict[str, Any]]:
        rows = [
            {"provider": PROVIDER, "account": project, "severity": "error", **g} for g in (*self._walk_gaps, *scan.gaps)
        ]
        rows += self._claude_gaps
        rows += [
            model.gap(
                PROVIDER,
                project,
                f"agent {name}",
                f"{n} tool call(s) in the window by an agent the manifest does not list (add it, or its name "
                "to `aliases`)",
                "warning",
                n,
            )
            for name, n in sorted(strangers.items())
        ]
        return rows

    def _stats(
        self, scan: traces.TraceScan, resolved: Resolved, start: str, end: str, cap: str, project: str
    ) -> LogStats:
        """Coverage of the traces. An agent may be idle for days: a day between the first and the
        last span counts as covered (with its own count), so idle days do not read as lost logs; an
        agent's own coverage is decided by :meth:`_observability`."""
        stats = ScanCounters()
        ScanCounters.merge(stats, scan)
        kept = [t for t in (*(s.start for s in scan.spans), *self._claude_times) if t <= cap]
        for when in scan.spans:
            if when.start > cap:
                stats.after_cap(f"span {when.span} of trace {when.trace}", when.start)
        if kept:
            first, last = min(kept), max(kept)
            days: dict[str, int] = defaultdict(int)
            day = datetime.fromisoformat(first[:10])
            while day.date().isoformat() <= last[:10]:
                days[day.date().isoformat()] = 0
                day += timedelta(days=1)
            for when in kept:
                days[when[:10]] += 1
            stats.saw(project, first, last, days, sum(1 for w in kept if start <= w <= end))
            stats.files_by_scope[project] = scan.files_read
        origin = ", ".join(str(p) for p in self._trace_paths()) or "no trace files"
        return stats.stats(PROVIDER, f"traces {origin}", resolved.duplicates)


def _statement(
    agent: AgentTools, manifest: Manifest, key: str, actions: list[str], source: str, kind: str
) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "account": manifest.project,
        "identity": agent.identity,
        "statement_id": f"{agent.identity}#{key}",
        "layer": "identity",
        "effect": "Allow",
        "actions": actions,
        "not_action": False,
        "resources": ["*"],
        "not_resource": False,
        "condition": None,
        "source": source,
        "source_kind": kind,
        "policy": None,
        "scope": None,
        "member": None,
    }


def _stated(project: str, identity: str, kind: str, title: str, actions: list[str], detail: str) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "account": project,
        "identity": identity,
        "kind": kind,
        "title": title,
        "actions": actions,
        "detail": detail,
    }


def _blind(project: str, identity: str, actions: list[str], reason: str) -> dict[str, Any]:
    return {"provider": PROVIDER, "account": project, "identity": identity, "actions": actions, "reason": reason}


def _subject(tool_input: dict[str, Any] | None) -> str:
    for key in ("command", "file_path", "notebook_path", "url", "path", "pattern"):
        value = (tool_input or {}).get(key)
        if isinstance(value, str):
            return value if len(value) <= 80 else value[:77] + "..."
    return "(no input recorded)"


def _claude_permission(
    settings: claude_settings.Settings, call: claude_usage.ClaudeCall
) -> tuple[str, str, list[str], list[str]]:
    """(the permission a Claude Code call used, its subject, the allow rule it counts for (the
    narrowest it matched: a wider one's calls are not its use), the allow rules it may have matched
    but whose match its unrecorded input cannot tell)."""
    if call.tool.startswith("mcp__"):
        return call.tool, "", [], []
    kind, allowed, undecided = settings.decide(call.tool, call.tool_input)
    candidates = []
    if undecided:
        candidates = [
            n
            for r in settings.of("allow")
            if not r.mcp and claude_settings.matches(r, call.tool, call.tool_input, settings.root) is None
            for n in r.catalog_names()
        ]
    if kind == "allow":
        rule = max(allowed, key=lambda r: (r.specifier is not None, len(r.text)))
        return rule.catalog_names()[0], _subject(call.tool_input), [rule.text], candidates
    return f"{BUILTIN}.{call.tool}", "", [], candidates
