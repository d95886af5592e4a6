"""Azure readers on real public samples and on hostile variants of them."""

import gzip
import json
from pathlib import Path

import pytest

from auditor.connectors.azure import activity_logs
from auditor.connectors.azure.activity_records import NotActivityLog, decode, normalize
from auditor.connectors.azure.rbac import load_assignments
from auditor.connectors.azure.rules import AzureRules
from auditor.ruleset import load

REAL = Path(__file__).parent / "data" / "real" / "azure"
PLASO = REAL / "plaso-azure-activity-log-sdk.jsonl"
RULES = AzureRules.of(load())
PRINCIPAL = "12345678-9abc-defg-hijk-lmnopqrstuvw"
OPERATIONS = {
    "microsoft.compute/disks/delete": "Microsoft.Compute/disks/delete",
    "microsoft.compute/virtualmachines/delete": "Microsoft.Compute/virtualMachines/delete",
}


def _options(cap: str = "2030-01-01T00:00:00Z", max_bytes: int = 1 << 30) -> activity_logs.ScanOptions:
    return activity_logs.ScanOptions(
        "2022-01-01T00:00:00Z", "2022-12-31T23:59:59Z", None, {}, OPERATIONS, RULES, cap, max_bytes
    )


def _records() -> list[dict]:
    return [json.loads(line) for line in PLASO.read_text().splitlines() if line.strip()]


def test_the_sdk_dump_reads_as_records() -> None:
    bad = []
    records = [normalize(r) for r in decode(PLASO.read_bytes(), lambda w, e: bad.append(w))]
    assert not bad and [r.operation for r in records] == list(OPERATIONS.values())
    assert {r.principal for r in records} == {PRINCIPAL} and {r.status for r in records} == {"started"}
    assert records[0].subscription == PRINCIPAL  # the sample's anonymised subscription id


def test_the_scan_counts_the_real_sample(tmp_path) -> None:
    out = activity_logs.read_file(PLASO, _options())
    assert {k[2]: v[0] for k, v in out.usage.items()} == dict.fromkeys(OPERATIONS.values(), 1)
    assert not out.gaps


def test_the_real_role_assignment_samples_read() -> None:
    cli, _ = load_assignments([REAL / "azure-docs-role-assignment-cli.json"])
    powershell, _ = load_assignments([REAL / "azure-docs-role-assignment-powershell.json"])
    for found in (cli, powershell):
        (assignment,) = found
        assert assignment.principal_id == "22222222-2222-2222-2222-222222222222"
        assert assignment.role_guid == "b24988ac-6180-42a0-ab88-20f7382dd24c"
        assert assignment.scope == "/subscriptions/11111111-1111-1111-1111-111111111111"


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_truncated_array_keeps_its_complete_records(tmp_path) -> None:
    text = json.dumps(_records())
    out = activity_logs.read_file(_write(tmp_path, "cut.json", text[: len(text) - 40]), _options())
    assert sum(v[0] for v in out.usage.values()) == 1
    assert out.skipped[("", "malformed Activity Log record")] == 1


def test_mistyped_and_nested_records_are_counted_not_raised(tmp_path) -> None:
    good, other = _records()
    lines = [
        json.dumps(good),
        json.dumps({**other, "event_timestamp": 17}),  # mis-typed time
        json.dumps({**other, "event_timestamp": "2022-02-31T00:00:00Z"}),  # impossible date
        "[" * 5000 + "]" * 5000,  # nested too deeply
        '{"operationName": ',  # broken line
    ]
    out = activity_logs.scan([_write(tmp_path, "mixed.ndjson", "\n".join(lines))], _options(), workers=1)
    assert sum(v[0] for v in out.usage.values()) == 1
    assert out.skipped[("", "malformed Activity Log record")] == 4
    assert len(out.gaps) == 1 and "4 malformed" in out.gaps[0]["reason"]


def test_duplicated_records_count_once(tmp_path) -> None:
    records = _records()
    first = _write(tmp_path, "a.json", json.dumps(records))
    second = _write(tmp_path, "b.json.gz", gzip.compress(json.dumps({"value": records}).encode()))
    total = activity_logs.scan([first, second], _options(), workers=1)
    dropped = total.drop_duplicates(total.usage)
    assert dropped == 2 and sum(v[0] for v in total.usage.values()) == 2


def test_future_records_are_input_problems_not_the_window(tmp_path) -> None:
    out = activity_logs.read_file(
        _write(tmp_path, "x.json", json.dumps(_records())), _options(cap="2022-02-09T03:04:30Z")
    )
    assert out.beyond_cap == 1 and out.newest == "2022-02-09T03:04:26Z"


def test_a_huge_file_is_skipped_and_listed(tmp_path) -> None:
    out = activity_logs.read_file(_write(tmp_path, "big.json", json.dumps(_records() * 50)), _options(max_bytes=1000))
    assert out.files_read == 0 and "file skipped" in out.gaps[0]["reason"]


def test_a_file_of_something_else_is_one_unreadable_file(tmp_path) -> None:
    with pytest.raises(NotActivityLog):
        decode(b'[{"roleName": "Owner", "permissions": []}]', lambda w, e: None)
    out = activity_logs.read_file(_write(tmp_path, "roles.json", '[{"roleName": "Owner"}]'), _options())
    assert out.skipped == {("", "unreadable file"): 1}


def test_diagnostic_and_log_analytics_shapes() -> None:
    diagnostic = {
        "time": "2026-11-01T08:00:00.1234567Z",
        "operationName": "MICROSOFT.AUTHORIZATION/ROLEASSIGNMENTS/WRITE",
        "category": "Administrative",
        "resultType": "Failure",
        "resultSignature": "Failed.Forbidden",
        "identity": {
            "authorization": {
                "scope": "/subscriptions/S1/x",
                "evidence": {"principalId": "0910c088489e44a29fbdaf486bb6fe6f"},
            }
        },
    }
    record = normalize(diagnostic)
    assert record.principal == "0910c088-489e-44a2-9fbd-af486bb6fe6f" and record.status == "failed"
    assert RULES.is_authorization_failure(*record.signals) and record.subscription == "s1"
    table = {
        "tables": [
            {
                "columns": [
                    {"name": "TimeGenerated"},
                    {"name": "OperationNameValue"},
                    {"name": "ActivityStatusValue"},
                    {"name": "Claims"},
                ],
                "rows": [
                    ["2026-11-01T08:00:00Z", "MICROSOFT.WEB/SITES/RESTART/ACTION", "Success", json.dumps({"oid": "AB"})]
                ],
            }
        ]
    }
    (row,) = decode(json.dumps(table).encode(), lambda w, e: None)
    assert normalize(row).principal == "ab" and normalize(row).status == "succeeded"
