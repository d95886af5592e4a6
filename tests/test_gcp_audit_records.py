"""Cloud Audit Log entries from real files, every export shape built around them, hostile variants, and
recognising a Cloud Logging file by its content."""

import base64
import gzip
import json
import shutil
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import fileio
from auditor.connectors.gcp import audit_records as ar
from auditor.timefmt import event_time

HERE = Path(__file__).parent
SHAPES = HERE / "data" / "real" / "shapes" / "gcp"
PLASO = SHAPES / "plaso-gcp-logging.jsonl"
CLOUDEVENTS = SHAPES / "cloudevents-pubsub-create-topic-entry.json"

#: Per real sample: (insertId, logName's log, canonical timestamp, methodName).
EXPECTED = {
    "plaso-gcp-logging.jsonl": [
        ("iv9wx9d16l2", "cloudaudit.googleapis.com%2Factivity", "2021-10-19T02:57:47Z", "beta.compute.networks.insert"),
        (
            "8loeppebz7wc",
            "cloudaudit.googleapis.com%2Factivity",
            "2021-10-19T02:43:48Z",
            "google.iam.admin.v1.CreateServiceAccount",
        ),
        ("1k28f3cfv7aknt", "testlog", "2021-10-19T02:05:41Z", None),  # jsonPayload: not an audit entry
        ("1io3yo2fursxdi", "testlog", "2021-10-19T02:04:00Z", None),  # textPayload
    ],
    "cloudevents-pubsub-create-topic-entry.json": [
        (
            "9frck8cf9j",
            "cloudaudit.googleapis.com%2Factivity",
            "2020-06-30T16:14:47Z",
            "google.pubsub.v1.Publisher.CreateTopic",
        )
    ],
}


class Sink:
    def __init__(self) -> None:
        self.bad: list[tuple[str, str]] = []

    def bad_record(self, origin: str, where: str, exc: Exception) -> None:
        self.bad.append((where, str(exc)))


def key(entry: ar.Entry) -> tuple:
    method = entry.protoPayload.methodName if entry.protoPayload else None
    return entry.insertId, entry.logName.rsplit("/", 1)[-1], event_time(entry.timestamp), method


def decode(text: bytes) -> tuple[list[tuple], list[tuple[str, str]]]:
    sink = Sink()
    return [key(entry) for entry in ar.decode(text, "test-file", sink)], sink.bad


REAL = [json.loads(line) for line in PLASO.read_text().splitlines()] + [json.loads(CLOUDEVENTS.read_text())]


def expected_key(entry: dict) -> tuple:
    method = entry.get("protoPayload", {}).get("methodName")
    return entry["insertId"], entry["logName"].rsplit("/", 1)[-1], event_time(entry["timestamp"]), method


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_sample_yields_its_entries(name):
    assert decode(fileio.read_input(SHAPES / name)) == (EXPECTED[name], [])


def test_the_decoded_entry_keeps_what_the_fold_reads():
    (entry,) = ar.decode(CLOUDEVENTS.read_bytes(), "o", Sink())
    assert entry.protoPayload.authenticationInfo.principalEmail == "robot@test-project.iam.gserviceaccount.com"
    assert [(a.permission, a.granted) for a in entry.protoPayload.authorizationInfo] == [("pubsub.topics.create", True)]
    assert entry.resource.labels == {
        "project_id": "test-project",
        "topic_id": "projects/test-project/topics/test-auditlogs-source",
    }


def _push(entry: dict) -> dict:
    data = base64.b64encode(json.dumps(entry).encode()).decode()
    return {
        "message": {"data": data, "messageId": "1", "attributes": {"logging.googleapis.com/timestamp": "x"}},
        "subscription": "s",
    }


def _ndjson(items: list) -> bytes:
    return b"\n".join(json.dumps(item).encode() for item in items) + b"\n"


ENVELOPES = {
    "gcloud logging read --format=json": lambda es: json.dumps(es, indent=2).encode(),
    "entries:list page": lambda es: json.dumps({"entries": es, "nextPageToken": "t"}).encode(),
    "sink ndjson": _ndjson,
    "sink ndjson, crlf and blank lines": lambda es: _ndjson(es).replace(b"\n", b"\r\n\r\n"),
    "concatenated": lambda es: b"".join(json.dumps(e).encode() for e in es),
    "pub/sub push": lambda es: _ndjson([_push(e) for e in es]),
    "pub/sub pull": lambda es: json.dumps([{"ackId": "a", **_push(e)} for e in es]).encode(),
    "forwarder data object": lambda es: _ndjson([{"data": e, "publish_time": 1} for e in es]),
    "message string": lambda es: _ndjson([{"message": json.dumps(e)} for e in es]),
    "bom": lambda es: fileio.UTF8_BOM + json.dumps(es).encode(),
}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(REAL), min_size=1, max_size=4), st.sampled_from(sorted(ENVELOPES)))
def test_any_real_entry_survives_every_export_shape(entries, shape):
    assert decode(ENVELOPES[shape](entries)) == ([expected_key(e) for e in entries], [])


def test_gzip_utf16_and_multi_member_files_read_through_read_input(tmp_path):
    (tmp_path / "ps.json").write_bytes(json.dumps(REAL, indent=2).encode("utf-16"))
    (tmp_path / "two.gz").write_bytes(gzip.compress(_ndjson(REAL[:2])) + gzip.compress(_ndjson(REAL[2:])))
    for path in tmp_path.iterdir():
        assert decode(fileio.read_input(path)) == ([expected_key(e) for e in REAL], [])


def test_a_missing_timestamp_falls_back_to_receive_timestamp_and_no_time_is_a_bad_entry():
    undated = {k: v for k, v in REAL[0].items() if k != "timestamp"}
    timeless = {k: v for k, v in undated.items() if k != "receiveTimestamp"}
    entries = ar.decode(_ndjson([undated, timeless, REAL[1]]), "o", sink := Sink())
    assert [event_time(e.timestamp) for e in entries] == ["2021-10-19T02:57:47Z", "2021-10-19T02:43:48Z"]
    assert sink.bad == [("line 2", "a log entry needs a timestamp (or receiveTimestamp)")]


def test_a_page_without_entries_holds_nothing_and_an_empty_file_is_a_problem():
    for text in (b"{}", b'{"nextPageToken": "x"}', b'{"entries": []}', b"[]"):
        assert decode(text) == ([], [])
    for text in (b"", b"\n", b"\xef\xbb\xbf  "):  # what no export writes: a failed or cut-off one
        with pytest.raises(ValueError, match="an empty file"):
            decode(text)


# ----------------------------------------------------------------------------- hostile variants

DEEP = "[" * 10_000 + "]" * 10_000


@pytest.mark.parametrize("shape", ["gcloud logging read --format=json", "entries:list page", "sink ndjson"])
def test_an_entry_nested_10000_deep_is_one_bad_entry_and_the_rest_is_read(shape):
    text = ENVELOPES[shape](REAL[:3]).decode()
    marker = json.dumps(REAL[1]["insertId"])
    text = text.replace(f'"insertId": {marker}', f'"insertId": {marker}, "labels": {DEEP}', 1)
    found, bad = decode(text.encode())
    assert found == [expected_key(REAL[0]), expected_key(REAL[2])]
    assert len(bad) == 1 and "nested too deeply" in bad[0][1]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp", 1634612259),
        ("protoPayload", {"authorizationInfo": [{"granted": "yes"}]}),
        ("resource", {"labels": {"project_id": 7}}),
        ("logName", ["projects/p"]),
    ],
)
def test_a_mis_typed_field_is_one_bad_entry(field, value):
    entries = [dict(e) for e in REAL[:3]]
    entries[1][field] = value
    for shape in ("gcloud logging read --format=json", "sink ndjson"):
        found, bad = decode(ENVELOPES[shape](entries))
        assert found == [expected_key(REAL[0]), expected_key(REAL[2])]
        assert len(bad) == 1 and field in bad[0][1]


def test_impossible_and_future_timestamps_are_returned_for_the_fold_to_judge():
    impossible = {**REAL[0], "timestamp": "2026-13-45T99:99:99.123Z"}
    future = {**REAL[1], "timestamp": "2099-01-01T00:00:00.5Z"}
    entries = ar.decode(json.dumps([impossible, future]).encode(), "o", Sink())
    assert [event_time(e.timestamp) for e in entries] == [None, "2099-01-01T00:00:00Z"]


def test_a_truncated_export_keeps_every_entry_before_the_cut():
    text = json.dumps(REAL, indent=2).encode()
    keys = [expected_key(e) for e in REAL]
    for cut in range(300, len(text), 811):
        sink = Sink()
        try:
            found = [key(e) for e in ar.decode(text[:cut], "o", sink)]
        except ValueError:
            found = []
        assert found == keys[: len(found)] and len(sink.bad) <= 1, cut
    found, bad = decode(_ndjson(REAL)[:-30])
    assert found == keys[:-1] and bad == [(f"line {len(REAL)}", "the text ends inside this value")]


def test_duplicated_entries_are_all_returned_for_the_scan_to_count_once():
    assert decode(_ndjson([REAL[0], REAL[0]])) == ([expected_key(REAL[0])] * 2, [])


def test_files_that_are_not_cloud_logging_raise_a_one_line_value_error():
    cases = {
        json.dumps({"bindings": [], "etag": "x"}).encode(): "not a log entry (keys: bindings, etag)",
        json.dumps({"Records": []}).encode(): "not a log entry (keys: Records)",
        b"not json at all": "not a JSON object",
        json.dumps({"message": {"data": "bm90IGpzb24="}}).encode(): "message.data: base64 data that is not JSON",
        json.dumps({"data": "%%%"}).encode(): "data: a string that is neither JSON nor base64",
    }
    for text, reason in cases.items():
        with pytest.raises(ValueError, match="not a Cloud Logging export") as caught:
            ar.decode(text, "o", Sink())
        assert reason in str(caught.value)


def test_looks_like_audit_log_by_content(tmp_path):
    for path in SHAPES.iterdir():
        assert ar.looks_like_audit_log(path)
    gz = tmp_path / "part-0001"
    gz.write_bytes(gzip.compress(PLASO.read_bytes()))
    assert ar.looks_like_audit_log(gz)
    for path in (HERE / "data" / "real" / "shapes" / "cloudtrail").iterdir():
        assert not ar.looks_like_audit_log(path)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"bindings": [{"role": "roles/viewer", "members": ["user:a@b"]}]}))
    assert not ar.looks_like_audit_log(policy)


def test_an_emptied_export_in_a_snapshot_is_an_input_problem_not_a_quiet_month(tmp_path):
    """Emptied, the fixture's Data Access export made two agents dormant without a word."""
    folder = tmp_path / "gcp"
    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "gcp", folder)
    (folder / "logs" / "data_access.json").write_bytes(b"")
    assert run_cli("audit", "--gcp-dir", folder, "--out", tmp_path / "out", "-q").code in (0, 1)
    problems = json.loads((tmp_path / "out" / "report.json").read_text())["gaps"]
    assert any(p["scope"].endswith("data_access.json") and "an empty file" in p["reason"] for p in problems)
    line = one_line_error(run_cli("audit", "--gcp-dir", folder, "--out", tmp_path / "strict", "--strict", "-q"))
    assert "data_access.json" in line and "an empty file" in line
