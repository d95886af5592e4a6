"""Claude Code as a grant source, an enforcement point and a usage source: settings scopes and their
precedence, rule syntax, rules accepted but never applied, transcripts and telemetry (one call
counted once, refusals denied), and the reduced settings fragment checked by Claude Code's own
evaluation order."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path

import polars as pl
import yaml
from claude_support import claude_layer, settings, telemetry_line, transcript_lines, write_json
from conftest import END, run_cli
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from tools_support import audit_tools

from auditor.connectors.tools import claude_settings, claude_usage
from auditor.emit.write import write_outputs

REAL = Path(__file__).parent / "data" / "real" / "tools"


def _never(text: str) -> bool:
    return False


def _states(result) -> dict[str, str]:
    return dict(result.permissions.filter(pl.col("provider") == "tools").select("action", "state").iter_rows())


def _fragment(tmp_path: Path, result) -> dict:
    write_outputs(result, tmp_path / "out")
    (path,) = (tmp_path / "out").rglob("claude-settings.json")
    return json.loads(path.read_text())


def test_rules_of_every_scope_merge_and_deny_wins_over_a_higher_scope_allow(tmp_path):
    write_json(tmp_path / "home.json", settings(deny=["Bash(curl *)"]))
    write_json(tmp_path / "repo" / ".claude" / "settings.local.json", settings(allow=["Bash(curl *)", "Bash(ls *)"]))
    merged = claude_settings.load(None, tmp_path / "home.json", tmp_path / "repo")
    assert merged.decide("Bash", {"command": "curl https://x"})[0] == "deny"
    assert merged.decide("Bash", {"command": "ls -la"})[0] == "allow"
    assert merged.decide("Bash", {"command": "ls -la && rm -rf /"})[0] is None  # every part must match
    assert merged.decide("Bash", None)[2]  # input not recorded: undecided, never a guess


def test_rule_syntax():
    def rule(text: str) -> claude_settings.Rule:
        return claude_settings.parse("allow", text, "project", "settings.json")

    def hit(text, tool, tool_input):
        return claude_settings.matches(rule(text), tool, tool_input, "/repo")

    assert hit("Bash(npm run test:*)", "Bash", {"command": "npm run test:unit"})
    assert not hit("Bash(npm run test:*)", "Bash", {"command": "npm publish"})
    assert hit("Bash(ls *)", "Bash", {"command": "ls"}) and not hit("Bash(ls *)", "Bash", {"command": "lsof"})
    assert hit("Read(./src/**)", "Read", {"file_path": "/repo/src/a/b.py"})
    assert hit("Read(./src/**)", "Grep", {"path": "/repo/src/x"})  # Read rules cover the tools that read
    assert not hit("Read(./src/**)", "Read", {"file_path": "/etc/passwd"})
    assert hit("Edit(//etc/*)", "Write", {"file_path": "/etc/hosts"})
    assert hit("WebFetch(domain:docs.python.org)", "WebFetch", {"url": "https://docs.python.org/3/"})
    assert not hit("WebFetch(domain:docs.python.org)", "WebFetch", {"url": "https://evil.example/"})
    assert hit("mcp__github", "mcp__github__create_issue", {}) and hit("mcp__github__*", "mcp__github__x", {})
    assert not hit("mcp__github__search", "mcp__github__create_issue", {})
    assert rule("mcp__github__search").catalog_names() == ["github.search"]
    assert rule("Bash(npm *)").catalog_names() == ["builtin.Bash(npm *)"]


def test_rules_accepted_but_never_applied_are_listed_not_granted(tmp_path):
    write_json(tmp_path / "managed" / "managed-settings.json", settings(deny=["WebFetch"]))
    write_json(
        tmp_path / "repo" / ".claude" / "settings.json",
        settings(allow=["Write(docs/**)", "mcp__github(x)", "mcp__*", "Bash(command:rm *)", "WebFetch", "Bash(ls)"]),
    )
    loaded = claude_settings.load(tmp_path / "managed", None, tmp_path / "repo")
    ignored = {rule.text: why for rule, why in loaded.ignored}
    assert set(ignored) == {"Write(docs/**)", "mcp__github(x)", "mcp__*", "Bash(command:rm *)", "WebFetch"}
    assert [r.text for r in loaded.of("allow")] == ["Bash(ls)"]
    only = tmp_path / "only"
    write_json(only / "managed-settings.json", settings(allow=["Read"], allowManagedPermissionRulesOnly=True))
    strict = claude_settings.load(only, None, tmp_path / "repo")
    assert [r.text for r in strict.of("allow")] == ["Read"]


SCOPES = {
    "managed": settings(deny=["Bash(rm -rf:*)"]),
    "user": settings(allow=["Bash(npm *)", "WebFetch(domain:docs.python.org)"]),
    "project": settings(allow=["Bash(npm run test:*)", "Edit(src/**)", "Write(docs/**)"], ask=["Bash(git push:*)"]),
    "local": settings(allow=["Bash(git status)"]),
}


def _calls(root: Path):
    return [
        ("t1", "Bash", {"command": "npm run test:unit"}, None),
        ("t2", "Edit", {"file_path": str(root / "repo" / "src" / "a.py")}, None),
        ("t3", "Bash", {"command": "git push"}, None),
        ("t4", "Bash", {"command": "rm -rf /"}, "Permission to use Bash with command rm -rf / has been denied."),
        ("t5", "Read", {"file_path": "/etc/hosts"}, None),
    ]


def test_the_audit_of_a_claude_code_agent(tmp_path):
    root = tmp_path / "layer"
    result = audit_tools(claude_layer(root, SCOPES, _calls(root)))
    states = _states(result)
    assert states["builtin.Bash(npm run test:*)"] == "used"  # the narrowest rule a call matched
    assert states["builtin.Bash(npm *)"] == "unused"  # every call it matched, a narrower rule allows
    assert states["builtin.Bash(git status)"] == "unused"
    assert states["builtin.Edit(src/**)"] == "used" and states["builtin.Read"] == "used"
    assert "builtin.Write(docs/**)" not in states  # accepted, never applied: no grant
    perms = result.permissions.filter(pl.col("action") == "builtin.Bash")
    assert perms["granted"].to_list() == [False] and perms["denied_calls"].to_list() == [1]  # asked; refused
    destructive = dict(result.permissions.select("action", "destructive").iter_rows())
    assert destructive["builtin.Bash(npm run test:*)"] and not destructive["builtin.Bash(git status)"]
    found = {(k, t.split(" is ")[0]) for k, t in result.findings.select("kind", "title").iter_rows()}
    assert ("ignored-rule", "Claude Code allow rule Write(docs/**)") in found
    assert ("wider-than-used", "Claude Code allow rule Bash(npm *)") not in found  # a narrower rule took its calls
    assert ("wider-than-used", "Claude Code allow rule Bash(npm run test:*)") in found  # one command only
    permissions = _fragment(tmp_path, result)["permissions"]
    assert "Bash(npm run test:*)" in permissions["ask"]  # destructive and used: a human approves
    assert {"Bash(rm -rf:*)", "Bash(git push:*)"} <= set(permissions["deny"]) | set(permissions["ask"])
    assert "Bash(npm *)" not in permissions["deny"]  # a deny cannot be carved out: it would block npm run test


def test_telemetry_and_transcript_views_of_one_call_count_once_and_a_rejection_is_denied(tmp_path):
    root = tmp_path / "layer"
    manifest = claude_layer(
        root, {"project": settings(allow=["Bash(make *)"])}, [("u1", "Bash", {"command": "make"}, None)]
    )
    when = END - timedelta(hours=1)
    records = [
        (when, "tool_decision", {"session.id": "last", "tool_name": "Bash", "tool_use_id": "u1", "decision": "accept"}),
        (when, "tool_result", {"session.id": "last", "tool_name": "Bash", "tool_use_id": "u1", "success": "true"}),
        (when, "tool_decision", {"session.id": "last", "tool_name": "Bash", "tool_use_id": "u2", "decision": "reject"}),
        (when, "tool_result", {"session.id": "last", "tool_name": "Read", "tool_use_id": "u3", "success": "false"}),
    ]
    (root / "telemetry.jsonl").write_text(telemetry_line(records) + "{not json\n")
    doc = yaml.safe_load(manifest.read_text())
    doc["agents"][0]["claude_code"]["telemetry"] = ["telemetry.jsonl"]
    manifest.write_text(yaml.safe_dump(doc))
    result = audit_tools(manifest)
    rows = {a: (c, d) for a, c, d in result.permissions.select("action", "calls", "denied_calls").iter_rows()}
    assert rows["builtin.Bash(make *)"] == (1, 0)  # u1 in transcript and telemetry: one call
    assert rows["builtin.Bash"][1] == 1  # u2 rejected, input unknown: denied, under the tool
    assert rows["builtin.Read"] == (1, 0)  # failed, not refused: used
    assert "builtin.Bash(make *)" in {
        a for acts in result.data.observability["actions"].to_list() for a in acts
    }  # u2's input was not recorded: it may have matched the rule, which is therefore not unused
    assert any("not an OTLP logs export" in r for r in result.data.gaps["reason"].to_list())


def test_an_agent_whose_sessions_start_late_is_unobservable_not_unused(tmp_path):
    root = tmp_path / "layer"
    result = audit_tools(claude_layer(root, {"project": settings(allow=["Bash(make *)"])}, [], daily=False))
    assert set(_states(result).values()) == {"unobservable"}


def test_a_real_transcript_reads_every_tool_use():
    scan = claude_usage.read([REAL / "claude-code-log-minimal-showcase-session.jsonl"], [], 1 << 20, _never)
    assert sorted(c.tool for c in scan.calls) == [
        "Agent",
        "Agent",
        "ScheduleWakeup",
        "mcp__plugin_showcase_example__inspect_repository_structure",
        "mcp__plugin_showcase_example__refresh_search_index",
    ]
    assert {c.outcome for c in scan.calls} == {"used"} and not scan.problems
    assert scan.sessions["55550000-0000-4000-8000-000000000001"] == ("2026-06-15T10:00:01Z", "2026-06-15T10:00:11Z")


def test_hostile_transcripts_are_problems_not_failures(tmp_path):
    path = tmp_path / "s.jsonl"
    good = (REAL / "claude-code-log-minimal-showcase-session.jsonl").read_text()
    path.write_text(good[: len(good) // 2] + "\n[1, 2]\n" + good + good)  # truncated, mis-typed, duplicated
    scan = claude_usage.read([path, tmp_path / "missing.jsonl"], [], 1 << 20, _never)
    assert len(scan.calls) == 5 and scan.duplicates >= 5
    assert len(scan.problems) >= 3


COMMANDS = st.sampled_from(["npm test", "npm run build", "git status", "git push", "rm -rf build", "ls -la", "make"])
RULES = st.sampled_from(
    ["Bash(npm *)", "Bash(npm test)", "Bash(git status)", "Bash(git *)", "Bash(rm -rf:*)", "Bash(ls *)", "Bash(make)"]
)


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(allow=st.sets(RULES, max_size=5), ask=st.sets(RULES, max_size=2), commands=st.lists(COMMANDS, max_size=5))
def test_the_reduced_settings_allow_every_call_the_settings_allowed_and_deny_unused_destructive(allow, ask, commands):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        calls = [(f"c{i}", "Bash", {"command": c}, None) for i, c in enumerate(commands)]
        original = settings(allow=sorted(allow), ask=sorted(ask))
        result = audit_tools(claude_layer(root / "layer", {"project": original}, calls))
        write_json(root / "before" / ".claude" / "settings.json", original)
        before = claude_settings.load(None, None, root / "before")
        write_json(root / "after" / ".claude" / "settings.json", _fragment(root, result))
        after = claude_settings.load(None, None, root / "after")
        for command in commands:
            was = before.decide("Bash", {"command": command})[0]
            now = after.decide("Bash", {"command": command})[0]
            assert now != "deny" or was == "deny", (command, now)  # never blocks a call the settings let through
            assert now != "allow" or was == "allow", (command, now)  # never wider than the settings
        states = _states(result)
        destructive = dict(result.permissions.select("action", "destructive").iter_rows())
        used_tools = bool(commands)
        for rule in allow:
            name = f"builtin.{rule}"
            if states.get(name) == "unused" and destructive[name]:
                assert rule not in [r.text for r in after.of("allow")]
                if not used_tools:
                    assert rule in [r.text for r in after.of("deny")]


def test_a_deny_claude_code_never_applies_is_a_high_finding_counted_by_fail_on(tmp_path):
    def run(deny: str) -> tuple[int, list[str]]:
        root = tmp_path / deny.split("(")[0]
        manifest = claude_layer(root, {"project": settings(deny=[deny])}, [])
        code = run_cli("audit", "--tools-manifest", manifest, "--out", root / "out", "--fail-on", "high", "-q").code
        report = json.loads((root / "out" / "report.json").read_text())
        return code, [f["kind"] for f in report["findings"] if f["severity"] in ("high", "critical")]

    assert run("Write(./secrets/**)") == (1, ["ignored-restriction"])  # Write path rules are not consulted
    assert run("Edit(./secrets/**)") == (0, [])  # the rule that does apply to writes


def _two_agents(root: Path, extra: dict | None = None) -> tuple[Path, dict[str, list[str]]]:
    """Agents ``web`` (project folder /home/a/web) and ``api`` (project -home-b-api and session sC)
    reading the same transcripts folder and one telemetry export holding sessions sA (web), sB and
    sC (api) and sD (nobody's). Returns the manifest and, per session, the commands it ran."""
    write_json(root / "home.json", settings(allow=["Bash(make *)", "Bash(npm *)"]))
    commands = {"sA": ["make web"] * 3, "sB": ["npm test"] * 2, "sC": ["make api"], "sD": ["npm ci"] * 4}
    folders = {"sA": "-home-a-web", "sB": "-home-b-api"}
    early, late = END - timedelta(days=30, hours=-1), END - timedelta(hours=1)
    records = []
    for session, ran in commands.items():
        records.append((early, "user_prompt", {"session.id": session}))  # every session from the window start
        for index, command in enumerate(ran):
            attrs = {"session.id": session, "tool_name": "Bash", "tool_use_id": f"{session}-{index}"}
            attrs["tool_parameters"] = json.dumps({"bash_command": command})
            records.append((late, "tool_result", {**attrs, "success": "true"}))
        if session in folders:  # its transcript, with the same calls: counted once
            calls = [(f"{session}-{i}", "Bash", {"command": c}, None) for i, c in enumerate(ran)]
            path = root / "projects" / folders[session] / f"{session}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(transcript_lines(session, calls, late))
    (root / "telemetry.jsonl").write_text(telemetry_line(records))
    shared = {"user": "home.json", "transcripts": ["projects"], "telemetry": ["telemetry.jsonl"]}
    agents = [
        {"name": "web", "claude_code": {**shared, "projects": ["/home/a/web"]}},
        {"name": "api", "claude_code": {**shared, "projects": ["-home-b-api"], "sessions": ["sC"]}},
        *([extra] if extra else []),
    ]
    (root / "agents.yaml").write_text(yaml.safe_dump({"version": 1, "project": "lab", "agents": agents}))
    return root / "agents.yaml", commands


def _calls_of(result, agent: str) -> dict[str, int]:
    rows = result.permissions.filter((pl.col("identity") == f"agent://lab/{agent}") & (pl.col("calls") > 0))
    return dict(rows.select("action", "calls").iter_rows())


def _expected(commands: dict[str, list[str]], sessions: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for session in sessions:
        for command in commands[session]:
            rule = "builtin.Bash(make *)" if command.startswith("make ") else "builtin.Bash(npm *)"
            out[rule] = out.get(rule, 0) + 1
    return out


def test_one_export_holding_two_agents_sessions_is_split_by_project_and_session(tmp_path):
    manifest, commands = _two_agents(tmp_path / "layer")
    result = audit_tools(manifest)
    assert _calls_of(result, "web") == _expected(commands, ["sA"])
    assert _calls_of(result, "api") == _expected(commands, ["sB", "sC"])
    reasons = " ".join(result.data.gaps["reason"].to_list())
    assert "1 session(s) in the Claude Code inputs that no agent's" in reasons and "sD" in reasons


def test_an_agent_naming_no_session_takes_the_sessions_no_agent_names(tmp_path):
    shared = {"user": "home.json", "transcripts": ["projects"], "telemetry": ["telemetry.jsonl"]}
    manifest, commands = _two_agents(tmp_path / "layer", {"name": "rest", "claude_code": shared})
    result = audit_tools(manifest)
    assert _calls_of(result, "rest") == _expected(commands, ["sD"])
    assert _calls_of(result, "web") == _expected(commands, ["sA"])
    assert "no agent's" not in " ".join(result.data.gaps["reason"].to_list())


def test_a_session_two_agents_name_counts_for_neither(tmp_path):
    both = {"user": "home.json", "transcripts": ["projects"], "telemetry": ["telemetry.jsonl"], "sessions": ["sA"]}
    manifest, commands = _two_agents(tmp_path / "layer", {"name": "twin", "claude_code": both})
    result = audit_tools(manifest)
    assert _calls_of(result, "web") == {} and _calls_of(result, "twin") == {}
    assert any("named by agents twin, web" in r for r in result.data.gaps["reason"].to_list())
    assert _calls_of(result, "api") == _expected(commands, ["sB", "sC"])
