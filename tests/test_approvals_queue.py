"""The approval queue's contract on both backends (a SQLite file; a real PostgreSQL server):
submit, get, list, decide exactly once, expiry by time, wait, redaction on the way in, errors."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from approvals_support import submit

from auditor.approvals import AlreadyDecided, QueueError, open_queue
from auditor.approvals.records import ID_CHARS


def test_a_submitted_request_reads_back_pending_with_every_field(queue):
    before = datetime.now(UTC) - timedelta(seconds=5)
    request = submit(queue, timeout_s=600, params={"Bucket": "prod-logs", "Force": True})
    assert request.status == "pending" and request.decided_by is None and request.decided_at is None
    assert len(request.id) == ID_CHARS and request.id.isalnum() and request.id == request.id.lower()
    assert before <= request.created <= datetime.now(UTC) + timedelta(seconds=5)
    assert timedelta(seconds=599) <= request.expires - request.created <= timedelta(seconds=601)
    assert request.requester.endswith(f":{os.getpid()}")
    again = queue.get(request.id)
    assert again == request
    assert again.params == {"Bucket": "prod-logs", "Force": True}
    assert [r.id for r in queue.list()] == [request.id]


def test_decide_records_the_decision_once_and_refuses_a_second(queue):
    first, second = submit(queue), submit(queue, target="iam:DeleteRole")
    approved = queue.decide(first.id, True, approver="alice@desk", note="planned cleanup")
    assert (approved.status, approved.decided_by, approved.note) == ("approved", "alice@desk", "planned cleanup")
    assert approved.decided_at is not None
    denied = queue.decide(second.id, False, approver="bob@desk")
    assert denied.status == "denied" and denied.note is None
    with pytest.raises(AlreadyDecided, match=r"already approved by alice@desk at \d{4}-"):
        queue.decide(first.id, False, approver="mallory")
    assert queue.get(first.id) == approved  # nothing changed
    assert queue.list() == []
    assert {r.id: r.status for r in queue.list(None)} == {first.id: "approved", second.id: "denied"}
    assert [r.id for r in queue.list("denied")] == [second.id]


def test_ids_are_unique(queue):
    ids = {submit(queue).id for _ in range(200)}
    assert len(ids) == 200


def test_a_request_past_its_expiry_reads_expired_and_cannot_be_decided(queue):
    late = submit(queue, timeout_s=0)
    live = submit(queue)
    assert queue.get(late.id).status == "expired"
    assert queue.get(late.id).decided_by is None
    with pytest.raises(AlreadyDecided, match="expired unanswered"):
        queue.decide(late.id, True, approver="alice")
    assert [r.id for r in queue.list()] == [live.id]
    assert [r.id for r in queue.list("expired")] == [late.id]


def test_expiry_is_evaluated_by_time(queue):
    request = submit(queue, timeout_s=1.0)  # long enough to be read back pending on a loaded machine
    assert queue.get(request.id).status == "pending"
    time.sleep(1.1)
    assert [r.id for r in queue.list("expired")] == [request.id]
    with pytest.raises(AlreadyDecided):
        queue.decide(request.id, False, approver="alice")


def test_wait_returns_the_decision_made_by_another_connection(queue_url):
    asker, approver = open_queue(queue_url), open_queue(queue_url)
    request = submit(asker)
    threading.Timer(0.2, lambda: approver.decide(request.id, False, approver="bob", note="no")).start()
    seen = asker.wait(request.id, timeout_s=10)
    assert (seen.status, seen.decided_by, seen.note) == ("denied", "bob", "no")
    assert seen == approver.get(request.id)
    asker.close()
    approver.close()


def test_wait_ends_at_expiry_and_at_its_own_timeout(queue):
    expiring = submit(queue, timeout_s=0.3)
    assert queue.wait(expiring.id).status == "expired"
    patient = submit(queue, timeout_s=600)
    started = time.monotonic()
    assert queue.wait(patient.id, timeout_s=0.2).status == "pending"
    assert time.monotonic() - started >= 0.2
    assert queue.wait(patient.id, timeout_s=0).status == "pending"


def test_params_reason_and_note_are_redacted_on_the_way_in(queue):
    request = submit(
        queue,
        params={
            "password": "hunter2",
            "headers": {"Authorization": "Bearer abc.def.ghijklmnop"},
            "dsn": "postgresql://app:s3cr3t-pw@db.internal:5432/prod",
        },
        reason="curl -H 'Authorization: Bearer ya29.a0AfH6SMBx0secret'",
    )
    stored = queue.get(request.id)
    text = repr(stored)
    for secret in ("hunter2", "abc.def.ghijklmnop", "s3cr3t-pw", "ya29.a0AfH6SMBx0secret"):
        assert secret not in text
    assert stored.params["dsn"] == "postgresql://app:[redacted]@db.internal:5432/prod"
    decided = queue.decide(request.id, True, approver="a", note="ok, password=letmein")
    assert "letmein" not in decided.note


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kind": "shell"}, "kind"),
        ({"identity": ""}, "identity"),
        ({"target": None}, "target"),
        ({"timeout_s": -1}, "timeout"),
        ({"timeout_s": float("nan")}, "timeout"),
        ({"params": ["not", "a", "mapping"]}, "mapping"),
    ],
)
def test_bad_submissions_are_refused_and_nothing_is_stored(queue, overrides, message):
    with pytest.raises(QueueError, match=message):
        submit(queue, **overrides)
    assert queue.list(None) == []


def test_unknown_ids_and_statuses_are_queue_errors(queue):
    with pytest.raises(QueueError, match="no approval request 'nope'"):
        queue.get("nope")
    with pytest.raises(QueueError, match="no approval request"):
        queue.decide("nope", True, approver="a")
    with pytest.raises(QueueError, match="unknown approval status"):
        queue.list("done")  # type: ignore[arg-type]
    with pytest.raises(QueueError, match="approver"):
        queue.decide(submit(queue).id, True, approver=" ")


def test_reopening_keeps_requests(queue_url):
    first = open_queue(queue_url)
    request = submit(first)
    first.close()
    second = open_queue(queue_url)
    assert second.get(request.id) == request
    second.close()


# SQLite only: the file itself.


def test_sqlite_file_is_private_in_wal_mode_and_versioned(tmp_path):
    path = tmp_path / "q.db"
    queue = open_queue(f"sqlite:///{path}")
    submit(queue)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
    queue.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database at all, just text\n" * 10, "not a usable approval queue"),
        (b"SQLite format 3\x00" + b"\xff" * 200, "not a usable approval queue"),
    ],
)
def test_sqlite_refuses_a_file_that_is_not_a_queue(tmp_path, content, message):
    path = tmp_path / "q.db"
    path.write_bytes(content)
    with pytest.raises(QueueError, match=message):
        open_queue(path)
    assert path.read_bytes() == content


def test_sqlite_refuses_another_database_and_a_newer_schema(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(QueueError, match="not an approval queue"):
        open_queue(other)
    newer = tmp_path / "newer.db"
    open_queue(newer).close()
    with sqlite3.connect(newer) as raw:
        raw.execute("UPDATE meta SET value = '9' WHERE key = 'schema'")
    with pytest.raises(QueueError, match="schema version 9"):
        open_queue(newer)


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("ftp://host/q", "scheme 'ftp' is unknown"),
        ("sqlite://relative/q.db", "sqlite:///ABSOLUTE/PATH"),
        ("/no/such/folder/q.db", "cannot create approval queue"),
    ],
)
def test_bad_locations_are_one_line_queue_errors(location, message):
    with pytest.raises(QueueError, match=message) as caught:
        open_queue(location)
    assert "\n" not in str(caught.value)


def test_default_location_follows_the_environment(tmp_path, monkeypatch):
    from auditor.approvals import default_location

    monkeypatch.setenv("AUDITOR_APPROVALS", str(tmp_path / "env.db"))
    assert default_location() == str(tmp_path / "env.db")
    monkeypatch.delenv("AUDITOR_APPROVALS")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    queue = open_queue()
    assert queue.url == f"sqlite:///{tmp_path / 'state' / 'auditor' / 'approvals.db'}"
    assert stat.S_IMODE((tmp_path / "state" / "auditor").stat().st_mode) == 0o700
    queue.close()


# PostgreSQL only: the server and its URL.


def test_postgres_unreachable_server_is_one_line_without_the_password():
    with pytest.raises(QueueError, match="cannot reach the approval queue") as caught:
        open_queue(f"postgresql://app:TopSecret99@127.0.0.1:{_closed_port()}/q?connect_timeout=2")
    assert "TopSecret99" not in str(caught.value) and "\n" not in str(caught.value)


def test_postgres_schema_is_created_once_by_many_openers(postgres_server):
    url = postgres_server.database()
    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_queue(url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    queue = open_queue(url)
    assert queue.url == url and submit(queue).status == "pending"
    queue.close()


def _closed_port() -> int:
    from approvals_support import free_port

    return free_port()
