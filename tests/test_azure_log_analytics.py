"""The Log Analytics pushdown: the KQL is valid Kusto (parsed with the ANTLR grammar of the
kusto-query-language-parser package) of the expected shape, and its aggregated rows fold into exactly
the usage the log reader folds from the same records, whatever records are chosen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from antlr4 import InputStream
from azure_fake import aggregate, fixture_events
from conftest import RULES
from hypothesis import given, settings
from hypothesis import strategies as st
from kusto_query_language_parser.parser.kql_traverse import KqlTraverse

from auditor.connectors.azure import activity_logs
from auditor.connectors.azure.activity_logs import Partial, ScanOptions
from auditor.connectors.azure.log_analytics import aggregation_query, check_workspace, fold_rows
from auditor.connectors.azure.rbac import load_operations, load_service_principals
from auditor.connectors.azure.rules import AzureRules
from auditor.errors import InputError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "azure"
START, END = "2026-10-21T12:00:00Z", "2026-11-20T12:00:00Z"


def _parse(query: str) -> tuple[KqlTraverse, Any]:
    traverse = KqlTraverse()
    return traverse, traverse.parse(InputStream(query))


def test_the_query_is_valid_kusto_and_reads_azure_activity_once() -> None:
    query = aggregation_query(START, END)
    traverse, tree = _parse(query)
    assert traverse.parser.getNumberOfSyntaxErrors() == 0
    assert len(re.findall(r"\bAzureActivity\b", query)) == 1
    assert f"between (datetime({START}) .. datetime({END}))" in query
    functions = {f["name"] for f in traverse.find_functions(tree)}
    assert {"column_ifexists", "parse_json", "make_set", "countif", "take_any"} <= functions
    # counted per request first (Started/Accepted/Succeeded once), then per caller and operation
    first, second = re.findall(r"summarize .*?\n\s+by ([^\n]+)", query, flags=re.DOTALL)[:2]
    assert first.rstrip().endswith("Request") and "Request" not in second


def test_the_parser_rejects_what_kusto_rejects() -> None:
    broken = aggregation_query(START, END).replace("by SubscriptionId, Category", "by SubscriptionId,, Category")
    with pytest.raises(SyntaxError):
        _parse(broken)


def test_projected_columns_are_the_ones_the_reader_folds() -> None:
    query = aggregation_query(START, END)
    projected = re.search(r"\| project (.*)", query, flags=re.DOTALL)
    assert projected is not None
    columns = {c.strip() for c in projected.group(1).split(",")}
    assert columns == set(aggregate(list(fixture_events()), START, END)[0]) | {"Day", "Records"}


@pytest.mark.parametrize("bad", ["2026-10-21", "2026-10-21T12:00:00Z) | take 1 //", "now()"])
def test_the_window_cannot_inject_kql(bad: str) -> None:
    with pytest.raises(ValueError):
        aggregation_query(bad, END)


@pytest.mark.parametrize("bad", ["", "AzureActivity | take 1", "6c1d0b8e-2f4a-4c3b-9a7e-1d2c3b4a5f6"])
def test_a_workspace_is_a_guid(bad: str) -> None:
    with pytest.raises(InputError):
        check_workspace(bad)


def _options(identities: frozenset[str] | None = None) -> ScanOptions:
    operations = load_operations([FIXTURE / "provider-operations.json"])
    principals = load_service_principals([FIXTURE / "service-principals.json"]).values()
    return ScanOptions(
        START,
        END,
        identities,
        {p.app_id: p.object_id for p in principals if p.app_id},
        {name.lower(): name for name in operations},
        AzureRules.of(RULES),
        "2026-11-21T00:00:00Z",
    )


def _usage(partial: Partial) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """usage without the evidence name: (subscription, identity, operation, outcome) -> calls, first, last."""
    return {key[:4]: (calls, first, last) for key, (calls, first, last, _) in partial.usage.items()}


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, len(fixture_events()) - 1), max_size=len(fixture_events())))
def test_aggregated_rows_fold_like_the_records_they_count(chosen: set[int]) -> None:
    events = [fixture_events()[i] for i in sorted(chosen)]
    options = _options()
    scanned = Partial()
    activity_logs.fold(events, options, scanned, "events")
    scanned.drop_duplicates(scanned.usage)
    folded = Partial()
    fold_rows(aggregate(events, START, END), options, folded)
    assert _usage(folded) == _usage(scanned)
    assert folded.unmapped == scanned.unmapped
    assert folded.days == scanned.days and folded.in_window == scanned.in_window
    assert folded.first == scanned.first


def _row(**values: Any) -> dict[str, Any]:
    base = {
        "Kind": "calls",
        "SubscriptionId": "s",
        "Category": "Administrative",
        "Principal": "p",
        "AppId": "",
        "Operation": "Microsoft.Web/sites/restart/action",
        "Ok": True,
        "Signals": "",
        "Calls": 2,
        "FirstSeen": "2026-11-01T00:00:00.000Z",
        "LastSeen": "2026-11-02T00:00:00.000Z",
        "Scopes": '["/subscriptions/s/resourceGroups/rg"]',
    }
    return base | values


def test_outcomes_follow_the_rules_not_the_query() -> None:
    out = Partial()
    fold_rows(
        [
            _row(Ok=False, Signals="Forbidden Forbidden"),  # refused
            _row(Ok=False, Signals="Conflict Conflict"),  # failed after the check: used
            _row(Ok=True, Signals="LinkedAuthorizationFailed BadRequest"),  # passed, then a linked refusal
            _row(Ok=False, Signals=""),  # failed without saying why: not a refusal
        ],
        _options(),
        out,
    )
    usage = _usage(out)
    assert usage[("s", "p", "Microsoft.Web/sites/restart/action", "denied")][0] == 4
    assert usage[("s", "p", "Microsoft.Web/sites/restart/action", "used")][0] == 6


def test_hostile_rows_are_skipped_or_listed_never_guessed() -> None:
    out = Partial()
    fold_rows(
        [
            _row(Operation="Microsoft.Nope/things/write"),  # not in the catalog: unmapped
            _row(Principal="", AppId=""),  # nobody: skipped
            _row(Category="Policy"),  # not a call
            _row(Calls=0),
            _row(Calls=-5),
            _row(FirstSeen=None),
            _row(Scopes="not json ["),
            _row(Principal="", AppId="9431ec21-b67c-5b68-b13f-7c9781fd00de"),  # app id only: func-triage
            {"Kind": "day", "SubscriptionId": "s", "Day": "2026-11-01", "Records": 7, "FirstSeen": None},
        ],
        _options(),
        out,
    )
    assert out.unmapped == {("s", "p", "Microsoft.Nope/things/write", activity_logs.UNKNOWN_OPERATION): 2}
    assert out.skipped == {("s", "no caller object id or app id"): 2, ("s", "Policy record (not a call)"): 2}
    identities = {key[1] for key in out.usage}
    assert identities == {"p", "de34afc6-b272-5712-9fee-8745f88bf4c4"}
    assert out.days == {}  # a day row without times says nothing
