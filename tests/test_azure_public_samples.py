"""The offline Activity Log reader on records Microsoft published (tests/data/azure, see SOURCES.md),
and on hostile variants of them: truncated, mis-typed, duplicated, huge."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RULES

from auditor.connectors.azure import activity_logs
from auditor.connectors.azure.activity_logs import ScanOptions
from auditor.connectors.azure.activity_records import normalize
from auditor.connectors.azure.rules import AzureRules

DATA = Path(__file__).parent / "data" / "azure"
RECORDS = DATA / "activity-log-schema-records.json"
ADMINISTRATIVE = DATA / "activity-log-schema-administrative.json"
ROW = DATA / "logs-export-logicapp-azureactivity.json"
OPERATIONS = (
    "Microsoft.Storage/storageAccounts/listAccountSas/action",
    "Microsoft.Network/networkSecurityGroups/write",
    "Microsoft.Resources/deployments/write",
)


def _options(start: str = "2015-01-01T00:00:00Z", end: str = "2026-01-01T00:00:00Z") -> ScanOptions:
    return ScanOptions(
        start, end, None, {}, {o.lower(): o for o in OPERATIONS}, AzureRules.of(RULES), "2026-11-21T00:00:00Z"
    )


def _scan(*files: Path) -> activity_logs.Partial:
    partial = activity_logs.scan(list(files), _options(), workers=1)
    partial.drop_duplicates(partial.usage)
    return partial


def _used(partial: activity_logs.Partial) -> dict[tuple[str, str, str], int]:
    return {(identity, op, outcome): n for (_, identity, op, outcome, _), (n, *_) in partial.usage.items()}


def test_a_diagnostic_settings_record_is_an_administrative_call() -> None:
    """Diagnostic exports write the operation type ("Write") as ``category``: still a call."""
    record = normalize(json.loads(RECORDS.read_text())["records"][0])
    assert record.category == "Administrative" and record.status == "succeeded"
    assert record.operation == "Microsoft.Storage/storageAccounts/listAccountSas/action"  # authorization.action
    assert record.principal == "123abc45-8211-44e3-95xq-85137af64708"  # the oid claim before evidence.principalId
    assert _used(_scan(RECORDS)) == {
        ("123abc45-8211-44e3-95xq-85137af64708", "Microsoft.Storage/storageAccounts/listAccountSas/action", "used"): 1
    }


def test_the_rest_sample_event_is_a_call_of_its_oid() -> None:
    record = normalize(json.loads(ADMINISTRATIVE.read_text()))
    assert (record.principal, record.app_id) == (
        "f409edeb-4d29-44b5-9763-ee9348ad91bb",
        "355249ed-15d9-460d-8481-84026b065942",
    )
    assert record.operation_id == "04e575f8-48d0-4c43-a8b3-78c4eb01d287"
    assert _used(_scan(ADMINISTRATIVE)) == {
        ("f409edeb-4d29-44b5-9763-ee9348ad91bb", "Microsoft.Network/networkSecurityGroups/write", "used"): 1
    }


def test_a_projected_azure_activity_row_without_claims_is_skipped_not_guessed() -> None:
    partial = _scan(ROW)
    assert partial.usage == {} and partial.unmapped == {}
    assert partial.skipped == {("00000000-0000-0000-0000-000000000000", "no caller object id or app id"): 1}
    assert partial.in_window == {"00000000-0000-0000-0000-000000000000": 1}  # the day still counts as covered


def test_a_record_exported_twice_counts_once(tmp_path: Path) -> None:
    doc = json.loads(RECORDS.read_text())
    (tmp_path / "a.json").write_text(json.dumps(doc))
    (tmp_path / "b.ndjson").write_text(json.dumps(doc["records"][0]) + "\n" + json.dumps(doc["records"][0]) + "\n")
    assert set(_used(_scan(tmp_path / "a.json", tmp_path / "b.ndjson")).values()) == {1}


def test_a_truncated_export_keeps_its_complete_records(tmp_path: Path) -> None:
    record = json.loads(RECORDS.read_text())["records"][0]
    second = copy.deepcopy(record) | {"correlationId": "another-request"}
    text = json.dumps({"records": [record, second]})
    (tmp_path / "cut.json").write_text(text[: len(text) - 200])  # the blob ends inside the second record
    partial = _scan(tmp_path / "cut.json")
    assert sum(_used(partial).values()) == 1
    assert partial.skipped.get(("", "malformed Activity Log record")) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"identity": 42},
        {"identity": {"claims": "not json", "authorization": ["x"]}},
        {"time": 20190121},
        {"operationName": None, "identity": None},
        {"resultType": {"value": 3}},
        {"properties": "}{"},
    ],
)
def test_mistyped_fields_never_raise(tmp_path: Path, change: dict[str, Any]) -> None:
    record = json.loads(RECORDS.read_text())["records"][0] | change
    (tmp_path / "x.json").write_text(json.dumps({"records": [record]}))
    partial = _scan(tmp_path / "x.json")
    assert sum(_used(partial).values()) + sum(partial.skipped.values()) + len(partial.gaps) >= 1


def test_a_huge_record_is_read_within_the_file_cap(tmp_path: Path) -> None:
    record = json.loads(RECORDS.read_text())["records"][0]
    record["properties"]["responseBody"] = "x" * 2_000_000
    (tmp_path / "big.json").write_text(json.dumps({"records": [record]}))
    assert sum(_used(_scan(tmp_path / "big.json")).values()) == 1
    small = ScanOptions(**{**_options().__dict__, "max_file_bytes": 1_000_000})
    capped = activity_logs.scan([tmp_path / "big.json"], small, workers=1)
    assert capped.usage == {} and capped.gaps and "big.json" in capped.gaps[0]["scope"]
