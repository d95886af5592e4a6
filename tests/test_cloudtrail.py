"""CloudTrail reading: layouts, export forms, attribution, and malformed input as counted skips."""

import gzip
import json

import pytest

from auditor.connectors.aws import cloudtrail as trail
from auditor.errors import InputError
from auditor.ruleset_files import rule_dirs
from builders import ACCOUNT, event, role_arn, trail_file

BOT = role_arn("bot", "/agents/")
WHEN = "2026-11-20T10:00:00Z"


def options(identities=None, start="2026-01-01T00:00:00Z", end="2026-12-31T00:00:00Z"):
    return trail.TrailOptions(start, end, identities, tuple(rule_dirs()))


def scan(paths, **kw):
    return trail.scan(trail.find_log_files(paths), options(**kw), workers=1)


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
    assert partial.events_read == 3 and partial.events_in_window == 2


def test_service_events_and_other_identities_are_not_counted(tmp_path):
    service = event(BOT, "kms.amazonaws.com", "RotateKey", WHEN, event_type="AwsServiceEvent")
    other = event(role_arn("someone"), "s3.amazonaws.com", "ListBuckets", WHEN)
    trail_file(tmp_path, [service, other])
    partial = scan([tmp_path], identities=frozenset({BOT}))
    assert partial.usage == {}
    assert any("AwsServiceEvent" in reason for reason in partial.skipped)


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
    (tmp_path / "manifest.json").write_text("{}")
    assert len(trail.find_log_files([tmp_path])) == 1


def test_unknown_event_source_is_counted_as_unmapped(tmp_path):
    trail_file(tmp_path, [event(BOT, "nosuchservice.amazonaws.com", "DoThing", WHEN)] * 2)
    partial = scan([tmp_path])
    assert partial.usage == {}
    ((key, count),) = partial.unmapped.items()
    assert key[2] == "nosuchservice.amazonaws.com:DoThing" and count == 2 and key[3]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"{not json", "invalid JSON"),
        (gzip.compress(json.dumps({"Records": []}).encode())[:-10], "gzip"),
        (b'{"Something": []}', "not a CloudTrail log file"),
        (b'{"Records": {"a": 1}}', "Records is not a list"),
        (b"\x00\x01binary", "not JSON"),
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
    assert gap["scope"] == str(path) and gap["count"] == 2 and "Records[1]" in gap["reason"]


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
    files = trail.find_log_files([tmp_path])
    serial = trail.scan(files, options(), workers=1)
    parallel = trail.scan(files, options(), workers=2)
    assert serial.usage == parallel.usage and serial.days == parallel.days


def test_newest_event_comes_from_the_newest_day_folders(tmp_path):
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-11-19T23:59:00Z")], day="2026/11/20")
    trail_file(tmp_path, [event(BOT, "s3.amazonaws.com", "ListBuckets", "2026-11-10T00:00:00Z")], day="2026/11/10")
    files = trail.find_log_files([tmp_path])
    assert trail.newest_event_time(files, options(), workers=1) == "2026-11-19T23:59:00Z"
