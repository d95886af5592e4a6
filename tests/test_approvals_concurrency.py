"""Many processes at once on each backend: agents submitting and waiting, approver processes and the
real ``auditor approvals`` CLI racing to decide. Nothing lost, nothing decided twice, every waiter
sees the recorded decision; a SIGKILLed approver or agent leaves no stuck lock or request."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from approvals_support import submit
from approvals_worker import deciders

from auditor.approvals import open_queue

WORKER = str(Path(__file__).parent / "approvals_worker.py")
AGENTS, PER_AGENT = 3, 4


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WORKER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )


def cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "auditor", "approvals", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_agents_approvers_and_the_cli_decide_every_request_exactly_once(queue_url, queue):
    total = AGENTS * PER_AGENT
    agents = [spawn("agent", queue_url, str(PER_AGENT), "120") for _ in range(AGENTS)]
    approvers = [spawn("approver", queue_url, f"bot-{n}", str(total)) for n in range(2)]
    submitted: set[str] = set()
    cli_runs: dict[str, list[subprocess.Popen[str]]] = {}
    deadline = time.monotonic() + 120
    while len(submitted) < total:  # the CLI races for its requests as soon as they are listed
        assert time.monotonic() < deadline and all(a.poll() in (None, 0) for a in agents), "an agent died"
        time.sleep(0.02)
        for request in queue.list(None):
            if request.id not in submitted:
                submitted.add(request.id)
                if "cli" not in deciders(request.resource):
                    continue
                verb = "approve" if request.id[2] < "n" else "deny"
                racers = 2 if len(cli_runs) % 4 == 0 else 1  # some requests get two CLI racers as well
                cli_runs[request.id] = [
                    cli(verb, request.id, "--as", f"cli-{n}", "--queue", queue_url) for n in range(racers)
                ]
    seen: dict[str, tuple[str, str]] = {}
    for agent in agents:
        out, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        for line in out.splitlines():
            if line.startswith("seen "):
                _, rid, status, who = line.split()
                seen[rid] = (status, who)
    wins: Counter[str] = Counter()
    winner: dict[str, tuple[str, str]] = {}
    for approver in approvers:
        out, err = approver.communicate(timeout=180)
        assert approver.returncode == 0, err
        for line in out.splitlines():
            if line.startswith("decided "):
                _, rid, status, who = line.split()
                wins[rid] += 1
                winner[rid] = (status, who)
    for rid, runs in cli_runs.items():
        for n, run in enumerate(runs):
            out, err = run.communicate(timeout=180)
            if run.returncode == 0:
                wins[rid] += 1
                winner[rid] = (out.split()[0], f"cli-{n}")
            else:
                assert run.returncode == 2 and "was already" in err and len(err.strip().splitlines()) == 1, err
    stored = {r.id: r for r in queue.list(None)}
    assert set(stored) == submitted == set(seen)
    assert len(stored) == total
    assert all(count == 1 for count in wins.values()) and set(wins) == submitted
    for rid, request in stored.items():
        assert (request.status, request.decided_by) == winner[rid] == seen[rid]
        assert request.params["password"] == "[redacted]"
    assert any(who.startswith("cli-") for _, who in winner.values())
    assert any(who.startswith("bot-") for _, who in winner.values())


def test_a_killed_approver_leaves_no_stuck_lock(queue_url, queue):
    held, other = submit(queue), submit(queue)
    ghost = spawn("hold", queue_url.removeprefix("sqlite:///"), held.id)
    assert ghost.stdout.readline().strip() == "holding"
    ghost.send_signal(signal.SIGKILL)
    ghost.communicate(timeout=30)
    decided = queue.decide(held.id, False, approver="alice")  # the ghost's uncommitted approval is gone
    assert (decided.status, decided.decided_by) == ("denied", "alice")
    assert queue.decide(other.id, True, approver="alice").status == "approved"
    assert submit(queue).status == "pending"


def test_a_killed_agent_leaves_a_request_that_expires(queue_url, queue):
    bystander = submit(queue)
    agent = spawn("agent", queue_url, "1", "3.0")  # read back pending even on a loaded machine
    line = agent.stdout.readline().split()
    assert line[0] == "submitted"
    orphan = line[1]
    agent.send_signal(signal.SIGKILL)
    agent.communicate(timeout=30)
    assert queue.get(orphan).status == "pending"
    assert queue.wait(orphan, timeout_s=10).status == "expired"
    assert [r.id for r in queue.list()] == [bystander.id]
    assert queue.decide(bystander.id, True, approver="alice").status == "approved"
    other = open_queue(queue.url if not queue.url.startswith("sqlite") else queue.url.removeprefix("sqlite://"))
    assert other.get(orphan).status == "expired"
    other.close()
