"""The ``auditor`` command in process (``auditor.cli.main`` with ``sys.argv`` set): outputs, exit codes,
one-line errors, the output set; plus one smoke test of the installed command."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import END, one_line_error, run_cli

from auditor import aws_policy
from auditor.emit.report_md import text
from builders import ACCOUNT, allow, auth_details, event, policy, role, role_arn, snapshot

SCHEMAS = Path(__file__).parents[1] / "auditor" / "schemas"
SCHEMA = json.loads((SCHEMAS / "blocklist.schema.json").read_text())
REPORT_SCHEMA = json.loads((SCHEMAS / "report.schema.json").read_text())
BOT_FOLDER = f"policies/aws/{ACCOUNT}/role/bot"
DESCRIBE = [("dynamodb.amazonaws.com", "DescribeTable", {})]


def build(tmp: Path, grant, calls, name="bot") -> Path:
    """A snapshot with one agent holding ``grant`` and making ``calls`` every day of 32 days."""
    days: dict[str, list] = {}
    for offset in range(32):
        when = END - timedelta(days=offset)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        days.setdefault(when.strftime("%Y/%m/%d"), []).extend(
            event(role_arn(name), source, call, stamp, **extra) for source, call, extra in calls
        )
        days[when.strftime("%Y/%m/%d")].append(event(role_arn("other"), "s3.amazonaws.com", "ListBuckets", stamp))
    return snapshot(tmp / "in", auth_details([role(name, inline={"p": grant}), role("other", tags={})]), days)


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    """One audit of an agent granted dynamodb:* and sqs:ListQueues that describes and deletes tables."""
    tmp = tmp_path_factory.mktemp("audited")
    grant = policy(allow(["dynamodb:*", "sqs:ListQueues"]))
    calls = [*DESCRIBE, ("dynamodb.amazonaws.com", "DeleteTable", {"read_only": False})]
    source = build(tmp, grant, calls)
    result = run_cli("audit", "--aws-dir", source, "--out", tmp / "out")
    return tmp / "out", result


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """A snapshot of an agent granted dynamodb:* that only describes tables."""
    return build(tmp_path_factory.mktemp("wide"), policy(allow("dynamodb:*")), DESCRIBE)


def test_audit_writes_every_output_and_a_summary(audited):
    out, result = audited
    assert result.code == 0, result.err
    assert "bot" in result.out and "critical" in result.out
    for name in (
        "report.md",
        "report.json",
        "blocklist.yaml",
        "permissions.csv",
        "permissions.parquet",
        "policies/index.json",
        f"{BOT_FOLDER}/policy.json",
    ):
        assert (out / name).is_file(), name
    # --out is a symlink to the published run folder; nothing is left staged
    assert out.is_symlink()
    state = out.parent / ".out.auditor"
    assert Path(os.path.realpath(out)).parent == (state / "runs").resolve()
    assert not (state / "staging").exists() or not any((state / "staging").iterdir())


def test_blocklist_validates_against_its_schema_and_matches_usage(audited):
    out, _ = audited
    document = yaml.safe_load((out / "blocklist.yaml").read_text())
    jsonschema.validate(document, SCHEMA)
    assert document["windows"]["aws"]["basis"]
    (bot,) = document["identities"]
    denied = {p for group in bot["deny"] for p in group["permissions"]}
    approval = {entry["permission"] for entry in bot["require_approval"]}
    assert "dynamodb:DeleteTable" in approval and "dynamodb:DeleteTable" not in denied
    assert "dynamodb:DeleteBackup" in denied
    assert not denied & approval


def test_policy_is_valid_iam_json_allowing_exactly_the_used_actions(audited):
    out, _ = audited
    assert sorted(p.name for p in (out / BOT_FOLDER).glob("*.json")) == ["boundary.json", "deny.json", "policy.json"]
    document = json.loads((out / BOT_FOLDER / "policy.json").read_text())
    assert document["Version"] == "2012-10-17"
    assert all(s["Sid"].isalnum() for s in document["Statement"])
    assert aws_policy.allows([document], "dynamodb:DescribeTable")
    assert aws_policy.allows([document], "dynamodb:DeleteTable")
    assert not aws_policy.allows([document], "dynamodb:DeleteBackup")
    assert not aws_policy.allows([document], "sqs:ListQueues")


def test_index_lists_the_folder_files_and_quoted_apply_commands(audited):
    out, _ = audited
    entry, scp = json.loads((out / "policies" / "index.json").read_text())
    assert scp["folder"] == f"policies/aws/{ACCOUNT}/organizations" and scp["enforce"]  # the account's SCP
    assert set(entry) == {
        "provider",
        "account",
        "identity",
        "name",
        "folder",
        "files",
        "apply",
        "exceptions",
        "dormant",
        "note",
        "alternative",
        "kept_unobservable",
        "enforce",
        "enforce_note",
    }
    files = [f"{BOT_FOLDER}/policy.json", f"{BOT_FOLDER}/deny.json", f"{BOT_FOLDER}/boundary.json"]
    assert (entry["folder"], entry["files"], entry["dormant"]) == (BOT_FOLDER, files, False)
    put_deny = entry["enforce"][0]
    assert put_deny == (
        "aws iam put-role-policy --role-name=bot --policy-name=auditor-blocklist-deny "
        f"--policy-document=file://{BOT_FOLDER}/deny.json"
    )
    create, attach, delete = entry["apply"]
    assert create == (
        f"aws iam create-policy --policy-name=auditor-role-bot --path=/ --policy-document=file://{BOT_FOLDER}/policy.json"
    )
    assert (
        attach
        == f"aws iam attach-role-policy --role-name=bot --policy-arn=arn:aws:iam::{ACCOUNT}:policy/auditor-role-bot"
    )
    assert delete == "aws iam delete-role-policy --role-name=bot --policy-name=p"


def test_report_json_agrees_with_permissions(audited):
    out, _ = audited
    report = json.loads((out / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert set(report["windows"]) == {"aws"} and "window" not in report
    assert report["windows"]["aws"]["end"] == "2026-11-20T12:00:00Z"  # the newest event
    (bot,) = report["identities"]
    used = {p["action"] for p in bot["used_permissions"]}
    assert used == {"dynamodb:DescribeTable", "dynamodb:DeleteTable"}
    assert bot["used"] + bot["unused"] + bot["unobservable"] + bot["denied"] <= bot["granted"]
    assert bot["policy_folder"] == BOT_FOLDER and bot["apply_commands"] and bot["dormant"] is False
    assert report["summary"]["findings"] == {
        s: sum(1 for f in report["findings"] if f["severity"] == s) for s in report["summary"]["findings"]
    }


@pytest.mark.parametrize(("level", "code"), [("critical", 1), ("high", 1), ("none", 0)])
def test_fail_on_gates_the_exit_code(tmp_path, wide, level, code):
    result = run_cli("audit", "--aws-dir", wide, "--out", tmp_path / "out", "--fail-on", level, "-q")
    assert result.code == code, result.err
    assert (tmp_path / "out" / "report.md").is_file()
    assert result.out == ""  # -q
    if code:
        assert result.err.strip() == f"auditor: findings at or above {level}: failing (--fail-on {level})"


def test_fail_on_is_not_triggered_by_lower_findings(tmp_path):
    grant = policy(allow(["dynamodb:DescribeTable", "dynamodb:ListTables"]))  # ListTables: unused, low
    source = build(tmp_path, grant, DESCRIBE)
    result = run_cli("audit", "--aws-dir", source, "--out", tmp_path / "out", "--fail-on", "medium", "-q")
    assert result.code == 0, result.out + result.err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["summary"]["worst_severity"] == "low"  # there are findings, all below the gate
    assert any(f["kind"] == "unused-grant" for f in report["findings"])
    assert run_cli("audit", "--aws-dir", source, "--out", tmp_path / "out2", "--fail-on", "low", "-q").code == 1


def test_malformed_authorization_details_is_one_line_and_writes_nothing(tmp_path):
    source = build(tmp_path, policy(allow("dynamodb:*")), DESCRIBE)
    (source / "authorization-details.json").write_text('{"RoleDetailList": [')
    message = one_line_error(run_cli("audit", "--aws-dir", source, "--out", tmp_path / "out"))
    assert message.startswith("auditor: error: ")
    assert "authorization-details.json" in message and "invalid JSON" in message
    assert not (tmp_path / "out").exists()


def test_empty_log_directory_is_one_line(tmp_path):
    (tmp_path / "auth.json").write_text(json.dumps(auth_details([role("bot")])))
    (tmp_path / "logs").mkdir()
    message = one_line_error(
        run_cli(
            "audit", "--aws-auth", tmp_path / "auth.json", "--cloudtrail", tmp_path / "logs", "--out", tmp_path / "out"
        )
    )
    assert "no CloudTrail log files" in message


def test_strict_makes_a_corrupt_log_file_fatal_and_default_lists_it(tmp_path):
    source = build(tmp_path, policy(allow("dynamodb:*")), DESCRIBE)
    corrupt = next((source / "AWSLogs").rglob("*.json.gz"))
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    relaxed = run_cli("audit", "--aws-dir", source, "--out", tmp_path / "out", "-q")
    assert relaxed.code == 0, relaxed.err
    gaps = json.loads((tmp_path / "out" / "report.json").read_text())["gaps"]
    assert any(corrupt.name in g["scope"] for g in gaps)
    assert text(corrupt.name) in (tmp_path / "out" / "report.md").read_text()  # escaped: report.md quotes input
    message = one_line_error(run_cli("audit", "--aws-dir", source, "--out", tmp_path / "strict", "--strict"))
    assert corrupt.name in message and "gzip" in message
    assert not (tmp_path / "strict").exists()


def test_no_agents_selected_is_one_line(tmp_path, wide):
    message = one_line_error(run_cli("audit", "--aws-dir", wide, "--agent-tag", "", "--out", tmp_path / "o"))
    assert "no agent identities" in message


def test_nothing_to_audit_is_one_line(tmp_path):
    assert "nothing to audit" in one_line_error(run_cli("audit", "--out", tmp_path / "o"))


def test_bad_option_values_are_usage_errors(tmp_path):
    bad = run_cli("audit", "--fail-on", "sometimes")
    assert bad.code == 2 and "--fail-on" in bad.err and "Traceback" not in bad.err
    assert run_cli("audit", "--days", "0").code == 2
    message = one_line_error(run_cli("audit", "--aws-dir", tmp_path, "--until", "yesterday"))
    assert "--until" in message


def test_options_that_go_together_are_one_line_errors(tmp_path):
    assert "--aws-auth and --cloudtrail go together" in one_line_error(
        run_cli("audit", "--aws-auth", tmp_path / "a.json", "--out", tmp_path / "o")
    )
    assert "--event-selectors needs --aws-auth and --cloudtrail" in one_line_error(
        run_cli("audit", "--event-selectors", tmp_path / "s.json", "--out", tmp_path / "o")
    )
    assert "need --aws" in one_line_error(run_cli("audit", "--snapshot", tmp_path, "--out", tmp_path / "o"))


def test_internal_errors_exit_3_in_one_line(tmp_path, wide, monkeypatch):
    from auditor import audit as library

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(library, "run_audit", broken)
    message = one_line_error(run_cli("audit", "--aws-dir", wide, "--out", tmp_path / "o"), code=3)
    assert message == "auditor: internal error: RuntimeError: boom (rerun with AUDITOR_DEBUG=1 for details)"
    assert not (tmp_path / "o").exists()


def interrupted_run(tmp_path, source, monkeypatch):
    from auditor import audit as library

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(library, "run_audit", interrupted)
    return run_cli("audit", "--aws-dir", source, "--out", tmp_path / "o")


def test_an_interrupt_exits_130_and_changes_no_output(tmp_path, wide, monkeypatch):
    assert interrupted_run(tmp_path, wide, monkeypatch).code == 130
    assert not (tmp_path / "o").exists()


def test_an_interrupt_says_so_in_one_line(tmp_path, wide, monkeypatch):
    message = one_line_error(interrupted_run(tmp_path, wide, monkeypatch), code=130)
    assert message == "auditor: interrupted; no output was changed"


def test_a_failing_run_keeps_the_previous_outputs_intact(tmp_path, audited):
    out, _ = audited
    target = os.path.realpath(out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    source = build(tmp_path / "second", policy(allow("dynamodb:*")), [])
    (source / "authorization-details.json").write_text("[]")
    one_line_error(run_cli("audit", "--aws-dir", source, "--out", out))
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after and os.path.realpath(out) == target


def test_rules_command_validates_user_rules(tmp_path):
    listed = run_cli("rules")
    assert listed.code == 0 and "destructive rules" in listed.out
    (tmp_path / "destructive.yaml").write_text("rules:\n  - id: x\n    provider: aws\n    severity: extreme\n")
    message = one_line_error(run_cli("rules", "--rules", tmp_path))
    assert "destructive.yaml" in message


def test_user_rules_extend_and_disable_shipped_ones(tmp_path, wide):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "destructive.yaml").write_text(
        yaml.safe_dump(
            {
                "rules": [
                    {"id": "aws-destroy-verbs", "disabled": True},
                    {
                        "id": "no-describe",
                        "provider": "aws",
                        "category": "destroy",
                        "severity": "low",
                        "reason": "describing is dangerous here",
                        "actions": ["dynamodb:DescribeTable"],
                    },
                ]
            }
        )
    )
    result = run_cli("audit", "--aws-dir", wide, "--rules", rules, "--out", tmp_path / "out", "-q")
    assert result.code == 0, result.err
    blocklist = yaml.safe_load((tmp_path / "out" / "blocklist.yaml").read_text())
    (bot,) = blocklist["identities"]
    assert [e["permission"] for e in bot["require_approval"] if e["rule"] == "no-describe"] == [
        "dynamodb:DescribeTable"
    ]
    assert all(group["rule"] != "aws-destroy-verbs" for group in bot["deny"])


def test_installed_command_smoke(tmp_path, wide):
    """The one end-to-end run of the installed ``auditor`` entry point (everything else runs in process)."""
    command = shutil.which("auditor", path=str(Path(sys.executable).parent)) or shutil.which("auditor")
    assert command, "the auditor command is not installed"
    run = subprocess.run(
        [command, "audit", "--aws-dir", str(wide), "--out", str(tmp_path / "out"), "--fail-on", "critical"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    assert "bot" in run.stdout and run.stderr.strip().endswith("(--fail-on critical)")
    assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["identities"] == 1


@pytest.mark.parametrize(
    ("ending", "status", "message"),
    [("return", 0, ""), ("2", 2, ""), ("text", 1, "the run failed")],
)
def test_the_entry_point_keeps_exit_handlers_output_and_status(tmp_path, ending, status, message):
    """``entry()`` skips the interpreter's teardown: exit handlers (temporary snapshot folders) still
    run, buffered output still reaches a pipe, and the status is the one ``main()`` ended with."""
    marker = tmp_path / "cleaned"
    script = (
        "import atexit, importlib, sys\n"
        "cli = importlib.import_module('auditor.cli.app')\n"
        "def main():\n"
        f"    atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "    sys.stdout.write('x' * 1_000_000)\n"
        f"    ending = {ending!r}\n"
        "    if ending == 'text':\n"
        "        sys.exit('the run failed')\n"
        "    if ending != 'return':\n"
        "        sys.exit(int(ending))\n"
        "cli.main = main\n"
        "cli.entry()\n"
        "print('after entry')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == status
    assert run.stdout == "x" * 1_000_000  # all of it, and nothing after entry(): the process ended there
    assert run.stderr.strip() == message
    assert marker.read_text() == "yes"


def test_the_entry_point_collects_young_garbage_rarely_but_still_collects_cycles(tmp_path):
    """A command-line run raises the young-generation threshold (collecting every 700 allocations was
    ~5% of a small audit); cyclic garbage is still collected."""
    script = (
        "import gc, importlib, sys, weakref\n"
        "cli = importlib.import_module('auditor.cli.app')\n"
        "class Node: pass\n"
        "def main():\n"
        "    node = Node(); node.me = node; alive = weakref.ref(node); del node\n"
        "    kept = [[] for _ in range(3 * cli.RUN_GC_THRESHOLD)]  # net allocations trigger collections\n"
        "    print(gc.get_threshold()[0], gc.isenabled(), alive() is None)\n"
        "cli.main = main\n"
        "cli.entry()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    from auditor.cli.app import RUN_GC_THRESHOLD

    assert run.stdout.split() == [str(RUN_GC_THRESHOLD), "True", "True"]
    assert RUN_GC_THRESHOLD > 700


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "--help"],
        ["audit", "--bogus"],
        ["audit", "--days", "x"],
        ["audit", "--aws-dir"],
        ["audit", "extra-argument"],
        ["audit"],
    ],
)
def test_audit_runs_alone_as_it_runs_among_the_other_commands(args, tmp_path):
    """``auditor audit`` is parsed by an app holding that command alone (typer builds every command's
    options first): its help, its usage errors and its runs must read as with the whole app."""
    from typer.testing import CliRunner

    cli = importlib.import_module("auditor.cli.app")  # the module (auditor.cli.app is also its app)
    alone = cli.app_for(args)
    assert alone is not cli.app
    runner = CliRunner()
    whole, single = (runner.invoke(a, args, prog_name="auditor", env={"COLUMNS": "100"}) for a in (cli.app, alone))
    assert (single.exit_code, single.output) == (whole.exit_code, whole.output)
    assert cli.app_for(["diff", "a", "b"]) is cli.app and cli.app_for([]) is cli.app
