"""CloudTrail event -> IAM action mapping (auditor.connectors.aws.actions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RULES
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import ruleset
from auditor.catalog import Catalog, aws_catalog
from auditor.connectors.aws.actions import (
    ActionMapping,
    EventActionMapper,
    coverage_report,
    strip_version_suffix,
)
from auditor.errors import RuleError

S3 = "s3.amazonaws.com"
DDB = "dynamodb.amazonaws.com"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return aws_catalog()


@pytest.fixture(scope="module")
def mapper(catalog: Catalog) -> EventActionMapper:
    return EventActionMapper.from_rules(RULES, catalog)


def mapped(*actions: str) -> ActionMapping:
    return ActionMapping(tuple(actions), "mapped")


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        # S3 object and listing operations
        (S3, "HeadObject", ("s3:GetObject",)),
        (S3, "HeadBucket", ("s3:ListBucket",)),
        (S3, "ListObjects", ("s3:ListBucket",)),
        (S3, "ListObjectsV2", ("s3:ListBucket",)),
        (S3, "ListBuckets", ("s3:ListAllMyBuckets",)),
        (S3, "CopyObject", ("s3:GetObject", "s3:PutObject")),
        (S3, "UploadPartCopy", ("s3:GetObject", "s3:PutObject")),
        (S3, "CreateMultipartUpload", ("s3:PutObject",)),
        (S3, "UploadPart", ("s3:PutObject",)),
        (S3, "CompleteMultipartUpload", ("s3:PutObject",)),
        (S3, "AbortMultipartUpload", ("s3:AbortMultipartUpload",)),
        (S3, "ListParts", ("s3:ListMultipartUploadParts",)),
        (S3, "ListMultipartUploads", ("s3:ListBucketMultipartUploads",)),
        (S3, "DeleteObjects", ("s3:DeleteObject",)),
        (S3, "ListObjectVersions", ("s3:ListBucketVersions",)),
        (S3, "SelectObjectContent", ("s3:GetObject",)),
        (S3, "GetBucketLocation", ("s3:GetBucketLocation",)),
        # S3 bucket sub-resources (SDK and CloudTrail spellings)
        (S3, "PutBucketLifecycle", ("s3:PutLifecycleConfiguration",)),
        (S3, "PutBucketLifecycleConfiguration", ("s3:PutLifecycleConfiguration",)),
        (S3, "DeleteBucketLifecycle", ("s3:PutLifecycleConfiguration",)),
        (S3, "GetBucketLifecycle", ("s3:GetLifecycleConfiguration",)),
        (S3, "PutBucketEncryption", ("s3:PutEncryptionConfiguration",)),
        (S3, "DeleteBucketEncryption", ("s3:PutEncryptionConfiguration",)),
        (S3, "GetBucketEncryption", ("s3:GetEncryptionConfiguration",)),
        (S3, "PutBucketReplication", ("s3:PutReplicationConfiguration",)),  # not trailscraper's bug
        (S3, "DeleteBucketReplication", ("s3:PutReplicationConfiguration",)),
        (S3, "GetBucketReplication", ("s3:GetReplicationConfiguration",)),
        (S3, "PutBucketPublicAccessBlock", ("s3:PutBucketPublicAccessBlock",)),
        (S3, "DeleteBucketPublicAccessBlock", ("s3:PutBucketPublicAccessBlock",)),
        (S3, "GetBucketPublicAccessBlock", ("s3:GetBucketPublicAccessBlock",)),
        (S3, "DeleteAccountPublicAccessBlock", ("s3:PutAccountPublicAccessBlock",)),
        (S3, "GetBucketCors", ("s3:GetBucketCORS",)),
        (S3, "PutBucketCors", ("s3:PutBucketCORS",)),
        (S3, "DeleteBucketCors", ("s3:PutBucketCORS",)),
        (S3, "DeleteBucketTagging", ("s3:PutBucketTagging",)),
        (S3, "GetObjectLockConfiguration", ("s3:GetBucketObjectLockConfiguration",)),
        (S3, "DeleteBucketPolicy", ("s3:DeleteBucketPolicy",)),
        # Lambda
        ("lambda.amazonaws.com", "Invoke", ("lambda:InvokeFunction",)),
        ("lambda.amazonaws.com", "InvokeWithResponseStream", ("lambda:InvokeFunction",)),
        ("lambda.amazonaws.com", "GetLayerVersionByArn", ("lambda:GetLayerVersion",)),
        ("lambda.amazonaws.com", "GetFunction20150331v2", ("lambda:GetFunction",)),
        ("lambda.amazonaws.com", "ListFunctions20150331", ("lambda:ListFunctions",)),
        ("lambda.amazonaws.com", "CreateFunction20150331", ("lambda:CreateFunction",)),
        ("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", ("lambda:UpdateFunctionCode",)),
        # KMS, SQS, SNS, DynamoDB
        ("kms.amazonaws.com", "ReEncrypt", ("kms:ReEncryptFrom", "kms:ReEncryptTo")),
        ("kms.amazonaws.com", "Decrypt", ("kms:Decrypt",)),
        ("sqs.amazonaws.com", "SendMessageBatch", ("sqs:SendMessage",)),
        ("sqs.amazonaws.com", "DeleteMessageBatch", ("sqs:DeleteMessage",)),
        ("sqs.amazonaws.com", "ChangeMessageVisibilityBatch", ("sqs:ChangeMessageVisibility",)),
        ("sns.amazonaws.com", "PublishBatch", ("sns:Publish",)),
        (DDB, "TransactGetItems", ("dynamodb:GetItem",)),
        (DDB, "BatchWriteItem", ("dynamodb:BatchWriteItem",)),
        ("bedrock.amazonaws.com", "Converse", ("bedrock:InvokeModel",)),
        ("bedrock.amazonaws.com", "ConverseStream", ("bedrock:InvokeModelWithResponseStream",)),
        # namespace overrides
        ("monitoring.amazonaws.com", "PutMetricData", ("cloudwatch:PutMetricData",)),
        ("tagging.amazonaws.com", "GetResources", ("tag:GetResources",)),
        ("email.amazonaws.com", "SendEmail", ("ses:SendEmail",)),
        ("streams.dynamodb.amazonaws.com", "GetRecords", ("dynamodb:GetRecords",)),
        ("cloudcontrolapi.amazonaws.com", "GetResource", ("cloudformation:GetResource",)),
        ("pricelist.amazonaws.com", "GetProducts", ("pricing:GetProducts",)),
        # CloudFront versioned names, STS
        ("cloudfront.amazonaws.com", "CreateDistribution2020_05_31", ("cloudfront:CreateDistribution",)),
        ("cloudfront.amazonaws.com", "GetDistributionConfig2019_03_26", ("cloudfront:GetDistributionConfig",)),
        ("sts.amazonaws.com", "AssumeRole", ("sts:AssumeRole",)),
        # API Gateway: HTTP-verb actions from botocore's operation model
        ("apigateway.amazonaws.com", "CreateRestApi", ("apigateway:POST",)),
        ("apigateway.amazonaws.com", "GetRestApis", ("apigateway:GET",)),
        ("apigateway.amazonaws.com", "UpdateStage", ("apigateway:PATCH",)),
        ("apigateway.amazonaws.com", "DeleteRestApi", ("apigateway:DELETE",)),
        ("apigateway.amazonaws.com", "PutIntegration", ("apigateway:PUT",)),
        # plain derivation
        ("ec2.amazonaws.com", "RunInstances", ("ec2:RunInstances",)),
        ("iam.amazonaws.com", "AttachRolePolicy", ("iam:AttachRolePolicy",)),
    ],
)
def test_named_mappings(mapper: EventActionMapper, source: str, name: str, expected: tuple[str, ...]) -> None:
    assert mapper.map(source, name) == mapped(*expected)


def test_case_of_event_source_does_not_matter(mapper: EventActionMapper) -> None:
    assert mapper.map("S3.AmazonAWS.com", "HeadObject") == mapped("s3:GetObject")


@pytest.mark.parametrize(
    ("name", "stripped"),
    [
        ("GetFunction20150331v2", "GetFunction"),
        ("CreateDistribution2020_05_31", "CreateDistribution"),
        ("ListFunctions20150331", "ListFunctions"),
        ("ListObjectsV2", "ListObjectsV2"),
        ("DescribeInstances", "DescribeInstances"),
        ("Ec2Thing2", "Ec2Thing2"),
        ("20150331", "20150331"),
    ],
)
def test_strip_version_suffix(name: str, stripped: str) -> None:
    assert strip_version_suffix(name) == stripped


def test_unstripped_name_wins_when_it_is_an_action() -> None:
    catalog = Catalog("aws", {"lambda:Frob20150331": "Write", "lambda:Frob": "Write", "lambda:Get": "Read"}, "test")
    no_layers = ruleset.Rules(destructive=(), escalation=(), severities=RULES.severities, dirs=(), documents={})
    mapper = EventActionMapper.from_rules(no_layers, catalog)
    assert mapper.map("lambda.amazonaws.com", "Frob20150331") == mapped("lambda:Frob20150331")
    assert mapper.map("lambda.amazonaws.com", "Get20150331v2") == mapped("lambda:Get")


def test_unknown_event_source_is_unmapped_with_reason(mapper: EventActionMapper) -> None:
    result = mapper.map("no-such-service.amazonaws.com", "GetThing")
    assert result.status == "unmapped"
    assert result.actions == ()
    assert "unknown event source" in result.reason


def test_made_up_event_name_is_not_guessed(mapper: EventActionMapper) -> None:
    result = mapper.map(S3, "GetObjectPlease")
    assert result.status == "unmapped"
    assert result.actions == ()
    assert "s3:GetObjectPlease" in result.reason


def test_empty_input_is_unmapped(mapper: EventActionMapper) -> None:
    assert mapper.map("", "").status == "unmapped"


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("sts.amazonaws.com", "GetCallerIdentity"),
        ("sts.amazonaws.com", "GetSessionToken"),
        (DDB, "DescribeEndpoints"),
        ("signin.amazonaws.com", "ConsoleLogin"),
        ("signin.amazonaws.com", "CheckMfa"),
        ("signin.amazonaws.com", "SwitchRole"),
    ],
)
def test_permissionless(mapper: EventActionMapper, source: str, name: str) -> None:
    assert mapper.map(source, name) == ActionMapping((), "permissionless")


# --- request-dependent mappings ---------------------------------------------------------------


def test_partiql_needs_request(mapper: EventActionMapper) -> None:
    for name in ("ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction", "TransactWriteItems"):
        assert mapper.needs_request(DDB, name)
        without = mapper.map(DDB, name)
        assert without.status == "unmapped" and "requestParameters" in without.reason
        assert mapper.map_with_request(DDB, name, None).status == "unmapped"
    assert not mapper.needs_request(DDB, "GetItem")
    assert not mapper.needs_request("ec2.amazonaws.com", "RunInstances")


@pytest.mark.parametrize(
    ("statement", "action"),
    [
        ("SELECT * FROM Music WHERE Artist = 'No One You Know' AND x = ***(Redacted)", "dynamodb:PartiQLSelect"),
        ("  insert into Music VALUE {'Artist' : ***(Redacted)}", "dynamodb:PartiQLInsert"),
        ("UPDATE Music SET Album = ***(Redacted) WHERE Artist = 'a'", "dynamodb:PartiQLUpdate"),
        ("DELETE FROM \"Music\" WHERE Artist = 'a'", "dynamodb:PartiQLDelete"),
    ],
)
def test_execute_statement(mapper: EventActionMapper, statement: str, action: str) -> None:
    assert mapper.map_with_request(DDB, "ExecuteStatement", {"statement": statement}) == mapped(action)


def test_batch_execute_statement_unions_all_statements(mapper: EventActionMapper) -> None:
    request = {
        "requestItems": [
            {"statement": "UPDATE Music SET Album = ***(Redacted) WHERE Artist = 'a'"},
            {"statement": "INSERT INTO Music VALUE {'Artist' : ***(Redacted)}"},
            {"statement": "UPDATE Music SET x = 1 WHERE Artist = 'b'"},
        ]
    }
    result = mapper.map_with_request(DDB, "BatchExecuteStatement", request)
    assert result == mapped("dynamodb:PartiQLUpdate", "dynamodb:PartiQLInsert")


def test_partiql_unknown_verb_or_no_statement_is_unmapped(mapper: EventActionMapper) -> None:
    weird = mapper.map_with_request(DDB, "ExecuteTransaction", {"transactStatements": [{"statement": "EXISTS(x)"}]})
    assert weird.status == "unmapped" and "EXISTS" in weird.reason
    assert mapper.map_with_request(DDB, "ExecuteStatement", {"other": 1}).status == "unmapped"


def test_transact_write_items_counts_only_operations_present(mapper: EventActionMapper) -> None:
    everything = {
        "requestItems": [
            {"operation": "Put", "tableName": "Music"},
            {"operation": "Update", "tableName": "Music"},
            {"operation": "Delete", "TableName": "Music"},
            {"operation": "ConditionCheck", "TableName": "Music"},
        ]
    }
    assert mapper.map_with_request(DDB, "TransactWriteItems", everything) == mapped(
        "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"
    )
    only_put = {"requestItems": [{"operation": "Put"}, {"operation": "Put"}]}
    assert mapper.map_with_request(DDB, "TransactWriteItems", only_put) == mapped("dynamodb:PutItem")


def test_s3_version_id_selects_version_action(mapper: EventActionMapper) -> None:
    assert mapper.needs_request(S3, "GetObject")
    assert mapper.map(S3, "GetObject") == mapped("s3:GetObject")
    plain = {"bucketName": "b", "key": "k"}
    versioned = {"bucketName": "b", "key": "k", "versionId": "3HL4kqtJlcpXroDTDmJ"}
    assert mapper.map_with_request(S3, "GetObject", plain) == mapped("s3:GetObject")
    assert mapper.map_with_request(S3, "GetObject", versioned) == mapped("s3:GetObjectVersion")
    assert mapper.map_with_request(S3, "DeleteObject", versioned) == mapped("s3:DeleteObjectVersion")
    assert mapper.map_with_request(S3, "GetObject", None) == mapped("s3:GetObject")


def test_map_with_request_falls_back_to_map(mapper: EventActionMapper) -> None:
    assert mapper.map_with_request(S3, "CopyObject", {"x": 1}) == mapped("s3:GetObject", "s3:PutObject")


# --- implied PassRole and error codes ---------------------------------------------------------

ROLE_A = "arn:aws:iam::123456789012:role/service-role/exec-role"
ROLE_B = "arn:aws:iam::123456789012:role/task"
ROLE_C = "arn:aws-us-gov:iam::123456789012:role/events"


def test_passed_roles_nested(mapper: EventActionMapper) -> None:
    request = {
        "functionName": "f",
        "role": ROLE_A,
        "containerDefinitions": [{"name": "c"}],
        "taskRoleArn": ROLE_B,
        "executionRoleArn": ROLE_A,  # duplicates collapse
        "targets": [{"id": "1", "roleArn": ROLE_C, "arn": "arn:aws:lambda:us-east-1:123456789012:function:f"}],
        "ReplicationConfiguration": {"Role": ROLE_B, "Rules": []},
        "serviceRole": {"arn": "arn:aws:iam::123456789012:role/nested-under-role-key"},
    }
    assert mapper.passed_roles(request) == [
        ROLE_A,
        ROLE_B,
        ROLE_C,
        "arn:aws:iam::123456789012:role/nested-under-role-key",
    ]


def test_passed_roles_ignores_non_roles(mapper: EventActionMapper) -> None:
    request = {
        "iamInstanceProfile": {"arn": "arn:aws:iam::123456789012:instance-profile/web"},
        "policySourceArn": ROLE_A,  # a role ARN, but not under a role key: not a pass
        "roleName": "just-a-name",
        "roleSessionName": "s",
    }
    assert mapper.passed_roles(request) == []
    assert mapper.passed_roles(None) == []


def test_passed_roles_not_for_assume_role(mapper: EventActionMapper) -> None:
    request = {"roleArn": ROLE_A, "roleSessionName": "agent"}
    assert mapper.passed_roles(request, "sts.amazonaws.com", "AssumeRole") == []
    assert mapper.passed_roles(request, "lambda.amazonaws.com", "CreateFunction20150331") == [ROLE_A]


def test_passed_roles_depth_is_bounded(mapper: EventActionMapper) -> None:
    deep: dict = {"roleArn": ROLE_A}
    for _ in range(50):
        deep = {"role": deep}
    assert mapper.passed_roles(deep) == []


@pytest.mark.parametrize(
    ("code", "denied"),
    [
        ("AccessDenied", True),
        ("AccessDeniedException", True),
        ("accessdeniedexception", True),
        ("UnauthorizedOperation", True),
        ("Client.UnauthorizedOperation", True),
        ("AuthorizationError", True),
        ("NoSuchEntity", False),
        ("ThrottlingException", False),
        ("ResourceNotFoundException", False),
        ("", False),
        (None, False),
    ],
)
def test_is_denied_error(mapper: EventActionMapper, code: str | None, denied: bool) -> None:
    assert mapper.is_denied_error(code) is denied


# --- rule layering ----------------------------------------------------------------------------


def test_user_layer_extends_and_overrides(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "event_mapping.yaml").write_text(
        "version: 1\n"
        "event_sources: {my-proxy: s3}\n"
        "events:\n"
        "  s3.amazonaws.com: {HeadObject: [s3:GetObject, s3:GetObjectAttributes]}\n"
        "permissionless: ['ec2.amazonaws.com:DescribeRegions']\n"
        "denied_error_codes: [MyDenied]\n",
        encoding="utf-8",
    )
    mapper = EventActionMapper.from_rules(ruleset.load([tmp_path]), catalog)
    assert mapper.map(S3, "HeadObject") == mapped("s3:GetObject", "s3:GetObjectAttributes")
    assert mapper.map(S3, "ListBuckets") == mapped("s3:ListAllMyBuckets")  # shipped entries kept
    assert mapper.map("my-proxy.amazonaws.com", "PutObject") == mapped("s3:PutObject")
    assert mapper.map("ec2.amazonaws.com", "DescribeRegions").status == "permissionless"
    assert mapper.is_denied_error("MyDenied") and mapper.is_denied_error("AccessDenied")


def test_typo_in_rule_file_is_an_error(tmp_path: Path, catalog: Catalog) -> None:
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "event_mapping.yaml").write_text(
        "version: 1\nevents:\n  s3.amazonaws.com: {HeadObject: [s3:GetObjekt]}\n", encoding="utf-8"
    )
    with pytest.raises(RuleError, match="s3:GetObjekt"):
        EventActionMapper.from_rules(ruleset.load([tmp_path]), catalog)


# --- trailscraper-style sanity test -----------------------------------------------------------


def test_every_botocore_operation_maps_to_catalog_actions(catalog: Catalog) -> None:
    report = coverage_report(catalog, RULES)
    print(
        f"\nCloudTrail->IAM mapping coverage: {report['share']:.2%} of {report['total']} botocore operations "
        f"({report['mapped']} mapped, {report['permissionless']} permissionless, {report['unmapped']} unmapped; "
        f"{report['catalog']})"
    )
    assert report["not_in_catalog"] == []
    assert report["share"] >= 0.95, report["top_unmapped_sources"]


@settings(max_examples=300, deadline=None)
@given(
    source=st.sampled_from([S3, DDB, "lambda.amazonaws.com", "apigateway.amazonaws.com", "x.amazonaws.com"]),
    name=st.text(max_size=40),
)
def test_map_never_raises_and_never_invents(
    mapper: EventActionMapper, catalog: Catalog, source: str, name: str
) -> None:
    result = mapper.map(source, name)
    assert result.status in ("mapped", "permissionless", "unmapped")
    if result.status == "mapped":
        assert result.actions and all(a in catalog.access_levels for a in result.actions)
    else:
        assert result.actions == ()
    request_result = mapper.map_with_request(source, name, {"statement": name, "versionId": name})
    assert all(a in catalog.access_levels for a in request_result.actions)
