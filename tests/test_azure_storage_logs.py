"""Storage resource logs as Azure data-plane evidence: the reader on records published by Microsoft and
others (tests/data/azure, see SOURCES.md) and hostile variants of them, coverage per account service,
and what becomes observable for whom."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import RULES

from auditor.connectors.azure import storage_logs
from auditor.connectors.azure.activity_logs import ScanOptions
from auditor.connectors.azure.data_plane import Coverage, observability_rows, storage_service
from auditor.connectors.azure.rules import AzureRules

DATA = Path(__file__).parent / "data" / "azure"
OAUTH = DATA / "storage-blob-reference-oauth.json"
ACCOUNT_KEY = DATA / "storage-blob-accountkey-record.json"
BLOB = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
OPERATIONS = (f"{BLOB}/read", f"{BLOB}/write", f"{BLOB}/delete")
USER = "fde5ba15-4355-4223-b811-cccccccccccc"
ACCOUNT = (
    "/subscriptions/12345678-2222-3333-4444-555555555555/resourceGroups/mytestrp/providers/"
    "Microsoft.Storage/storageAccounts/testaccount1"
)


def _options(cap: str = "2026-11-21T00:00:00Z", **extra: Any) -> ScanOptions:
    settings = {
        "start": "2019-01-01T00:00:00Z",
        "end": "2026-01-01T00:00:00Z",
        "identities": None,
        "app_ids": {},
        "operations": {o.lower(): o for o in OPERATIONS},
        "rules": AzureRules.of(RULES),
        "cap": cap,
        **extra,
    }
    return ScanOptions(**settings)


def _scan(*files: Path, **options: Any) -> storage_logs.StoragePartial:
    partial = storage_logs.scan(list(files), _options(**options), workers=1)
    partial.drop_duplicates(partial.usage)
    return partial


def _usage(partial: storage_logs.StoragePartial) -> dict[tuple[str, str, str], int]:
    return {(i, a, o): v[0] for (_, i, a, o, _), v in partial.usage.items() if v[0] > 0}


def _record(path: Path = OAUTH) -> dict[str, Any]:
    return json.loads(path.read_text())


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# -- the published records ------------------------------------------------------------------------


def test_the_published_oauth_record_is_a_call_of_its_authorization_action() -> None:
    partial = _scan(OAUTH)
    # the record's operation is PutBlob, its authorization entry the read: the entry is what counts
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1}
    ((key, (_, first, _, resources)),) = partial.usage.items()
    assert key[0] == "12345678-2222-3333-4444-555555555555" and key[4] == "storage-logs"
    assert resources == {ACCOUNT} and first == "2019-02-28T19:10:21Z"


def test_a_shared_key_request_is_no_identity_s_call() -> None:
    partial = _scan(ACCOUNT_KEY, start="2023-01-01T00:00:00Z")
    assert partial.usage == {} and partial.unmapped == {}
    assert [(r, n) for (_, r), n in partial.skipped.items()] == [("AccountKey request (not a call by an identity)", 1)]
    # ...but it is a StorageWrite record of that account: evidence that the category is logged
    scope = storage_logs.scope_key(_record(ACCOUNT_KEY)["resourceId"].rsplit("/blobServices", 1)[0], "blob")
    assert partial.categories[scope] == {"2023-12-12": 2}


def test_event_hub_envelope_ndjson_and_a_table_export_count_each_request_once(tmp_path) -> None:
    record = _record()
    (tmp_path / "hub.json").write_text(json.dumps({"records": [record]}))
    _write(tmp_path / "PT1H.json", [record, record])
    identity = record["identity"]
    row = {
        "TimeGenerated": record["time"],
        "_ResourceId": record["resourceId"].lower(),
        "Category": record["category"],
        "OperationName": record["operationName"],
        "StatusCode": str(record["statusCode"]),
        "StatusText": record["statusText"],
        "AuthenticationType": identity["type"],
        "RequesterObjectId": identity["requester"]["objectId"],
        "AuthorizationDetails": json.dumps(identity["authorization"]),
        "CorrelationId": record["correlationId"],
        "Type": "StorageBlobLogs",
    }
    columns = [{"name": k, "type": "string"} for k in row]
    (tmp_path / "query.json").write_text(
        json.dumps({"tables": [{"name": "PrimaryResult", "columns": columns, "rows": [list(row.values())]}]})
    )
    partial = storage_logs.scan(sorted(tmp_path.iterdir()), _options(), workers=1)
    dropped = partial.drop_duplicates(partial.usage)
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1} and dropped == 3


def test_the_caller_falls_back_to_the_authorization_principal_then_the_app_id(tmp_path) -> None:
    only_principal = _record()
    del only_principal["identity"]["requester"]["objectId"]
    only_app = copy.deepcopy(only_principal)
    only_app["identity"]["authorization"][0]["principals"] = []
    only_app["correlationId"] = "other"
    app = only_app["identity"]["requester"]["appId"]
    path = _write(tmp_path / "a.json", [only_principal, only_app])
    partial = _scan(path, app_ids={app: "mapped-object-id"})
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1, ("mapped-object-id", f"{BLOB}/read", "used"): 1}


@pytest.mark.parametrize(
    ("status", "text", "result", "outcome"),
    [
        (403, "AuthorizationPermissionMismatch", None, "denied"),
        (403, "AuthorizationFailure", None, "denied"),
        (200, "Success", "Denied", "denied"),
        (404, "BlobNotFound", None, "used"),  # the check passed, the blob was missing
        (409, "LeaseIdMissing", "Granted", "used"),
        (500, "ServerTimeout", None, "used"),
    ],
)
def test_outcomes(tmp_path, status: int, text: str, result: str | None, outcome: str) -> None:
    record = _record()
    record["statusCode"], record["statusText"] = status, text
    if result:
        record["identity"]["authorization"][0]["result"] = result
    assert _usage(_scan(_write(tmp_path / "a.json", [record]))) == {(USER, f"{BLOB}/read", outcome): 1}


def test_names_take_the_catalog_spelling_and_unknown_ones_are_listed(tmp_path) -> None:
    lower, unknown = _record(), _record()
    lower["identity"]["authorization"][0]["action"] = f"{BLOB}/READ".lower()
    unknown["identity"]["authorization"][0]["action"] = "Microsoft.Storage/storageAccounts/fooServices/bar"
    unknown["correlationId"] = "x"
    partial = _scan(_write(tmp_path / "a.json", [lower, unknown]))
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1}
    assert [k[2] for k in partial.unmapped] == ["Microsoft.Storage/storageAccounts/fooServices/bar"]


def test_an_identity_request_without_authorization_details_is_unmapped_never_guessed(tmp_path) -> None:
    record = _record()
    del record["identity"]["authorization"]
    partial = _scan(_write(tmp_path / "a.json", [record]))
    assert partial.usage == {}
    ((key, calls),) = partial.unmapped.items()
    assert key[1:3] == (USER, "blob:PutBlob") and key[3] == storage_logs.NO_DETAILS and calls == 1
    assert storage_logs.unattributed(partial) == {USER: frozenset({"blob"})}


# -- hostile variants -----------------------------------------------------------------------------


def test_truncated_file_keeps_its_complete_records(tmp_path) -> None:
    second = _record()
    second["correlationId"] = "second"
    text = json.dumps({"records": [_record(), second]})
    (tmp_path / "cut.json").write_text(text[: len(text) - 40])
    partial = _scan(tmp_path / "cut.json")
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1}
    assert partial.skipped[("", "malformed storage log record")] == 1


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("category", "StorageAudit", "category"),
        ("resourceId", "/subscriptions/x/resourceGroups/r/providers/Microsoft.Web/sites/s", "storage account"),
        ("time", 12345, "no time"),
        ("time", "2019-02-30T10:00:00Z", "impossible time"),
        ("operationName", ["PutBlob"], "operationName"),
    ],
)
def test_mistyped_records_are_counted_and_named(tmp_path, field: str, value: Any, message: str) -> None:
    bad = _record()
    bad[field] = value
    partial = storage_logs.scan([_write(tmp_path / "a.json", [bad, _record()])], _options(), workers=1)
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1}
    (gap,) = partial.gaps
    assert "1 malformed storage log record skipped" in gap["reason"] and message in gap["reason"]


def test_mistyped_fields_inside_a_record_do_not_raise(tmp_path) -> None:
    record = _record()
    record["statusCode"] = "two hundred"
    record["identity"]["authorization"] = "not a list"
    record["identity"]["requester"] = ["x"]
    partial = _scan(_write(tmp_path / "a.json", [record]))
    assert partial.usage == {} and len(partial.unmapped) == 0  # no caller left: skipped, counted
    assert sum(partial.skipped.values()) == 1


def test_future_dated_records_are_input_problems(tmp_path) -> None:
    future = _record()
    future["time"] = "2030-01-01T00:00:00Z"
    partial = _scan(_write(tmp_path / "a.json", [future]), end="2031-01-01T00:00:00Z")
    assert partial.usage == {} and partial.beyond_cap == 1 and partial.categories == {}


def test_a_file_above_the_size_cap_is_a_gap_not_a_crash(tmp_path) -> None:
    path = _write(tmp_path / "big.json", [_record()] * 200)
    partial = storage_logs.scan([path], _options(max_file_bytes=10_000), workers=1)
    assert partial.usage == {} and len(partial.gaps) == 1 and "file skipped" in partial.gaps[0]["reason"]


def test_gzip_and_not_a_log_at_all(tmp_path) -> None:
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(orjson.dumps(_record())))
    (tmp_path / "b.json").write_text('{"hello": "world"}')
    partial = storage_logs.scan(sorted(tmp_path.iterdir()), _options(), workers=1)
    assert _usage(partial) == {(USER, f"{BLOB}/read", "used"): 1}
    assert any("not a storage log export" in g["reason"] for g in partial.gaps)


# -- coverage -------------------------------------------------------------------------------------


def _day_records(day: str, categories: tuple[str, ...]) -> list[dict[str, Any]]:
    out = []
    for category in categories:
        record = _record(ACCOUNT_KEY)
        record["time"], record["category"] = f"{day}T10:00:00Z", category
        out.append(record)
    return out


def test_an_account_is_covered_only_with_all_three_categories_every_day(tmp_path) -> None:
    days = ["2023-12-10", "2023-12-11", "2023-12-12"]
    full = [r for d in days for r in _day_records(d, ("StorageRead", "StorageWrite", "StorageDelete"))]
    window = ("2023-12-10T00:00:00Z", "2023-12-12T23:59:59Z")
    partial = _scan(_write(tmp_path / "full.json", full))
    assert len(partial.covered(*window)) == 1
    no_delete = [r for r in full if not (r["category"] == "StorageDelete" and r["time"].startswith(days[1]))]
    partial = _scan(_write(tmp_path / "gap.json", no_delete))
    (scope,) = partial.accounts
    assert partial.covered(*window) == {} and partial.missing(scope, *window) == {"StorageDelete": [days[1]]}


# -- observability rows ---------------------------------------------------------------------------

SUB = "s"
A = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/a"
QUEUE = "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read"
OPS = {**dict.fromkeys(OPERATIONS, True), QUEUE: True, "Microsoft.Web/sites/read": False}


def _grants(rows: list[tuple[str, list[str], str]]):

    from auditor import model

    return model.frame(
        [{"identity": i, "actions": a, "scope": s, "effect": "Allow", "layer": "identity"} for i, a, s in rows],
        model.GRANTS,
    )


def _reasons(rows: list[dict[str, Any]], identity: str, action: str) -> str | None:
    """The diff's rule: the first row naming (identity or everyone, action) wins."""
    for row in rows:
        if row["identity"] in (None, identity) and any(
            a == action or (a.endswith("*") and action.endswith(a.removeprefix("*"))) for a in row["actions"]
        ):
            return row["reason"]
    return None


def test_only_identities_granted_within_covered_accounts_become_observable() -> None:
    grants = _grants([("in", list(OPERATIONS), A), ("out", list(OPERATIONS), f"/subscriptions/{SUB}")])
    coverage = Coverage({storage_logs.scope_key(A, "blob"): A}, frozenset({"blob"}))
    rows = observability_rows(
        SUB, OPS, "dataAction", [(("*/read",), "GET")], grants, frozenset({"in", "out"}), coverage
    )
    for action in OPERATIONS:
        assert _reasons(rows, "in", action) is None
        assert "granted on /subscriptions/s; storage logs cover the whole window only for a (blob)" in str(
            _reasons(rows, "out", action)
        )
    assert _reasons(rows, "in", QUEUE) == "dataAction"  # no queue logs given
    assert _reasons(rows, "in", "Microsoft.Web/sites/read") == "GET"


def test_a_grant_below_the_account_is_covered_and_a_sibling_account_is_not() -> None:
    container = f"{A}/blobServices/default/containers/c".upper()
    grants = _grants([("x", [f"{BLOB}/read"], container), ("y", [f"{BLOB}/read"], A + "b")])
    coverage = Coverage({storage_logs.scope_key(A, "blob"): A}, frozenset({"blob"}))
    rows = observability_rows(SUB, OPS, "dataAction", [], grants, frozenset({"x", "y"}), coverage)
    assert _reasons(rows, "x", f"{BLOB}/read") is None and _reasons(rows, "y", f"{BLOB}/read") is not None


def test_unattributed_requests_keep_their_service_unobservable_for_that_identity() -> None:
    grants = _grants([("x", list(OPERATIONS), A)])
    coverage = Coverage({storage_logs.scope_key(A, "blob"): A}, frozenset({"blob"}))
    rows = observability_rows(SUB, OPS, "d", [], grants, frozenset({"x"}), coverage, {"x": frozenset({"blob"})})
    assert all("without authorization details" in str(_reasons(rows, "x", a)) for a in OPERATIONS)


def test_without_storage_logs_every_data_action_stays_unobservable() -> None:
    grants = _grants([("x", list(OPERATIONS), A)])
    rows = observability_rows(SUB, OPS, "dataAction", [], grants, frozenset({"x"}), None)
    assert all(_reasons(rows, "x", a) == "dataAction" for a in (*OPERATIONS, QUEUE))


def test_storage_service_of_an_action() -> None:
    assert storage_service(f"{BLOB}/read") == "blob" and storage_service(QUEUE) == "queue"
    assert storage_service("Microsoft.Storage/storageAccounts/listKeys/action") is None
    assert storage_service("Microsoft.KeyVault/vaults/secrets/getSecret/action") is None
