"""A separate process for the approval-queue concurrency tests (run as a script, one line per event).

approvals_worker.py agent URL COUNT TIMEOUT_S      submit COUNT requests, then wait for each
approvals_worker.py approver URL NAME TOTAL         decide the pending requests left to bots until TOTAL are final
approvals_worker.py hold URL ID                     take the row's write lock mid-decision and sleep
"""

from __future__ import annotations

import os
import sys
import time

from auditor.approvals import AlreadyDecided, open_queue


def deciders(resource: str) -> frozenset[str]:
    """Who may decide the request on ``table-N``: a fixed split (not the random id) so that every run
    has requests only the approver bots decide, only the CLI decides, and both race for."""
    return (frozenset({"bot"}), frozenset({"cli"}), frozenset({"bot", "cli"}))[int(resource.split("-")[1]) % 3]


def agent(url: str, count: int, timeout_s: float) -> None:
    queue = open_queue(url)
    ids = []
    for n in range(count):
        request = queue.submit(
            identity=f"agent-{os.getpid()}",
            kind="tool",
            target="db.drop_table",
            resource=f"table-{n}",
            params={"table": f"t{n}", "password": "never-stored"},
            rule="irreversible",
            reason="drops a table",
            timeout_s=timeout_s,
        )
        ids.append(request.id)
        print("submitted", request.id, flush=True)
    for request_id in ids:
        seen = queue.wait(request_id)
        print("seen", seen.id, seen.status, seen.decided_by, flush=True)


def approver(url: str, name: str, total: int) -> None:
    queue = open_queue(url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(r.status != "pending" for r in queue.list(None)) < total:
        for request in queue.list("pending"):
            if "bot" not in deciders(request.resource):
                continue
            try:
                decided = queue.decide(request.id, request.id[1] < "n", approver=name)
                print("decided", decided.id, decided.status, name, flush=True)
            except AlreadyDecided:
                print("lost", request.id, flush=True)
        time.sleep(0.01)


def hold(url: str, request_id: str) -> None:
    """What an approver killed inside its decision leaves: an open write transaction on the row."""
    if url.startswith("postgres"):
        import psycopg

        conn = psycopg.connect(url)
        conn.execute("SELECT id FROM auditor_approvals WHERE id = %s FOR UPDATE", (request_id,))
        conn.execute(
            "UPDATE auditor_approvals SET status = 'approved', decided_by = 'ghost' WHERE id = %s", (request_id,)
        )
    else:
        import sqlite3

        conn = sqlite3.connect(url, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE requests SET status = 'approved', decided_by = 'ghost' WHERE id = ?", (request_id,))
    print("holding", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    mode, url, *rest = sys.argv[1:]
    if mode == "agent":
        agent(url, int(rest[0]), float(rest[1]))
    elif mode == "approver":
        approver(url, rest[0], int(rest[1]))
    else:
        hold(url, rest[0])
