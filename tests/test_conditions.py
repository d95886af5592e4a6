"""Can a condition still be true? AWS Condition blocks and GCP CEL expressions, at a given moment."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.conditions import aws_condition, evaluate, gcp_condition

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PAST = "2020-01-01T00:00:00Z"
FUTURE = "2099-01-01T00:00:00Z"


def status(condition, context=None, now=NOW) -> str:
    return evaluate(condition, now, context).status


# --- AWS -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (None, "always"),
        ({}, "always"),
        ({"DateLessThan": {"aws:CurrentTime": PAST}}, "never"),
        ({"DateLessThanEquals": {"aws:CurrentTime": PAST}}, "never"),
        ({"DateLessThan": {"aws:CurrentTime": FUTURE}}, "unknown"),
        ({"DateGreaterThan": {"aws:CurrentTime": PAST}}, "always"),
        ({"DateGreaterThan": {"aws:CurrentTime": FUTURE}}, "unknown"),
        ({"DateLessThan": {"aws:EpochTime": 1600000000}}, "never"),
        ({"DateLessThan": {"aws:EpochTime": "1600000000"}}, "never"),
        ({"DateLessThan": {"aws:CurrentTime": "2020-01-01"}}, "never"),
        ({"DateLessThan": {"aws:CurrentTime": [PAST, FUTURE]}}, "unknown"),  # values of one key are OR-ed
        ({"DateEquals": {"aws:CurrentTime": PAST}}, "never"),
        ({"DateNotEquals": {"aws:CurrentTime": PAST}}, "always"),
        ({"DateLessThanIfExists": {"aws:CurrentTime": PAST}}, "never"),
        (
            {
                "DateGreaterThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"},
                "DateLessThan": {"aws:CurrentTime": "2029-01-01T00:00:00Z"},
            },
            "never",
        ),
        ({"DateLessThan": {"aws:TokenIssueTime": PAST}}, "never"),
        ({"DateLessThanIfExists": {"aws:TokenIssueTime": PAST}}, "unknown"),
        ({"DateGreaterThan": {"aws:TokenIssueTime": PAST}}, "unknown"),
        ({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, "unknown"),
        ({"Bool": {"aws:MultiFactorAuthPresent": "true"}}, "unknown"),
        ({"StringEquals": {"aws:PrincipalTag/team": "ops"}}, "unknown"),
        ({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}, "DateLessThan": {"aws:CurrentTime": PAST}}, "never"),
        ({"ForAnyValue:DateLessThan": {"aws:CurrentTime": PAST}}, "unknown"),
        ({"DateLessThan": {"aws:CurrentTime": "not a date"}}, "unknown"),
    ],
)
def test_aws_verdicts(condition, expected):
    assert status(condition) == expected
    assert status(json.dumps(condition) if condition is not None else None) == expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}, "never"),
        ({"StringEquals": {"iam:PassedToService": ["lambda.amazonaws.com", "ec2.amazonaws.com"]}}, "always"),
        ({"StringLike": {"iam:PassedToService": "ec2.*"}}, "always"),
        ({"StringNotEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}, "never"),
        ({"StringEqualsIgnoreCase": {"IAM:PassedToService": "EC2.amazonaws.com"}}, "always"),
        (
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}, "Bool": {"aws:SecureTransport": "true"}},
            "unknown",
        ),
    ],
)
def test_known_context_keys_are_evaluated(condition, expected):
    assert status(condition, {"iam:PassedToService": "ec2.amazonaws.com"}) == expected


def test_reasons_are_one_line_and_name_what_they_depend_on():
    expired = evaluate({"DateLessThan": {"aws:CurrentTime": PAST}}, NOW)
    assert "aws:CurrentTime" in expired.reason and "\n" not in expired.reason
    request = evaluate({"IpAddress": {"aws:SourceIp": "203.0.113.0/24"}}, NOW)
    assert request.reason.startswith("depends on the request") and "aws:SourceIp" in request.reason
    until = evaluate({"DateLessThan": {"aws:CurrentTime": FUTURE}}, NOW)
    assert until.reason == "true only before 2099-01-01T00:00:00Z"


@pytest.mark.parametrize("odd", ["not json", "[1, 2]", 42, [], {"DateLessThan": "x"}, {"DateLessThan": {"k": None}}])
def test_odd_aws_input_is_unknown(odd):
    assert aws_condition(odd, NOW).status in ("unknown", "always")
    assert aws_condition(odd, NOW).status != "never"


# --- GCP -------------------------------------------------------------------------------------------


def gcp(expression: str) -> str:
    return gcp_condition({"expression": expression, "title": "t"}, NOW).status


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (f'request.time < timestamp("{PAST}")', "never"),
        (f'request.time <= timestamp("{PAST}")', "never"),
        (f'request.time > timestamp("{PAST}")', "always"),
        (f'request.time < timestamp("{FUTURE}")', "unknown"),
        (f'timestamp("{PAST}") > request.time', "never"),
        (f'request.time > timestamp("{PAST}") && request.time < timestamp("{FUTURE}")', "unknown"),
        (f'request.time < timestamp("{PAST}") || request.time > timestamp("{FUTURE}")', "unknown"),
        (f'request.time < timestamp("{PAST}") || request.time > timestamp("2021-01-01T00:00:00Z")', "always"),
        (f'(request.time < timestamp("{PAST}") || request.time < timestamp("2021-01-01T00:00:00Z"))', "never"),
        (f'request.time < timestamp("{PAST}") && resource.name.startsWith("projects/_/buckets/b")', "never"),
        (f'request.time < timestamp("{PAST}") || resource.name.startsWith("projects/_/buckets/b")', "unknown"),
        (f'!(request.time < timestamp("{PAST}"))', "always"),
        ('resource.type == "storage.googleapis.com/Bucket"', "unknown"),
        ("request.time.getHours('Europe/Berlin') < 17", "unknown"),
        ("a && (b", "unknown"),
        ("x = 1", "unknown"),
    ],
)
def test_gcp_verdicts(expression, expected):
    assert gcp(expression) == expected


def test_gcp_condition_as_json_text_and_without_expression():
    text = json.dumps({"expression": f'request.time < timestamp("{PAST}")', "title": "expired"})
    assert evaluate(text, NOW).status == "never"
    assert gcp_condition({"title": "no expression"}, NOW).status == "unknown"
    assert gcp_condition(None, NOW).status == "always"


# --- properties ----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)
OPERATORS = st.sampled_from(
    ["DateLessThan", "DateLessThanEquals", "DateGreaterThan", "DateGreaterThanEquals", "DateEquals", "DateNotEquals"]
)
MOMENTS = st.integers(min_value=-5, max_value=5).map(lambda d: NOW + timedelta(days=d * 400, seconds=d))


@given(JSON | st.text(max_size=40))
def test_never_raises_on_odd_input(value):
    for verdict in (evaluate(value, NOW), aws_condition(value, NOW), gcp_condition(value, NOW)):
        assert verdict.status in ("never", "unknown", "always")
        assert "\n" not in verdict.reason


@given(st.text(alphabet='request.timestamp()<>=!&|"2026-01 ', max_size=60))
def test_never_raises_on_odd_cel(expression):
    assert gcp_condition({"expression": expression}, NOW).status in ("never", "unknown", "always")


def holds(op: str, t: datetime, value: datetime) -> bool:
    return {
        "DateLessThan": t < value,
        "DateLessThanEquals": t <= value,
        "DateGreaterThan": t > value,
        "DateGreaterThanEquals": t >= value,
        "DateEquals": t == value,
        "DateNotEquals": t != value,
    }[op]


def samples(values: list[datetime], now: datetime) -> list[datetime]:
    """Request times from ``now`` on at which the truth of any of the bounds can change."""
    tick = timedelta(microseconds=1)
    points = {now, now + timedelta(days=100_000)} | {v + d for v in values for d in (-tick, timedelta(0), tick)}
    return sorted(p for p in points if p >= now)


def brute(truths: list[bool]) -> str:
    return "always" if all(truths) else "never" if not any(truths) else "unknown"


@settings(max_examples=150)
@given(st.lists(st.tuples(OPERATORS, st.lists(MOMENTS, min_size=1, max_size=2)), min_size=1, max_size=3), MOMENTS)
def test_aws_time_bounds_match_brute_force(bounds, now):
    block: dict[str, dict[str, list[str]]] = {}
    for op, values in bounds:
        key = "aws:CurrentTime" if op not in block else "aws:EpochTime"
        block.setdefault(op, {})[key] = [v.strftime("%Y-%m-%dT%H:%M:%SZ") for v in values]
    parsed = [
        (op, [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in values])
        for op, keys in block.items()
        for values in keys.values()
    ]

    def true_at(t: datetime) -> bool:
        return all(
            all(t != v for v in vs) if op == "DateNotEquals" else any(holds(op, t, v) for v in vs) for op, vs in parsed
        )

    everything = [v for _, vs in parsed for v in vs]
    assert aws_condition(block, now).status == brute([true_at(t) for t in samples(everything, now)])


def cel_trees(values: list[datetime]):
    ops = st.sampled_from(["<", "<=", ">", ">="])
    atoms = st.tuples(ops, st.sampled_from(values)).map(
        lambda a: (f'request.time {a[0]} timestamp("{a[1].strftime("%Y-%m-%dT%H:%M:%SZ")}")', a)
    )
    return st.recursive(
        atoms,
        lambda inner: st.tuples(st.sampled_from(["&&", "||"]), inner, inner).map(
            lambda t: (f"({t[1][0]} {t[0]} {t[2][0]})", t)
        ),
        max_leaves=4,
    )


def cel_truth(tree, t: datetime) -> bool:
    if isinstance(tree[0], str) and tree[0] in ("&&", "||"):
        left, right = cel_truth(tree[1][1], t), cel_truth(tree[2][1], t)
        return (left and right) if tree[0] == "&&" else (left or right)
    op, value = tree
    return {"<": t < value, "<=": t <= value, ">": t > value, ">=": t >= value}[op]


@settings(max_examples=75)
@given(st.data(), MOMENTS)
def test_gcp_time_expressions_match_brute_force(data, now):
    values = data.draw(st.lists(MOMENTS, min_size=1, max_size=3))
    text, tree = data.draw(cel_trees(values))
    expected = brute([cel_truth(tree, t) for t in samples(values, now)])
    assert gcp_condition({"expression": text}, now).status == expected


@given(st.lists(st.tuples(OPERATORS, MOMENTS), min_size=1, max_size=3), MOMENTS, st.integers(1, 4000))
def test_a_dead_time_condition_stays_dead(bounds, now, days):
    block = {op: {"aws:CurrentTime": value.isoformat()} for op, value in bounds}
    if aws_condition(block, now).status == "never":
        assert aws_condition(block, now + timedelta(days=days)).status == "never"
