"""Claude Code settings as a grant source and an enforcement point: ``permissions.allow/ask/deny``.

Scopes (https://code.claude.com/docs/en/settings, "Settings precedence"): managed
(``/etc/claude-code/managed-settings.json``, macOS ``/Library/Application Support/ClaudeCode/``,
with ``managed-settings.d/*.json``; read offline from the folder the manifest names) > local
(``.claude/settings.local.json``) > project (``.claude/settings.json``) > user
(``~/.claude/settings.json``). Permission rules are not overridden scope by scope: every scope's
rules are merged, then evaluated deny first, then ask, then allow; the first match wins and a deny
from any scope cannot be carved out by an allow (https://code.claude.com/docs/en/permissions).
``allowManagedPermissionRulesOnly: true`` in managed settings makes only the managed rules apply.

Rule syntax: ``Tool`` or ``Tool(specifier)``: ``Bash(npm run test:*)`` (legacy prefix),
``Bash(npm run *)`` (wildcard), ``Read(./src/**)`` / ``Edit(/docs/**)`` / ``Read(//etc/hosts)``
(gitignore-style paths: cwd-relative, project-root-relative, absolute), ``WebFetch(domain:x.com)``,
``mcp__server`` / ``mcp__server__*`` (every tool of a server), ``mcp__server__tool``. Rules Claude
Code accepts but never applies are reported, never granted: path rules on tools other than Read
and Edit (``Write(docs/**)``), ``mcp__…(…)`` with parentheses, an unanchored ``mcp__*`` allow,
``Bash(command:…)``, and allow rules a deny of the whole tool shadows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from auditor.connectors.tools.inventory import BUILTIN, server_key
from auditor.connectors.tools.mcp_config import load_document
from auditor.errors import InputError

KINDS = ("deny", "ask", "allow")  # evaluation order
SCOPES = ("managed", "local", "project", "user")  # precedence, highest first
HINT = 'a Claude Code settings.json ({"permissions": {"allow": [...], "ask": [...], "deny": [...]}})'
READ_TOOLS = frozenset({"Read", "Grep", "Glob", "LS", "NotebookRead"})  # checked against Read(path) rules
EDIT_TOOLS = frozenset({"Edit", "Write", "MultiEdit", "NotebookEdit"})  # checked against Edit(path) rules
_RULE = re.compile(r"^([A-Za-z0-9_.:*-]+)(?:\((.*)\))?$", re.DOTALL)
_OPERATORS = re.compile(r"\s*(?:&&|\|\||;|\|)\s*")


@dataclass(frozen=True)
class Rule:
    kind: str  # deny | ask | allow
    text: str
    scope: str
    origin: str  # the settings file
    tool: str
    specifier: str | None

    @property
    def mcp(self) -> bool:
        return self.tool.startswith("mcp__")

    def catalog_names(self) -> list[str]:
        """The permission names this rule stands for: ``<server>.<tool>`` / ``<server>.*`` for MCP
        rules, ``builtin.<rule>`` otherwise (a bare tool, or the rule with its specifier)."""
        if self.mcp:
            server, _, tool = self.tool[5:].partition("__")
            return [f"{server_key(server)}.{tool or '*'}"]
        return [f"{BUILTIN}.{self.text}"]


def parse(kind: str, text: str, scope: str, origin: str) -> Rule:
    match = _RULE.match(text.strip())
    if not match:
        raise InputError(f"{origin}: permissions.{kind} rule {text!r} is not Tool or Tool(specifier)", HINT)
    return Rule(kind, text.strip(), scope, origin, match.group(1), match.group(2))


def never_applied(rule: Rule, denied_tools: frozenset[str], managed_only: bool) -> str | None:
    """Why Claude Code accepts ``rule`` but never applies it (None: it applies)."""
    if managed_only and rule.scope != "managed":
        return "managed settings set allowManagedPermissionRulesOnly: only managed rules apply"
    if rule.mcp and rule.specifier is not None:
        return "MCP rules take no parentheses: the rule is ignored"
    if rule.kind == "allow" and rule.mcp and "*" in rule.tool and not re.match(r"^mcp__[^*_][^*]*__", rule.tool):
        return "an unanchored MCP allow glob is skipped"
    if rule.specifier is not None and rule.tool not in ("Read", "Edit") and _is_path(rule):
        return f"{rule.tool} path rules are not consulted (only Read(...) and Edit(...) are)"
    if rule.tool == "Bash" and rule.specifier is not None and rule.specifier.startswith("command:"):
        return "Bash(command:...) is not a rule form: the rule is ignored"
    if rule.kind == "allow" and rule.tool in denied_tools:
        return f"a deny of the whole {rule.tool} tool wins over it"
    return None


def _is_path(rule: Rule) -> bool:
    return rule.tool in READ_TOOLS | EDIT_TOOLS and rule.specifier is not None


def _glob(pattern: str) -> re.Pattern[str]:
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif pattern[index] == "*":
            out.append("[^/]*")
            index += 1
        else:
            out.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(out), re.DOTALL)


def _wildcard(pattern: str) -> re.Pattern[str]:
    """A Bash / tool specifier: ``*`` matches anything; a trailing `` *`` also matches nothing."""
    body = re.escape(pattern).replace(r"\*", ".*")
    if body.endswith(r"\ .*"):
        body = body[: -len(r"\ .*")] + r"(?:\ .*)?"
    return re.compile(body, re.DOTALL)


def _bash(specifier: str, command: str) -> bool:
    parts = [p for p in _OPERATORS.split(command.strip()) if p]
    if specifier.endswith(":*"):
        prefix = specifier[:-2]
        return bool(parts) and all(p.startswith(prefix) for p in parts)
    regex = _wildcard(specifier)
    return bool(parts) and all(regex.fullmatch(p) for p in parts)


def _path(specifier: str, file_path: str, root: str) -> bool:
    if specifier.startswith("//"):
        anchored = specifier[1:]
    elif specifier.startswith("~/"):
        return False  # the user's home is not known offline: no match claimed
    else:
        anchored = str(PurePosixPath(root) / specifier.removeprefix("/").removeprefix("./"))
    return _glob(anchored).fullmatch(str(PurePosixPath(file_path))) is not None


def matches(rule: Rule, tool: str, tool_input: dict[str, Any] | None, root: str) -> bool | None:
    """Whether ``rule`` matches a call of ``tool`` (Claude Code's name) with ``tool_input``;
    None when the call's input is not known and the rule needs it."""
    if rule.mcp:
        pattern = rule.tool if "__" in rule.tool[5:] else rule.tool + "__*"
        return _wildcard(pattern).fullmatch(tool) is not None or ("__" not in rule.tool[5:] and tool == rule.tool)
    applies = (
        rule.tool == tool
        or (rule.tool == "Read" and tool in READ_TOOLS)
        or (rule.tool == "Edit" and tool in EDIT_TOOLS)
    )
    if not applies:
        return False
    if rule.specifier is None or rule.specifier in ("", "*"):
        return True
    if tool_input is None:
        return None
    if rule.tool == "Bash":
        command = tool_input.get("command")
        return _bash(rule.specifier, command) if isinstance(command, str) else None
    if rule.tool in ("Read", "Edit"):
        target = tool_input.get("file_path") or tool_input.get("notebook_path") or tool_input.get("path")
        return _path(rule.specifier, target, root) if isinstance(target, str) else None
    if rule.tool == "WebFetch" and rule.specifier.startswith("domain:"):
        url = tool_input.get("url")
        host = urlsplit(url).hostname if isinstance(url, str) else None
        return _wildcard(rule.specifier[7:]).fullmatch(host) is not None if host else None
    values = [v for v in tool_input.values() if isinstance(v, str)]
    return any(_wildcard(rule.specifier).fullmatch(v) for v in values)


@dataclass
class Settings:
    """The merged permission rules of one Claude Code installation and project."""

    rules: list[Rule] = field(default_factory=list)
    ignored: list[tuple[Rule, str]] = field(default_factory=list)  # accepted, never applied
    root: str = "/"  # the project folder, for path rules
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Rule]:
        return [r for r in self.rules if r.kind == kind]

    def decide(self, tool: str, tool_input: dict[str, Any] | None) -> tuple[str | None, list[Rule], bool]:
        """(deny | ask | allow | None, the allow rules that match, whether the input left some
        rule undecided): Claude Code's evaluation, deny first, then ask, then allow."""
        undecided = False
        for kind in ("deny", "ask"):
            for rule in self.of(kind):
                hit = matches(rule, tool, tool_input, self.root)
                if hit:
                    return kind, [], False
                undecided = undecided or hit is None
        allowed = []
        for rule in self.of("allow"):
            hit = matches(rule, tool, tool_input, self.root)
            if hit:
                allowed.append(rule)
            undecided = undecided or hit is None
        return ("allow" if allowed else None), allowed, undecided


def _scope_files(managed: Path | None, user: Path | None, project: Path | None) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    if managed is not None:
        if managed.is_dir():
            files += [("managed", p) for p in [managed / "managed-settings.json"] if p.is_file()]
            drop_in = managed / "managed-settings.d"
            files += [("managed", p) for p in sorted(drop_in.glob("*.json"))] if drop_in.is_dir() else []
        else:
            files.append(("managed", managed))
    if project is not None:
        files += [
            (scope, project / ".claude" / name)
            for scope, name in (("local", "settings.local.json"), ("project", "settings.json"))
            if (project / ".claude" / name).is_file()
        ]
    if user is not None:
        files.append(("user", user))
    return files


def load(managed: Path | None, user: Path | None, project: Path | None) -> Settings:
    """The rules of every scope given (a missing project settings file is no scope; a named
    managed or user file that is missing is an input error)."""
    settings = Settings(root=str(project.resolve()) if project is not None else "/")
    raw: list[Rule] = []
    managed_only = False
    for scope, path in _scope_files(managed, user, project):
        doc = load_document(path, HINT)
        if not isinstance(doc, dict):
            raise InputError(f"{path}: not a settings object", f"expected {HINT}")
        settings.files.append(str(path))
        permissions = doc.get("permissions") or {}
        if not isinstance(permissions, dict):
            raise InputError(f"{path}: `permissions` is not an object", f"expected {HINT}")
        if scope == "managed" and doc.get("allowManagedPermissionRulesOnly") is True:
            managed_only = True
        mode = permissions.get("defaultMode")
        if mode == "bypassPermissions":
            settings.notes.append(
                f"{path} sets defaultMode bypassPermissions: every tool runs without asking, whatever the allow rules"
            )
        for kind in KINDS:
            entries = permissions.get(kind) or []
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise InputError(f"{path}: permissions.{kind} is not a list of rule strings", f"expected {HINT}")
            raw += [parse(kind, e, scope, str(path)) for e in entries]
    denied_tools = frozenset(r.tool for r in raw if r.kind == "deny" and r.specifier is None and not r.mcp)
    for rule in raw:
        why = never_applied(rule, denied_tools, managed_only)
        if why:
            settings.ignored.append((rule, why))
        else:
            settings.rules.append(rule)
    return settings
