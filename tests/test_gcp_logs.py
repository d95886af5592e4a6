"""Cloud Audit Log parsing: formats, outcomes, malformed input, windows, impersonation."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from conftest import RULES
from gcp_builders import entry, sa

from auditor.connectors.gcp import audit_logs as gcp_logs
from auditor.connectors.gcp.bigquery import fold_rows
from auditor.connectors.gcp.methods import derived_permissions, resolve
from auditor.connectors.gcp.rules import GcpRules
from auditor.timefmt import normalize_iso

OPTIONS = gcp_logs.ScanOptions("2026-11-01T00:00:00Z", "2026-11-30T23:59:59Z", None)
BOT = sa("bot")


def fold(tmp: Path, name: str, content: bytes, options: gcp_logs.ScanOptions = OPTIONS) -> gcp_logs.Partial:
    path = tmp / name
    path.write_bytes(content)
    return gcp_logs.read_file(path, options)


def test_gcloud_array_ndjson_rest_page_and_gzip_give_the_same_counters(tmp_path):
    entries = [
        entry(BOT, "2026-11-05T10:00:00.123456Z", [("compute.instances.stop", True)]),
        entry(BOT, "2026-11-06T10:00:00Z", [("compute.instances.stop", True), ("compute.instances.get", False)]),
    ]
    array = fold(tmp_path, "a.json", json.dumps(entries, indent=2).encode())
    ndjson = fold(tmp_path, "b.ndjson", "\n".join(json.dumps(e) for e in entries).encode())
    page = fold(tmp_path, "c.json", json.dumps({"entries": entries, "nextPageToken": "x"}).encode())
    gz = fold(tmp_path, "d.json.gz", gzip.compress("\n".join(json.dumps(e) for e in entries).encode()))
    for partial in (array, ndjson, page, gz):
        assert partial.usage == array.usage
        assert partial.files_read == 1 and partial.in_window == {"p1": 2}
    assert array.usage[("p1", BOT, "compute.instances.stop", "used", "audit-log")][:3] == [
        2,
        "2026-11-05T10:00:00Z",
        "2026-11-06T10:00:00Z",
    ]
    assert array.usage[("p1", BOT, "compute.instances.get", "denied", "audit-log")][0] == 1


def test_absent_granted_is_denied_and_missing_authorization_info_is_listed(tmp_path):
    entries = [
        entry(BOT, "2026-11-05T10:00:00Z", [("bigquery.datasets.create", None)]),
        entry(BOT, "2026-11-05T10:01:00Z", [], method="v1.compute.instances.stop"),
        entry(
            BOT,
            "2026-11-05T10:02:00Z",
            [("io.k8s.core.v1.pods.list", True)],
            service="k8s.io",
            method="io.k8s.core.v1.pods.list",
        ),
        entry(None, "2026-11-05T10:03:00Z", [], log="system_event"),
    ]
    partial = fold(tmp_path, "a.json", json.dumps(entries).encode())
    assert set(partial.usage) == {("p1", BOT, "bigquery.datasets.create", "denied", "audit-log")}
    assert partial.unmapped == {
        ("p1", BOT, "k8s.io:io.k8s.core.v1.pods.list", "GKE pseudo-permission, not an IAM permission"): 1,
    }
    assert partial.unchecked == {
        ("p1", BOT, "compute.googleapis.com", "v1.compute.instances.stop"): [
            1,
            "2026-11-05T10:01:00Z",
            "2026-11-05T10:01:00Z",
        ]
    }
    assert partial.skipped == {("p1", "no principal (system event)"): 1}


def test_a_call_without_authorization_info_is_mapped_when_unambiguous_else_unobservable(tmp_path):
    other = sa("other")
    entries = [
        entry(BOT, "2026-11-05T10:01:00Z", [], method="beta.compute.instances.stop"),  # spelled by its name
        entry(BOT, "2026-11-05T10:02:00Z", [], service="iam.googleapis.com", method="Mystery.Thing"),  # neither
        entry(
            BOT, "2026-11-05T10:03:00Z", [], service="run.googleapis.com", method="google.cloud.run.v1.Services.Replace"
        ),
        entry(
            other,
            "2026-11-05T10:04:00Z",
            [("run.services.update", True)],
            service="run.googleapis.com",
            method="google.cloud.run.v1.Services.Replace",
        ),  # learned: this method checks run.services.update
    ]
    partial = fold(tmp_path, "a.json", json.dumps(entries).encode())
    catalog = [
        "compute.instances.stop",
        "compute.instances.start",
        "iam.roles.get",
        "iam.roles.delete",
        "run.services.update",
    ]
    resolved = resolve(gcp_logs.unchecked_calls(partial), partial.method_checks, catalog, GcpRules.of(RULES))
    assert {(r["identity"], r["action"], r["evidence"]) for r in resolved.usage} == {
        (BOT, "compute.instances.stop", "audit-log-method"),
        (BOT, "run.services.update", "audit-log-method"),
    }
    (blind,) = resolved.observability
    assert blind["identity"] == BOT and set(blind["actions"]) == {"iam.roles.get", "iam.roles.delete"}
    assert len(resolved.unmapped) == 3  # all three are still listed


def test_the_end_of_a_checked_operation_is_not_a_second_call(tmp_path):
    first = entry(BOT, "2026-11-05T10:00:00Z", [("compute.instances.stop", True)])
    first["operation"] = {"id": "op-1", "first": True}
    last = entry(BOT, "2026-11-05T10:00:40Z", [])
    last["operation"] = {"id": "op-1", "last": True}
    orphan = entry(BOT, "2026-11-05T11:00:40Z", [])  # its first entry is outside the files read
    orphan["operation"] = {"id": "op-2", "last": True}
    partial = fold(tmp_path, "a.json", json.dumps([first, last, orphan]).encode())
    assert gcp_logs.unchecked_calls(partial) == {
        ("p1", BOT, "compute.googleapis.com", "v1.compute.instances.stop"): [
            1,
            "2026-11-05T11:00:40Z",
            "2026-11-05T11:00:40Z",
        ]
    }


def test_method_names_map_only_to_exactly_one_catalog_permission():
    catalog = [
        "compute.instances.stop",
        "iam.serviceAccountKeys.create",
        "storage.buckets.create",
        "storage.bucket.create",
    ]
    assert derived_permissions("compute.googleapis.com", "v1.compute.instances.stop", catalog) == (
        "compute.instances.stop",
    )
    assert derived_permissions("iam.googleapis.com", "google.iam.admin.v1.CreateServiceAccountKey", catalog) == (
        "iam.serviceAccountKeys.create",
    )
    assert derived_permissions("storage.googleapis.com", "CreateBucket", catalog) == ()  # two spellings: ambiguous
    assert derived_permissions("compute.googleapis.com", "v1.compute.instances.insert", catalog) == ()


def test_window_identities_and_days(tmp_path):
    entries = [
        entry(BOT, "2026-10-31T23:59:59Z", [("a.b.c", True)]),  # before the window
        entry(BOT, "2026-11-02T00:00:00Z", [("a.b.c", True)]),
        entry(sa("other"), "2026-11-03T00:00:00Z", [("a.b.c", True)]),
    ]
    options = gcp_logs.ScanOptions(OPTIONS.start, OPTIONS.end, frozenset({BOT}))
    partial = fold(tmp_path, "a.json", json.dumps(entries).encode(), options)
    assert partial.usage[("p1", BOT, "a.b.c", "used", "audit-log")][0] == 1
    assert all(key[1] == BOT for key in partial.usage)
    assert partial.days == {"p1": {"2026-10-31": 1, "2026-11-02": 1, "2026-11-03": 1}}
    assert partial.in_window == {"p1": 2}
    assert partial.newest == "2026-11-03T00:00:00Z"


def test_entries_after_the_cap_are_counted_apart(tmp_path):
    entries = [
        entry(BOT, "2026-11-02T00:00:00Z", [("a.b.c", True)]),
        entry(BOT, "9999-01-01T00:00:00Z", [("a.b.c", True)]),
    ]
    options = gcp_logs.ScanOptions(OPTIONS.start, OPTIONS.end, None, cap="2026-11-30T00:00:00Z")
    partial = fold(tmp_path, "a.json", json.dumps(entries).encode(), options)
    assert partial.beyond_cap == 1 and partial.newest == "2026-11-02T00:00:00Z"
    assert partial.usage[("p1", BOT, "a.b.c", "used", "audit-log")][0] == 1


def test_impersonation_chain_is_recorded_and_the_impersonated_account_is_the_user(tmp_path):
    ci = sa("ci", "other-project")
    entries = [entry(BOT, "2026-11-05T10:00:00Z", [("run.services.update", True)], delegation=[ci])] * 3
    partial = fold(tmp_path, "a.json", json.dumps(entries).encode())
    assert ("p1", BOT, "run.services.update", "used", "audit-log") in partial.usage
    assert partial.delegations == {("p1", BOT, ci): 3}


def test_malformed_records_are_counted_with_file_and_line(tmp_path):
    good = json.dumps(entry(BOT, "2026-11-05T10:00:00Z", [("a.b.c", True)]))
    bad_type = json.dumps({"timestamp": 5, "logName": "x"})
    content = "\n".join([good, "{not json", bad_type, good]).encode()
    total = gcp_logs.Partial()
    total.merge(fold(tmp_path, "s.json", content))
    assert total.usage[("p1", BOT, "a.b.c", "used", "audit-log")][0] == 2
    assert total.skipped == {("", "malformed log entry"): 2}
    (gap,) = total.gaps
    assert gap["scope"].endswith("s.json") and gap["count"] == 2 and "line 2" in gap["reason"]


def test_unreadable_file_is_a_gap_not_an_exception(tmp_path):
    for name, content in (("x.json", b"garbage"), ("y.json.gz", b"not gzip"), ("z.json", b"[1, 2")):
        total = gcp_logs.Partial()
        total.merge(fold(tmp_path, name, content))
        (gap,) = total.gaps
        assert gap["scope"].endswith(name) and gap["severity"] == "error" and not total.usage


def test_timestamps_in_other_forms_are_normalized():
    assert normalize_iso("2026-11-05T10:00:00.123456789Z") == "2026-11-05T10:00:00Z"
    assert normalize_iso("2026-11-05T12:00:00+02:00") == "2026-11-05T10:00:00Z"
    assert normalize_iso("yesterday") is None


def test_newest_entry_reads_only_the_newest_sink_day(tmp_path):
    old = tmp_path / "cloudaudit.googleapis.com" / "activity" / "2026" / "11" / "01" / "00:00:00_00:59:59_S0.json"
    new = tmp_path / "cloudaudit.googleapis.com" / "activity" / "2026" / "11" / "02" / "00:00:00_00:59:59_S0.json"
    for path, when in ((old, "2026-11-01T00:10:00Z"), (new, "2026-11-02T00:20:00.5Z")):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(entry(BOT, when, [("a.b.c", True)])) + "\n")
    old.write_text("corrupt: would fail if read")
    files, problems = gcp_logs.find_log_files([tmp_path])
    assert problems == []
    assert gcp_logs.newest_entry_time(files, "2026-12-01T00:00:00Z", workers=1) == "2026-11-02T00:20:00Z"


def test_parallel_scan_equals_serial_scan(tmp_path):
    for index in range(40):
        day = f"2026-11-{1 + index % 28:02d}T10:00:00Z"
        (tmp_path / f"f{index:02d}.ndjson").write_text(
            json.dumps(entry(BOT, day, [(f"s.r.v{index % 3}", index % 5 != 0)])) + "\n"
        )
    files, _ = gcp_logs.find_log_files([tmp_path])
    serial = gcp_logs.scan(files, OPTIONS, workers=1)
    parallel = gcp_logs.scan(files, OPTIONS, workers=2)
    assert serial.usage == parallel.usage and serial.days == parallel.days
    assert sum(serial.days["p1"].values()) == sum(parallel.days["p1"].values()) == 40


def test_bigquery_rows_fold_like_entries():
    out = gcp_logs.Partial()
    rows = [
        {
            "project": "p1",
            "principal": BOT,
            "service": "compute.googleapis.com",
            "method": None,
            "permission": "compute.instances.stop",
            "granted": True,
            "calls": 7,
            "first_seen": "2026-11-01T00:00:00Z",
            "last_seen": "2026-11-03T00:00:00Z",
            "days": ["2026-11-01", "2026-11-03"],
        },
        {
            "project": "p1",
            "principal": BOT,
            "service": "compute.googleapis.com",
            "method": "v1.compute.x",
            "permission": None,
            "granted": False,
            "calls": 2,
            "first_seen": "2026-11-02T00:00:00Z",
            "last_seen": "2026-11-02T00:00:00Z",
            "days": ["2026-11-02"],
        },
        {
            "project": "p1",
            "principal": None,
            "service": "compute.googleapis.com",
            "method": "m",
            "permission": None,
            "granted": False,
            "calls": 4,
            "first_seen": "2026-11-04T00:00:00Z",
            "last_seen": "2026-11-04T00:00:00Z",
            "days": ["2026-11-04"],
        },
    ]
    fold_rows(rows, frozenset({BOT}), out)
    assert out.usage == {
        ("p1", BOT, "compute.instances.stop", "used", "audit-log"): [
            7,
            "2026-11-01T00:00:00Z",
            "2026-11-03T00:00:00Z",
            set(),
        ]
    }
    assert out.unchecked == {
        ("p1", BOT, "compute.googleapis.com", "v1.compute.x"): [2, "2026-11-02T00:00:00Z", "2026-11-02T00:00:00Z"]
    }
    assert out.seen_permissions == {"compute.instances.stop"} and out.unmapped == {}
    assert set(out.days["p1"]) == {"2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"}
    assert sum(out.days["p1"].values()) == 13 and out.newest == "2026-11-04T00:00:00Z"
