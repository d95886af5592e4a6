"""CloudTrail reading: layouts, export forms, attribution, and malformed input as counted skips."""

import gzip
import json
from pathlib import Path

import pytest
from conftest import RULES
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.connectors.aws import cloudtrail as trail
from auditor.connectors.aws.cloudtrail_records import decode
from auditor.errors import InputError
from builders import ACCOUNT, event, role_arn, trail_file

BOT = role_arn("bot", "/agents/")
WHEN = "2026-11-20T10:00:00Z"


def options(identities=None, start="2026-01-01T00:00:00Z", end="2026-12-31T00:00:00Z", cap="2026-12-31T00:00:00Z"):
    return trail.TrailOptions(start, end, cap, identities, RULES)


def files(paths):
    found, problems = trail.find_log_files(paths)
    assert problems == []
    return found


def scan(paths, **kw):
    return trail.scan(files(paths), options(**kw), workers=1)


def used(partial):
    return {(k[1], k[2], k[3]): v[0] for k, v in partial.usage.items()}


def test_assumed_role_calls_count_for_the_role_with_its_path(tmp_path):
    trail_file(tmp_path, [event(BOT, "dynamodb.amazonaws.com", "GetItem", WHEN)] * 3)
    assert used(scan([tmp_path])) == {(BOT, "dynamodb:GetItem", "used"): 3}


def test_denied_and_other_errors_are_told_apart(tmp_path):
    trail_file(
        tmp_path,
        [
            event(BOT, "glue.amazonaws.com", "CreateTable", WHEN, error="AccessDeniedException"),
            event(BOT, "ec2.amazonaws.com", "RunInstances", WHEN, error="Client.UnauthorizedOperation"),
            event(BOT, "dynamodb.amazonaws.com", "DescribeTable", WHEN, error="ResourceNotFoundException"),
        ],
    )
    assert used(scan([tmp_path])) == {
        (BOT, "glue:CreateTable", "denied"): 1,
        (BOT, "ec2:RunInstances", "denied"): 1,
        (BOT, "dynamodb:DescribeTable", "used"): 1,
    }


def test_window_bounds_are_inclusive_and_outside_events_ignored(tmp_path):
    trail_file(
        tmp_path,
        [
            event(BOT, "s3.amazonaws.com", "ListBuckets", t)
            for t in ("2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z", "2026-11-20T00:00:00Z")
        ],
    )
    partial = scan([tmp_path], start="2026-11-01T00:00:00Z", end="2026-11-10T00:00:00Z")
    assert used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 2}
    stats = partial.stats("aws", "t").scopes[ACCOUNT]
    assert (
        stats.events == 3
        and stats.events_in_window == 2
        and stats.days == {"2026-11-01": 1, "2026-11-10": 1, "2026-11-20": 1}
    )


def test_service_events_and_other_identities_are_not_counted(tmp_path):
    service = event(BOT, "kms.amazonaws.com", "RotateKey", WHEN, event_type="AwsServiceEvent")
    other = event(role_arn("someone"), "s3.amazonaws.com", "ListBuckets", WHEN)
    trail_file(tmp_path, [service, other])
    partial = scan([tmp_path], identities=frozenset({BOT}))
    assert partial.usage == {}
    assert any("AwsServiceEvent" in reason and scope == ACCOUNT for scope, reason in partial.skipped)


def test_passed_role_implies_passrole(tmp_path):
    create = event(
        BOT,
        "cloudformation.amazonaws.com",
        "CreateStack",
        WHEN,
        read_only=False,
        request={"stackName": "s", "roleARN": role_arn("cfn-exec")},
    )
    trail_file(tmp_path, [create])
    partial = scan([tmp_path])
    implied = partial.usage[(ACCOUNT, BOT, "iam:PassRole", "used", "implied")]
    assert implied[3] == {role_arn("cfn-exec")}


def test_ndjson_and_lookup_events_exports(tmp_path):
    records = [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN), event(BOT, "sqs.amazonaws.com", "ListQueues", WHEN)]
    (tmp_path / "lake.ndjson").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    lookup = {"Events": [{"EventId": "1", "EventName": "ListQueues", "CloudTrailEvent": json.dumps(records[1])}]}
    (tmp_path / "lookup.json").write_text(json.dumps(lookup))
    lookup_lines = "\n".join(json.dumps({"EventId": "1", "CloudTrailEvent": json.dumps(r)}) for r in records)
    (tmp_path / "lookup.jsonl").write_text(lookup_lines)
    partial = trail.scan(
        [tmp_path / "lake.ndjson", tmp_path / "lookup.json", tmp_path / "lookup.jsonl"], options(), workers=1
    )
    assert used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 2, (BOT, "sqs:ListQueues", "used"): 3}


def test_digest_files_and_snapshot_metadata_are_not_logs(tmp_path):
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)])
    digest = tmp_path / "AWSLogs" / ACCOUNT / "CloudTrail-Digest" / "us-east-1" / "2026" / "11" / "20"
    digest.mkdir(parents=True)
    (digest / f"{ACCOUNT}_CloudTrail-Digest_us-east-1_t_us-east-1_20261120T000000Z.json.gz").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text('{"schema": "auditor.snapshot/v1", "window": {"start": "x"}}')
    (tmp_path / "authorization-details.json").write_text('{"RoleDetailList": []}')
    (tmp_path / "event-selectors.json").write_text('{"EventSelectors": []}')
    assert len(files([tmp_path])) == 1


def test_logs_are_found_by_content_whatever_their_names(tmp_path):
    record = event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)
    (tmp_path / "export-part-0001").write_text(json.dumps([record]))
    (tmp_path / "firehose.gz").write_bytes(
        gzip.compress(json.dumps({"detail-type": "AWS API Call via CloudTrail", "detail": record}).encode())
    )
    (tmp_path / "notes.json").write_text('{"hello": "world"}')
    assert sorted(p.name for p in files([tmp_path])) == ["export-part-0001", "firehose.gz"]
    assert used(scan([tmp_path])) == {(BOT, "s3:ListAllMyBuckets", "used"): 2}


def test_an_unreadable_or_special_path_in_the_folder_is_listed(tmp_path):
    import os

    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)])
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "gone")
    found, problems = trail.find_log_files([tmp_path])
    assert len(found) == 1
    assert sorted(Path(g["scope"]).name for g in problems) == ["dangling.json", "pipe.json"]


def test_a_file_among_cloudtrails_that_is_not_a_log_file_is_listed_not_passed_over(tmp_path):
    """A bomb of zeros (or anything else) named like no delivery file inside a CloudTrail folder; the
    same beside the logs (snapshot metadata, notes) and in CloudTrail-Digest stays unlisted."""
    log = trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)])
    (log.parent / "bomb.json.gz").write_bytes(gzip.compress(bytes(1 << 20)))
    (log.parent / "notes.json").write_text('{"hello": "world"}')
    digest = tmp_path / "AWSLogs" / "123456789012" / "CloudTrail-Digest" / "us-east-1"
    digest.mkdir(parents=True)
    (digest / "digest.json.gz").write_bytes(gzip.compress(b'{"digestStartTime": "x"}'))
    (tmp_path / "metadata.json").write_text("{}")
    found, problems = trail.find_log_files([tmp_path])
    assert found == [log]
    assert {Path(g["scope"]).name: g["reason"] for g in problems} == {
        "bomb.json.gz": "not read: it lies among CloudTrail's log files but does not begin like one",
        "notes.json": "not read: it lies among CloudTrail's log files but does not begin like one",
    }


def test_unknown_event_source_is_counted_as_unmapped(tmp_path):
    trail_file(tmp_path, [event(BOT, "nosuchservice.amazonaws.com", "DoThing", WHEN)] * 2)
    partial = scan([tmp_path])
    assert partial.usage == {}
    ((key, count),) = partial.unmapped.items()
    assert key[2] == "nosuchservice.amazonaws.com:DoThing" and count == 2 and key[3]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "malformed"),
        (gzip.compress(json.dumps({"Records": []}).encode(), mtime=0)[:-10], "gzip"),
        (b'{"Something": []}', "CloudTrail"),
        (b'{"Records": {"a": 1}}', "Records"),
        (b"\x00\x01binary", "JSON"),
    ],
)
def test_unreadable_files_become_named_gaps(tmp_path, content, message):
    good = trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)], name="good")
    bad = good.with_name(good.name.replace("good", "badd"))
    bad.write_bytes(gzip.compress(content) if message != "gzip" else content)
    partial = scan([tmp_path])
    assert used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 1}
    (gap,) = partial.gaps
    assert gap["scope"] == str(bad) and message in gap["reason"] and gap["severity"] == "error"


def test_records_with_wrong_types_are_skipped_and_counted(tmp_path):
    bad = event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)
    bad["eventName"] = 42
    worse = event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)
    worse["userIdentity"] = "root"
    path = trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN), bad, worse])
    partial = scan([tmp_path])
    assert used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 1}
    (gap,) = partial.gaps
    assert gap["scope"] == str(path) and gap["count"] == 2 and "[1]" in gap["reason"]


def test_empty_directory_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match="no CloudTrail log files"):
        trail.find_log_files([tmp_path])
    with pytest.raises(InputError, match="no such file"):
        trail.find_log_files([tmp_path / "missing"])


def test_parallel_scan_equals_serial_scan(tmp_path):
    for i in range(70):
        trail_file(
            tmp_path,
            [event(BOT, "s3.amazonaws.com", "ListBuckets", f"2026-11-{1 + i % 28:02d}T10:00:00Z")],
            day=f"2026/11/{1 + i % 28:02d}",
            name=f"f{i}",
        )
    for i in range(0, 70, 9):  # malformed records and unreadable files scattered over the batches
        trail_file(
            tmp_path,
            [event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-13-45T99:99:99Z")],
            day=f"2026/11/{1 + i % 28:02d}",
            name=f"bad{i}",
        )
        trail_file(tmp_path, [], day=f"2026/11/{1 + i % 28:02d}", name=f"cut{i}").write_bytes(b"\x1f\x8b\x08")
    found = files([tmp_path])
    serial = trail.scan(found, options(), workers=1)
    parallel = trail.scan(found, options(), workers=2)
    assert serial.usage == parallel.usage and serial.days == parallel.days
    # what the report lists comes out the same, in file order, whichever worker read which batch
    assert serial.gaps == parallel.gaps and serial.skipped == parallel.skipped
    assert serial.files_read == parallel.files_read == 78 and len(serial.gaps) == 16


def test_newest_event_comes_from_the_newest_day_folders(tmp_path):
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-11-19T23:59:00Z")], day="2026/11/20")
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-11-10T00:00:00Z")], day="2026/11/10")
    assert trail.newest_event_time(files([tmp_path]), options(), workers=1) == "2026-11-19T23:59:00Z"


def test_the_newest_event_is_never_later_than_the_cap(tmp_path):
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-11-19T23:59:00Z")], day="2026/11/20")
    trail_file(
        tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2031-01-01T00:00:00Z")], day="2026/11/20", name="z"
    )
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2099-01-01T00:00:00Z")], day="2099/01/01")
    newest = trail.newest_event_time(files([tmp_path]), options(cap="2026-11-21T00:00:00Z"), workers=1)
    assert newest == "2026-11-19T23:59:00Z"
    partial = trail.scan(files([tmp_path]), options(cap="2026-11-21T00:00:00Z"), workers=1)
    assert partial.beyond_cap == 2 and used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 1}


def test_a_record_read_twice_counts_once(tmp_path):
    records = [event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN) for _ in range(3)]
    for i, record in enumerate(records):
        record["eventID"] = f"id-{i}"
    trail_file(tmp_path, records)
    (tmp_path / "export.ndjson").write_text("\n".join(json.dumps(r) for r in records[:2]))
    partial = scan([tmp_path])
    assert partial.drop_duplicates(partial.usage) == 2
    assert used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 3}


def test_same_event_id_on_different_calls_is_not_a_duplicate(tmp_path):
    first = event(BOT, "s3.amazonaws.com", "ListBuckets", WHEN)
    second = event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-11-20T10:00:01Z")
    trail_file(tmp_path, [first, second])  # both carry eventID "evt"
    partial = scan([tmp_path])
    assert partial.drop_duplicates(partial.usage) == 0
    assert used(partial) == {(BOT, "s3:ListAllMyBuckets", "used"): 2}


_ACCOUNTS = ("111111111111", "222222222222", "333333333333")
_TIMES = st.builds(
    "2026-11-{:02d}T{:02d}:{:02d}:{:02d}Z".format,
    st.integers(1, 30),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_ACCOUNTS), _TIMES), max_size=40),
    st.tuples(_TIMES, _TIMES).map(sorted),
)
def test_days_spans_and_window_counts_per_account_whatever_the_order(records, window):
    """Accounts interleaved in one file, times in and out of the window, in any order: per account,
    the events per day, the first and last event and the events in the window are what they are."""
    (start, end), cap = window, "2026-12-31T00:00:00Z"
    events = [{**event(BOT, "s3.amazonaws.com", "ListBuckets", when), "recipientAccountId": a} for a, when in records]
    out = trail.Partial()
    trail._init_worker(trail.TrailOptions(start, end, cap, None, RULES))
    trail._fold(decode(json.dumps({"Records": events}).encode(), "f", out), trail._CONTEXT, out, "f", None)
    for account in _ACCOUNTS:
        times = [when for a, when in records if a == account]
        days = {day: sum(1 for t in times if t[:10] == day) for day in {t[:10] for t in times}}
        assert out.days.get(account, {}) == days
        assert (out.first.get(account), out.last.get(account)) == ((min(times), max(times)) if times else (None, None))
        assert out.in_window.get(account, 0) == sum(1 for t in times if start <= t <= end)
