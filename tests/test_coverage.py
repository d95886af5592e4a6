"""What CloudTrail can show: event selectors, declared data events, days missing from the logs."""

import pytest
from conftest import RULES as ALL_RULES

from auditor.catalog import aws_catalog
from auditor.connectors.aws.coverage import ObservabilityRules, TrailCoverage, observability_rows
from auditor.coverage import missing_days
from auditor.errors import InputError

RULES = ObservabilityRules.of(ALL_RULES)


def unobservable(coverage):
    """(the catalog actions a row covers, its reason) per OBSERVABILITY row."""
    rows = observability_rows("1", coverage, RULES, aws_catalog())
    return [(aws_catalog().expand(r["actions"]), r["reason"]) for r in rows]


def reason(rules, action):
    return next((why for actions, why in rules if action in actions), None)


def test_partial_edge_days_are_not_required_but_inner_days_are():
    seen = {f"2026-11-{d:02d}" for d in range(2, 31)}
    assert missing_days(seen, "2026-11-01T23:59:00Z", "2026-11-30T10:00:00Z") == []
    assert missing_days(seen - {"2026-11-15"}, "2026-11-01T23:59:00Z", "2026-11-30T10:00:00Z") == ["2026-11-15"]
    assert missing_days(set(), "2026-11-01T00:00:00Z", "2026-11-02T23:59:59Z") == ["2026-11-01", "2026-11-02"]


def test_basic_selectors_with_all_buckets_make_s3_object_actions_observable():
    coverage = TrailCoverage.from_selectors(
        {
            "EventSelectors": [
                {
                    "ReadWriteType": "All",
                    "IncludeManagementEvents": True,
                    "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3"]}],
                }
            ]
        },
        "sel.json",
    )
    rules = unobservable(coverage)
    assert reason(rules, "s3:GetObject") is None
    assert "AWS::Lambda::Function" in reason(rules, "lambda:InvokeFunction")
    assert "PassRole" in reason(rules, "iam:PassRole")
    assert reason(rules, "ec2:TerminateInstances") is None


def test_selectors_for_some_buckets_only_leave_object_actions_unobservable():
    coverage = TrailCoverage.from_selectors(
        {
            "EventSelectors": [
                {
                    "ReadWriteType": "All",
                    "IncludeManagementEvents": True,
                    "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::audit-bucket/"]}],
                }
            ]
        },
        "sel.json",
    )
    assert "logged only for" in reason(unobservable(coverage), "s3:GetObject")


def test_write_only_management_events_hide_reads_not_writes():
    coverage = TrailCoverage.from_selectors(
        {"EventSelectors": [{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True, "DataResources": []}]},
        "sel.json",
    )
    rules = unobservable(coverage)
    assert "read management events" in reason(rules, "ec2:DescribeInstances")
    assert reason(rules, "ec2:TerminateInstances") is None


def test_advanced_selectors_and_excluded_sources():
    coverage = TrailCoverage.from_selectors(
        {
            "AdvancedEventSelectors": [
                {
                    "Name": "mgmt",
                    "FieldSelectors": [
                        {"Field": "eventCategory", "Equals": ["Management"]},
                        {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com"]},
                    ],
                },
                {
                    "Name": "ddb",
                    "FieldSelectors": [
                        {"Field": "eventCategory", "Equals": ["Data"]},
                        {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
                    ],
                },
            ]
        },
        "sel.json",
    )
    rules = unobservable(coverage)
    assert reason(rules, "dynamodb:GetItem") is None
    assert "kms.amazonaws.com" in reason(rules, "kms:Decrypt")
    assert "S3::Object" in reason(rules, "s3:GetObject")


def test_undeclared_coverage_keeps_data_events_unobservable_and_declaring_fixes_it():
    assert "not declared" in reason(unobservable(None), "dynamodb:GetItem")
    declared = TrailCoverage.declared("dynamodb,s3", RULES)
    assert reason(unobservable(declared), "dynamodb:GetItem") is None
    assert reason(unobservable(declared), "lambda:InvokeFunction") is not None
    with pytest.raises(InputError, match="unknown"):
        TrailCoverage.declared("s4", RULES)


def test_not_event_selectors_is_one_clear_error():
    with pytest.raises(InputError, match="not event selectors"):
        TrailCoverage.from_selectors({"Trails": []}, "x.json")
