"""CloudTrail records from real files of every shape, hostile variants built from them, recognising a
CloudTrail file by its content, and the event-time canonicaliser the fold calls once per event."""

import gzip
import json
import random
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import fileio
from auditor.connectors.aws import cloudtrail_records as ct
from auditor.timefmt import event_time

HERE = Path(__file__).parent
SHAPES = HERE / "data" / "real" / "shapes" / "cloudtrail"
FIXTURES = HERE.parent / "fixtures" / "aws"
ALICE = "arn:aws:iam::123456789012:user/Alice"

#: Per real sample: the records in it, as (eventID, eventSource, eventName, canonical eventTime, identity ARN).
EXPECTED = {
    "aws-cli-lookup-events.json": [
        (
            "654ccbc0-ba0d-486a-9076-dbf7274677a7",
            "signin.amazonaws.com",
            "ConsoleLogin",
            "2016-01-26T21:42:12Z",
            "arn:aws:sts::123456789012:assumed-role/my-role/my-session-name",
        )
    ],
    "plaso-lookup-events.jsonl": [
        (
            "0828c0d2-3589-4390-b954-c78b4a7df44b",
            "ec2.amazonaws.com",
            "DescribeInstances",
            "2022-02-07T22:23:37Z",
            "arn:aws:iam::012345678901:user/fakeusername",
        ),
        (
            "ec783cd8-fad8-41a8-abac-569a78c42e33",
            "ec2.amazonaws.com",
            "SharedSnapshotVolumeCreated",
            "2022-02-07T22:19:07Z",
            None,
        ),
    ],
    "stratus-bedrock-guardrail-delete-single.json": [
        (
            "ee73c230-44bc-4492-8542-cfb189eae287",
            "bedrock.amazonaws.com",
            "DeleteGuardrail",
            "2025-03-26T16:43:57Z",
            "arn:aws:sts::847129010505:assumed-role/AWSReservedSSO_DevAdmin_635426549a280cc6/ariel.ropek",
        )
    ],
    "stratus-sts-federation-token-array.json": [
        (
            "6e882b9d-2af8-4c67-b91f-aeac6a0e5e70",
            "sts.amazonaws.com",
            "GetFederationToken",
            "2024-11-30T08:43:17Z",
            "arn:aws:iam::742491224508:user/stratus-red-team-user-federation-user",
        ),
        (
            "91529247-c4c4-4793-afc8-d70bbcfe9d19",
            "sts.amazonaws.com",
            "GetCallerIdentity",
            "2024-11-30T08:43:18Z",
            "arn:aws:sts::742491224508:federated-user/stratus_red_team",
        ),
    ],
    "awsdocs-s3-layout-startinstances.json": [
        (None, "ec2.amazonaws.com", "StartInstances", "2014-03-06T21:22:54Z", ALICE)
    ],
    "123456789012_CloudTrail_us-east-2_20160714T1920Z_awsdocsExample01.json.gz": [
        (
            "b7d4398e-b2f0-4faa-9c76-e2d316a8d67f",
            "cloudtrail.amazonaws.com",
            "UpdateTrail",
            "2016-07-14T19:15:45Z",
            ALICE,
        )
    ],
    "awsdocs-s3-layout-createrole-invalid.json": [
        (None, "iam.amazonaws.com", "CreateRole", "2014-03-25T20:17:37Z", ALICE)
    ],
    "awsdocs-eventbridge-s3-putobject.json": [
        (
            "cdc4b7ed-e171-4cef-975a-ad829d4123e8",
            "s3.amazonaws.com",
            "PutObject",
            "2018-09-12T00:25:10Z",
            "arn:aws:iam::123456789012:user/username",
        )
    ],
    "awsdocs-lake-get-query-results.json": [
        (
            "EXAMPLE-c3b6-43e4-aa35-b2490EXAMPLE",
            "cloudtrail.amazonaws.com",
            "DescribeQuery",
            "2023-01-22T16:53:53Z",
            None,
        ),
        ("EXAMPLE6-ac95-4b37-b587-76a80EXAMPLE", "s3.amazonaws.com", "ListBuckets", "2023-01-22T20:25:01Z", None),
    ],
    "elastic-console-login.ndjson": [
        (
            "3fcfb182-98f8-4744-bd45-10aEXAMPLE",
            "signin.amazonaws.com",
            "ConsoleLogin",
            "2014-07-16T15:49:27Z",
            "arn:aws:iam::111122223333:user/JohnDoe",
        ),
        (
            "11ea990b-4678-4bcd-8fbe-625EXAMPLE",
            "signin.amazonaws.com",
            "ConsoleLogin",
            "2014-07-08T17:35:27Z",
            "arn:aws:iam::111122223333:user/JaneDoe",
        ),
        (  # the same eventID as the record above, another record: keep both
            "11ea990b-4678-4bcd-8fbe-625EXAMPLE",
            "signin.amazonaws.com",
            "ConsoleLogin",
            "2014-07-08T17:35:27Z",
            "arn:aws:sts::123456789012:assumed-role/RoleToBeAssumed/MySessionName",
        ),
    ],
}
ALL_EXPECTED = {key for keys in EXPECTED.values() for key in keys}


class Sink:
    def __init__(self) -> None:
        self.bad: list[tuple[str, str]] = []

    def bad_record(self, origin: str, where: str, exc: Exception) -> None:
        assert isinstance(exc, Exception) and origin
        self.bad.append((where, str(exc)))


def key(event: ct.Event) -> tuple:
    arn = event.userIdentity.arn if event.userIdentity else None
    return event.eventID, event.eventSource, event.eventName, event_time(event.eventTime), arn


def decode(text: bytes) -> tuple[list[tuple], list[tuple[str, str]]]:
    sink = Sink()
    return [key(event) for event in ct.decode(text, "test-file", sink)], sink.bad


def real_records() -> list[dict]:
    """The raw records inside the real samples (as dicts), to wrap in every shape."""
    records = json.loads((SHAPES / "stratus-sts-federation-token-array.json").read_text())
    records.append(json.loads((SHAPES / "stratus-bedrock-guardrail-delete-single.json").read_text()))
    records += json.loads((SHAPES / "awsdocs-s3-layout-startinstances.json").read_text())["Records"]
    records.append(json.loads((SHAPES / "awsdocs-eventbridge-s3-putobject.json").read_text())["detail"])
    for item in json.loads((SHAPES / "aws-cli-lookup-events.json").read_text())["Events"]:
        records.append(json.loads(item["CloudTrailEvent"]))
    for line in (SHAPES / "plaso-lookup-events.jsonl").read_text().splitlines():
        records.append(json.loads(json.loads(line)["CloudTrailEvent"]))
    records += [json.loads(line) for line in (SHAPES / "elastic-console-login.ndjson").read_text().splitlines()]
    return records


REAL = real_records()


def expected_key(record: dict) -> tuple:
    identity = record.get("userIdentity") or {}
    return (
        record.get("eventID"),
        record["eventSource"],
        record["eventName"],
        event_time(record["eventTime"]),
        identity.get("arn"),
    )


# ----------------------------------------------------------------------------- real samples


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_sample_yields_its_records(name):
    records, bad = decode(fileio.read_input(SHAPES / name))
    assert records == EXPECTED[name]
    assert bad == []


def test_the_expected_records_are_all_the_real_samples_hold():
    assert sorted(p.name for p in SHAPES.iterdir()) == sorted(EXPECTED)
    assert {expected_key(record) for record in REAL} <= ALL_EXPECTED


def test_the_s3_layout_takes_the_fast_path_only(monkeypatch):
    """One typed decode per trail file: the value-by-value reader is never built for the S3 layout."""

    def refuse(*_):
        raise AssertionError("slow path used for an S3-layout file")

    monkeypatch.setattr(ct, "_Reader", refuse)
    trail = sorted(p for p in (FIXTURES / "AWSLogs").rglob("*.json.gz") if "CloudTrail" in p.parts)
    events = sum(len(ct.decode(fileio.read_input(path), str(path), Sink())) for path in trail)
    assert len(trail) == 1021 and events == 50400


# ----------------------------------------------------------------------------- every envelope around real records


def _bridge(record: dict) -> dict:
    service = record["eventSource"].split(".")[0]
    return {
        "version": "0",
        "id": "x",
        "detail-type": "AWS API Call via CloudTrail",
        "source": f"aws.{service}",
        "detail": record,
    }


def _lookup(record: dict) -> dict:
    return {"EventId": record.get("eventID"), "EventName": record["eventName"], "CloudTrailEvent": json.dumps(record)}


def _logstash(record: dict) -> dict:
    moved = {k: v for k, v in record.items() if k != "eventTime"}  # logstash-codec-cloudtrail moves eventTime
    return {**moved, "@timestamp": record["eventTime"], "@version": "1"}


def _splunk(records: list[dict]) -> bytes:
    lines = [{"preview": True, "offset": 0, "result": {"_raw": json.dumps(records[0])}}]  # preview rows repeat
    lines += [
        {"preview": False, "offset": i, "result": {"_raw": json.dumps(r), "_time": "x"}} for i, r in enumerate(records)
    ]
    return b"\n".join(json.dumps(line).encode() for line in [*lines[1:], {"preview": False, "lastrow": True}])


def _firehose(records: list[dict]) -> bytes:
    control = {
        "messageType": "CONTROL_MESSAGE",
        "logEvents": [{"id": "", "timestamp": 0, "message": "CWL CONTROL MESSAGE"}],
    }
    batch = {
        "messageType": "DATA_MESSAGE",
        "owner": "111111111111",
        "logGroup": "aws-cloudtrail-logs",
        "logStream": "111111111111_CloudTrail_us-east-1",
        "subscriptionFilters": ["f"],
        "logEvents": [{"id": str(i), "timestamp": 0, "message": json.dumps(r)} for i, r in enumerate(records)],
    }
    return json.dumps(control).encode() + json.dumps(batch).encode()  # Firehose concatenates, no newline


def _lake(records: list[dict]) -> bytes:
    rows = [
        [
            {"eventID": r.get("eventID")},
            {"eventSource": r["eventSource"]},
            {"eventName": r["eventName"]},
            {"eventTime": event_time(r["eventTime"]).replace("T", " ").replace("Z", ".000")},
            {"userIdentity": json.dumps({k.lower(): v for k, v in (r.get("userIdentity") or {}).items()})},
        ]
        for r in records
    ]
    return json.dumps({"QueryStatus": "FINISHED", "QueryResultRows": rows}).encode()


def _ndjson(items: list) -> bytes:
    return b"\n".join(json.dumps(item).encode() for item in items) + b"\n"


ENVELOPES = {
    "s3 layout": lambda rs: json.dumps({"Records": rs}).encode(),
    "array": lambda rs: json.dumps(rs, indent=2).encode(),
    "ndjson": _ndjson,
    "ndjson crlf, blank lines": lambda rs: _ndjson(rs).replace(b"\n", b"\r\n\r\n"),
    "concatenated": lambda rs: b"".join(json.dumps(r).encode() for r in rs),
    "pretty concatenated": lambda rs: b"\n".join(json.dumps(r, indent=4).encode() for r in rs),
    "eventbridge array": lambda rs: json.dumps([_bridge(r) for r in rs]).encode(),
    "eventbridge ndjson": lambda rs: _ndjson([_bridge(r) for r in rs]),
    "lookup-events page": lambda rs: json.dumps({"Events": [_lookup(r) for r in rs], "NextToken": "t"}).encode(),
    "lookup-events array": lambda rs: json.dumps([_lookup(r) for r in rs]).encode(),
    "lookup-events ndjson": lambda rs: _ndjson([_lookup(r) for r in rs]),
    "splunk export": _splunk,
    "logstash ndjson": lambda rs: _ndjson([_logstash(r) for r in rs]),
    "firehose cloudwatch logs": _firehose,
    "message string": lambda rs: _ndjson([{"@timestamp": "x", "message": json.dumps(r)} for r in rs]),
    "_raw string": lambda rs: _ndjson([{"_raw": json.dumps(r), "sourcetype": "aws:cloudtrail"} for r in rs]),
    "ecs event.original": lambda rs: _ndjson([{"@timestamp": "x", "event": {"original": json.dumps(r)}} for r in rs]),
    "elasticsearch hits": lambda rs: json.dumps(
        {"hits": {"hits": [{"_index": "i", "_source": {"event": {"original": json.dumps(r)}}} for r in rs]}}
    ).encode(),
    "lake query results": _lake,
    "bom": lambda rs: fileio.UTF8_BOM + json.dumps({"Records": rs}).encode(),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(REAL), min_size=1, max_size=4), st.sampled_from(sorted(ENVELOPES)))
def test_any_real_record_survives_every_envelope(records, shape):
    found, bad = decode(ENVELOPES[shape](records))
    assert found == [expected_key(record) for record in records]
    assert bad == []


def test_a_single_record_and_a_single_envelope_read_alone():
    record = REAL[0]
    for text in (
        json.dumps(record),
        json.dumps(_bridge(record)),
        json.dumps(_lookup(record)),
        json.dumps(_logstash(record)),
    ):
        assert decode(text.encode()) == ([expected_key(record)], [])


def test_multi_member_gzip_of_two_trail_files_reads_both(tmp_path):
    first = json.dumps({"Records": REAL[:2]}).encode()
    second = json.dumps({"Records": REAL[2:4]}, indent=2).encode()
    path = tmp_path / "joined"
    path.write_bytes(gzip.compress(first) + gzip.compress(second))
    assert decode(fileio.read_input(path)) == ([expected_key(r) for r in REAL[:4]], [])


def test_a_utf16_export_reads_through_read_input(tmp_path):
    path = tmp_path / "Get-CloudTrail.json"
    path.write_bytes(json.dumps([_lookup(r) for r in REAL[:3]], indent=2).encode("utf-16"))
    assert decode(fileio.read_input(path)) == ([expected_key(r) for r in REAL[:3]], [])


def test_an_ecs_document_without_the_original_is_rebuilt_from_its_fields():
    document = {
        "@timestamp": "2024-10-08T10:15:32.000Z",
        "event": {"action": "AssumeRole", "provider": "sts.amazonaws.com", "id": "b3d7f1a2"},
        "aws": {
            "cloudtrail": {
                "event_type": "AwsApiCall",
                "error_code": "AccessDenied",
                "user_identity": {
                    "type": "AssumedRole",
                    "arn": "arn:aws:sts::1:assumed-role/bot/s",
                    "session_context": {"session_issuer": {"arn": "arn:aws:iam::1:role/agents/bot"}},
                },
                "resources": [{"arn": "arn:aws:iam::1:role/x"}],
                "flattened": {"request_parameters": {"roleArn": "arn:aws:iam::1:role/x"}},
            }
        },
    }
    events = ct.decode(json.dumps(document).encode(), "o", Sink())
    assert [key(e) for e in events] == [
        ("b3d7f1a2", "sts.amazonaws.com", "AssumeRole", "2024-10-08T10:15:32Z", "arn:aws:sts::1:assumed-role/bot/s")
    ]
    event = events[0]
    assert event.userIdentity.sessionContext.sessionIssuer.arn == "arn:aws:iam::1:role/agents/bot"
    assert event.errorCode == "AccessDenied" and event.resources[0].ARN == "arn:aws:iam::1:role/x"
    assert json.loads(bytes(event.requestParameters)) == {"roleArn": "arn:aws:iam::1:role/x"}


def test_lake_rows_map_columns_back_and_rows_without_record_fields_are_counted():
    rows = [
        [{"eventTime": "2023-01-22 16:53:53.000"}, {"eventSource": "s3.amazonaws.com"}, {"eventName": "ListBuckets"}],
        [{"eventName": "PutObject"}, {"eventSource": "s3.amazonaws.com"}, {"apiCount": "96059"}],  # an aggregate
        [
            {"eventtime": "2023-01-22 16:53:54.000"},
            {"eventsource": "iam.amazonaws.com"},
            {"eventname": "GetRole"},
            {"useridentity.arn": "arn:aws:sts::1:assumed-role/bot/s"},
            {"sessionissuer.arn": "arn:aws:iam::1:role/bot"},
            {"requestParameters": '{"roleName": "x"}'},
            {"readonly": "true"},
        ],
    ]
    sink = Sink()
    events = ct.decode(json.dumps({"QueryResultRows": rows}).encode(), "o", sink)
    assert [(e.eventName, event_time(e.eventTime)) for e in events] == [
        ("ListBuckets", "2023-01-22T16:53:53Z"),
        ("GetRole", "2023-01-22T16:53:54Z"),
    ]
    assert events[1].userIdentity.sessionContext.sessionIssuer.arn == "arn:aws:iam::1:role/bot"
    assert json.loads(bytes(events[1].requestParameters)) == {"roleName": "x"} and events[1].readOnly == "true"
    assert sink.bad == [("QueryResultRows[1]", "a CloudTrail record needs eventTime, eventSource and eventName")]


def test_eventbridge_events_of_other_types_are_not_records():
    other = {"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {"state": "x"}}
    text = _ndjson([other, _bridge(REAL[0])])
    assert decode(text) == ([expected_key(REAL[0])], [])
    with pytest.raises(ValueError, match="not a CloudTrail log"):
        ct.decode(json.dumps(other).encode(), "o", Sink())


# ----------------------------------------------------------------------------- hostile variants

DEEP = "[" * 10_000 + "]" * 10_000


def _deep(record: dict) -> str:
    """``record`` with JSON nested 10,000 deep in a field the audit never reads."""
    text = json.dumps(record)
    return text[:-1] + ', "additionalEventData": ' + DEEP + "}"


@pytest.mark.parametrize(
    "build",
    [
        lambda rs: '{"Records": [' + ", ".join(rs) + "]}",
        lambda rs: "[" + ", ".join(rs) + "]",
        lambda rs: "\n".join(rs),
        lambda rs: json.dumps({"Events": [{"CloudTrailEvent": r} for r in rs]}),
        lambda rs: "\n".join(
            json.dumps({"detail-type": "AWS API Call via CloudTrail", "detail": "@"}).replace('"@"', r) for r in rs
        ),
    ],
    ids=["s3 layout", "array", "ndjson", "lookup-events", "eventbridge"],
)
def test_a_record_nested_10000_deep_is_one_bad_record_and_the_rest_is_read(build):
    texts = [json.dumps(r) for r in REAL[:3]]
    texts[1] = _deep(REAL[1])
    found, bad = decode(build(texts).encode())
    assert found == [expected_key(REAL[0]), expected_key(REAL[2])]
    assert len(bad) == 1 and "nested too deeply" in bad[0][1]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eventName", 7),
        ("userIdentity", "AssumedRole"),
        ("resources", {"ARN": "x"}),
        ("readOnly", 1),
        ("eventTime", None),
    ],
)
def test_a_mis_typed_field_is_one_bad_record_naming_the_field(field, value):
    records = [dict(r) for r in REAL[:3]]
    records[1][field] = value
    for text in (json.dumps({"Records": records}).encode(), _ndjson(records)):
        found, bad = decode(text)
        assert found == [expected_key(REAL[0]), expected_key(REAL[2])]
        assert len(bad) == 1 and field in bad[0][1] and bad[0][0] in ("Records[1]", "line 2")


def test_duplicated_records_are_all_returned_for_the_scan_to_count_once():
    records = [REAL[0], REAL[1], REAL[0]]
    found, bad = decode(json.dumps({"Records": records}).encode())
    assert found == [expected_key(r) for r in records] and bad == []


def test_future_and_impossible_times_are_returned_for_the_fold_to_judge():
    future = {**REAL[0], "eventTime": "2099-01-01T00:00:00Z"}
    impossible = {**REAL[1], "eventTime": "2026-13-45T99:99:99Z"}
    for text in (
        json.dumps({"Records": [future, impossible, REAL[2]]}).encode(),
        _ndjson([future, impossible, REAL[2]]),
    ):
        events = ct.decode(text, "o", Sink())
        assert [event_time(e.eventTime) for e in events] == [
            "2099-01-01T00:00:00Z",
            None,
            event_time(REAL[2]["eventTime"]),
        ]


def test_a_truncated_file_keeps_every_record_before_the_cut():
    text = json.dumps({"Records": REAL}, indent=2).encode()
    keys = [expected_key(r) for r in REAL]
    for cut in range(200, len(text), 997):
        sink = Sink()
        try:
            found = [key(e) for e in ct.decode(text[:cut], "o", sink)]
        except ValueError:
            found = []
        assert found == keys[: len(found)], cut
        assert len(sink.bad) <= 1
    found, bad = decode(text[: text.index(b"ariel.ropek")])  # inside record 3
    assert found == keys[:2] and bad == [("Records[2]", "the text ends before this item does")]


def test_a_truncated_ndjson_file_keeps_every_complete_line():
    text = _ndjson(REAL)
    found, bad = decode(text[:-40])
    assert found == [expected_key(r) for r in REAL[:-1]]
    assert bad == [(f"line {len(REAL)}", "the text ends inside this value")]


def test_a_broken_line_is_one_bad_record():
    lines = _ndjson(REAL[:3]).splitlines()
    lines[1] = lines[1][:50]
    found, bad = decode(b"\n".join(lines))
    assert found == [expected_key(REAL[0]), expected_key(REAL[2])] and [w for w, _ in bad] == ["line 2"]


def test_a_huge_single_line_is_read_quickly():
    huge = {**REAL[0], "responseElements": {"blob": "x" * (8 << 20)}}
    text = _ndjson([REAL[1], huge, REAL[2]])
    started = time.perf_counter()
    found, bad = decode(text)
    assert found == [expected_key(r) for r in (REAL[1], huge, REAL[2])] and bad == []
    assert time.perf_counter() - started < 2


def test_files_that_are_not_cloudtrail_raise_a_one_line_value_error():
    digest = gzip.decompress(next((FIXTURES / "AWSLogs").rglob("*CloudTrail-Digest_*.json.gz")).read_bytes())
    cases = {
        digest: "a CloudTrail digest file, not events",
        (FIXTURES / "authorization-details.json").read_bytes(): "not a CloudTrail record (keys: ",
        (FIXTURES / "event-selectors.json").read_bytes(): "not a CloudTrail record (keys: ",
        b"# README\nnot json\n": "not a JSON object",
        b'[{"eventVersion": "1.08"}]': "record[0]: not a CloudTrail record (keys: eventVersion)",
    }
    for text, reason in cases.items():
        with pytest.raises(ValueError, match="not a CloudTrail log") as caught:
            ct.decode(text, "o", Sink())
        assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_the_records_of_the_s3_layout_are_trusted_and_recognising_the_file_comes_first(tmp_path):
    """``{"Records": [...]}`` takes one typed decode and no per-record checks (an S3 event notification
    has that shape too): telling such a file apart is :func:`looks_like_cloudtrail`'s job."""
    notification = {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}
    path = tmp_path / "notification.json"
    path.write_text(json.dumps(notification))
    assert [e.eventSource for e in ct.decode(path.read_bytes(), "o", Sink())] == ["aws:s3"]
    assert not ct.looks_like_cloudtrail(path)


def test_an_empty_file_and_an_empty_export_hold_no_records():
    assert decode(b"") == ([], []) and decode(b"  \n") == ([], [])
    assert decode(b"[]") == ([], []) and decode(b'{"Records": []}') == ([], [])


# ----------------------------------------------------------------------------- recognising CloudTrail by content


def test_looks_like_cloudtrail_on_real_files_snapshot_metadata_and_other_logs(tmp_path):
    for path in SHAPES.iterdir():
        assert ct.looks_like_cloudtrail(path), path.name
    assert not ct.looks_like_cloudtrail(FIXTURES / "authorization-details.json")
    assert not ct.looks_like_cloudtrail(FIXTURES / "event-selectors.json")
    for digest in (FIXTURES / "AWSLogs").rglob("*CloudTrail-Digest_*.json.gz"):
        assert not ct.looks_like_cloudtrail(digest)
    for gcp in (HERE / "data" / "real" / "shapes" / "gcp").iterdir():
        assert not ct.looks_like_cloudtrail(gcp)
    notification = tmp_path / "s3-event.json"
    notification.write_text(
        json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]})
    )
    readme = tmp_path / "README.md"
    readme.write_text('# Example\n\n```\n{"eventSource": "s3.amazonaws.com"}\n```\n')
    assert not ct.looks_like_cloudtrail(notification) and not ct.looks_like_cloudtrail(readme)


def test_looks_like_cloudtrail_reads_every_fixture_trail_file_by_its_gzip_head():
    trail = [p for p in (FIXTURES / "AWSLogs").rglob("*.json.gz") if "CloudTrail" in p.parts]
    started = time.perf_counter()
    assert all(ct.looks_like_cloudtrail(path) for path in trail)
    assert (time.perf_counter() - started) / len(trail) < 1e-3


def test_a_mixed_folder_with_arbitrary_names_reads_every_distinct_real_record(tmp_path):
    """Real samples under arbitrary names (some gzipped, some wrapped again, one in a hidden folder),
    next to snapshot metadata and other logs: sorted by content, then read."""
    rng = random.Random(7)
    root = tmp_path / "export"
    for index, path in enumerate(sorted(SHAPES.iterdir())):
        data = fileio.read_input(path)
        target = root / f"part-{index}" / rng.choice(["data", "x.txt", "0001.log", "export.json"])
        target.parent.mkdir(parents=True)
        target.write_bytes(gzip.compress(data) if index % 3 == 0 else data)
    (root / "wrapped").mkdir()
    for shape in ("splunk export", "firehose cloudwatch logs", "logstash ndjson", "eventbridge ndjson"):
        (root / "wrapped" / shape.replace(" ", "_")).write_bytes(gzip.compress(ENVELOPES[shape](REAL)))
    hidden = root / ".cache" / "copy.json"
    hidden.parent.mkdir()
    hidden.write_text(json.dumps({"Records": [{**REAL[0], "eventID": "hidden"}]}))
    noise = root / "snapshot"
    noise.mkdir()
    (noise / "manifest.json").write_text(json.dumps({"complete": True, "files": ["AWSLogs/x.json.gz"], "cloud": "aws"}))
    for name in ("authorization-details.json", "event-selectors.json"):
        (noise / name).write_bytes((FIXTURES / name).read_bytes())
    digest = next((FIXTURES / "AWSLogs").rglob("*CloudTrail-Digest_*.json.gz"))
    (noise / "digest.json.gz").write_bytes(digest.read_bytes())
    for gcp in (HERE / "data" / "real" / "shapes" / "gcp").iterdir():
        (noise / gcp.name).write_bytes(gcp.read_bytes())
    (noise / "empty.json").write_bytes(b"")

    files, problems = fileio.walk_files([root])
    trail = [path for path in files if ct.looks_like_cloudtrail(path)]
    assert problems == [] and not any(path.parent == noise for path in trail)
    found: set[tuple] = set()
    bad = Sink()
    for path in trail:
        found |= {key(e) for e in ct.decode(fileio.read_input(path), str(path), bad)}
    assert found <= ALL_EXPECTED
    assert len(found) / len(ALL_EXPECTED) >= 0.95, sorted(ALL_EXPECTED - found)
    assert bad.bad == []


# ----------------------------------------------------------------------------- event_time


def test_event_time_canonicalises_the_forms_real_files_use():
    assert event_time("2026-11-20T10:00:00Z") == "2026-11-20T10:00:00Z"
    assert event_time("2019-12-19T00:45:51.228Z") == "2019-12-19T00:45:51Z"
    assert event_time("2025-03-26 16:43:57.000000000") == "2025-03-26T16:43:57Z"
    assert event_time("2021-11-18T09:41:02-08:00") == "2021-11-18T17:41:02Z"
    assert event_time("2022-02-08 09:23:37+11:00") == "2022-02-07T22:23:37Z"
    assert event_time("2023-01-22 16:53:53.000") == "2023-01-22T16:53:53Z"
    assert event_time("20131102T010628Z") == "2013-11-02T01:06:28Z"
    assert event_time("2026-11-20t10:00:00z") == "2026-11-20T10:00:00Z"


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-45T99:99:99Z",
        "2026-02-30T00:00:00Z",
        "2025-02-29T00:00:00.5Z",
        "",
        "2026-11-20",
        "yesterday",
        "0001-01-01T00:00:00+01:00",
        "2026-11-20T24:00:00Z",
        "2016-12-31T23:59:60Z",
        "2026-11-20T10:00:00.١Z",
    ],
)
def test_event_time_is_none_for_impossible_or_unreadable_times(value):
    assert event_time(value) is None


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(timezones=st.none() | offsets),
    st.sampled_from(["T", " "]),
    st.sampled_from(["seconds", "milliseconds", "microseconds", "minutes"]),
)
def test_event_time_agrees_with_fromisoformat_on_valid_times(moment, separator, spec):
    text = moment.isoformat(sep=separator, timespec=spec)
    if text.endswith("+00:00") and spec != "minutes":
        text = text[:-6] + "Z"
    parsed = datetime.fromisoformat(text)
    try:
        expected = (parsed.astimezone(UTC) if parsed.tzinfo else parsed).replace(tzinfo=None, microsecond=0)
    except OverflowError:
        assert event_time(text) is None
        return
    assert event_time(text) == expected.isoformat() + "Z"


def _reference(text: str) -> str | None:
    """The definition event_time's caches and shortcuts must agree with: fromisoformat, then UTC."""
    if len(text) <= 10:
        return None
    for candidate in (text, text.upper()):  # RFC 3339 allows a lower-case "t" and "z"
        try:
            parsed = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        try:
            parsed = parsed.astimezone(UTC) if parsed.tzinfo else parsed
        except OverflowError:
            return None
        return parsed.replace(tzinfo=None, microsecond=0).isoformat() + "Z"
    return None


time_like = st.builds(
    "{:04d}-{:02d}-{:02d}{}{:02d}:{:02d}:{:02d}{}{}".format,
    st.integers(0, 9999),
    st.integers(0, 19),
    st.integers(0, 39),
    st.sampled_from("T t"),
    st.integers(0, 29),
    st.integers(0, 69),
    st.integers(0, 69),
    st.sampled_from(["", ".5", ".123", ".123456789", ".", ".12a"]),
    st.sampled_from(["", "Z", "z", "+01:00", "-23:59", "+24:00", "+0530"]),
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=30) | time_like)
def test_event_time_never_raises_and_agrees_with_fromisoformat(text):
    assert event_time(text) == _reference(text)
    assert event_time(text) == _reference(text)  # the second answer comes from the cache
