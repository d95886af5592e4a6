"""``auditor approvals list | show | approve | deny | watch`` on both backends: what the human sees,
what a decision records, one-line errors with exit 2, watch's live feed and its Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from approvals_support import free_port, submit
from conftest import one_line_error, run_cli

from auditor.approvals import open_queue


def test_list_is_empty_then_a_table_of_pending_requests(queue_url, queue):
    empty = run_cli("approvals", "list", "--queue", queue_url)
    assert empty.code == 0 and empty.out.strip() == "no pending approval requests"
    request = submit(queue, identity="bot-7", target="ec2:TerminateInstances", resource="i-0abc", rule="destroy")
    decided = submit(queue)
    queue.decide(decided.id, True, approver="alice")
    shown = run_cli("approvals", "list", "--queue", queue_url)
    assert shown.code == 0, shown.err
    header, _, *rows = shown.out.strip().splitlines()
    assert header.split() == ["id", "age", "identity", "target", "rule", "expires", "in"]
    assert len(rows) == 1
    assert rows[0].split()[:1] + rows[0].split()[2:6] == [request.id, "bot-7", "ec2:TerminateInstances", "on", "i-0abc"]
    assert "59m" in rows[0] or "1h" in rows[0]


def test_list_all_status_and_json(queue_url, queue):
    pending, denied = submit(queue), submit(queue)
    queue.decide(denied.id, False, approver="bob")
    every = run_cli("approvals", "list", "--all", "--queue", queue_url)
    assert every.code == 0 and "status" in every.out.splitlines()[0]
    assert {line.split()[0]: line.split()[1] for line in every.out.splitlines()[2:]} == {
        pending.id: "pending",
        denied.id: "denied",
    }
    only = run_cli("approvals", "list", "--status", "denied", "--json", "--queue", queue_url)
    (row,) = json.loads(only.out)
    assert (row["id"], row["status"], row["decided_by"]) == (denied.id, "denied", "bob")
    assert row["created"].endswith("Z") and row["params"] == {"Bucket": "prod-logs"}
    line = one_line_error(run_cli("approvals", "list", "--all", "--status", "denied", "--queue", queue_url))
    assert "exclude each other" in line


def test_show_prints_every_field_with_redacted_params(queue_url, queue):
    request = submit(
        queue,
        kind="tool",
        target="shell.exec",
        resource=None,
        params={"command": "mysql -u root --password=Sup3rS3cret prod", "api_key": "abc123xyz"},
        reason="runs a shell command",
    )
    shown = run_cli("approvals", "show", request.id, "--queue", queue_url)
    assert shown.code == 0, shown.err
    for field in ("id:", "status:", "identity:", "kind:", "target:", "rule:", "reason:", "requester:", "params:"):
        assert field in shown.out
    assert "pending (expires in" in shown.out and "runs a shell command" in shown.out
    assert "Sup3rS3cret" not in shown.out and "abc123xyz" not in shown.out
    as_json = json.loads(run_cli("approvals", "show", request.id, "--json", "--queue", queue_url).out)
    assert as_json["params"] == {"api_key": "[redacted]", "command": "mysql -u root --password=[redacted] prod"}
    assert as_json["kind"] == "tool" and as_json["resource"] is None and as_json["decided_at"] is None


def test_approve_and_deny_record_who_and_why_and_refuse_a_second_decision(queue_url, queue):
    first, second = submit(queue), submit(queue)
    approved = run_cli(
        "approvals", "approve", first.id, "--note", "change CHG-42", "--as", "alice", "--queue", queue_url
    )
    assert approved.code == 0, approved.err
    assert approved.out.startswith(f"approved {first.id}")
    recorded = queue.get(first.id)
    assert (recorded.status, recorded.decided_by, recorded.note) == ("approved", "alice", "change CHG-42")
    again = one_line_error(run_cli("approvals", "deny", first.id, "--as", "mallory", "--queue", queue_url))
    assert f"request {first.id} was already approved by alice at " in again
    assert queue.get(first.id) == recorded
    denied = run_cli("approvals", "deny", second.id, "--queue", queue_url)
    assert denied.code == 0, denied.err
    user = os.environ.get("USER") or __import__("getpass").getuser()
    assert queue.get(second.id).decided_by == f"{user}@{socket.gethostname()}"


def test_deciding_an_expired_request_says_so(queue_url, queue):
    late = submit(queue, timeout_s=0)
    line = one_line_error(run_cli("approvals", "approve", late.id, "--queue", queue_url))
    assert f"request {late.id} expired unanswered at " in line
    assert queue.get(late.id).status == "expired"


@pytest.mark.parametrize("command", [["show", "nope"], ["approve", "nope"], ["deny", "nope"]])
def test_unknown_id_is_one_line(queue_url, command):
    assert "no approval request 'nope'" in one_line_error(run_cli("approvals", *command, "--queue", queue_url))


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("mysql://root@db/q", "scheme 'mysql' is unknown"),
        ("/no/such/dir/q.db", "cannot create approval queue"),
        ("postgresql://u:Hidden123@127.0.0.1:{port}/q?connect_timeout=2", "cannot reach the approval queue"),
    ],
)
def test_bad_or_unreachable_queues_are_one_line(location, message):
    line = one_line_error(run_cli("approvals", "list", "--queue", location.format(port=free_port())))
    assert message in line and "Hidden123" not in line


def test_the_queue_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "env.db"
    monkeypatch.setenv("AUDITOR_APPROVALS", str(path))
    queue = open_queue(path)
    request = submit(queue)
    assert request.id in run_cli("approvals", "list").out
    queue.close()


def watcher(queue_url: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "auditor", "approvals", "watch", "--queue", queue_url, "--interval", "0.05", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_watch_prints_each_new_request_once_and_ctrl_c_exits_130(queue_url, queue):
    old = submit(queue, identity="early-bird")
    watch = watcher(queue_url, "--no-interactive")
    try:
        assert watch.stdout.readline().startswith(f"{old.id}  early-bird  action s3:DeleteBucket on ")
        new = submit(queue, identity="late-comer", kind="tool", target="github.delete_repo", resource=None)
        line = watch.stdout.readline()
        assert line.startswith(f"{new.id}  late-comer  tool github.delete_repo  [aws-destroy-verbs]")
    finally:
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
    assert watch.returncode == 130, err
    assert err.strip().splitlines()[-1] == "auditor: interrupted; no output was changed"


def test_watch_interactive_decides_from_the_prompt(queue_url, queue):
    yes, no, skipped = submit(queue), submit(queue), submit(queue)
    watch = watcher(queue_url, "--interactive", "--as", "operator")
    try:
        watch.stdin.write("a\nd\n\n")
        watch.stdin.flush()
        deadline = time.monotonic() + 30
        while queue.get(no.id).status == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=30)
    assert watch.returncode == 130, err
    assert (queue.get(yes.id).status, queue.get(yes.id).decided_by) == ("approved", "operator")
    assert queue.get(no.id).status == "denied"
    assert queue.get(skipped.id).status == "pending"
    assert f"approved {yes.id}" in out and f"denied {no.id}" in out
