"""Grant expansion against known catalog facts: wildcards, NotAction, Deny, boundaries, conditions."""

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.catalog import Catalog, aws_catalog
from auditor.diff import Statement, effective_grants


def stmt(actions, effect="Allow", layer="identity", not_action=False, resources=("*",), condition=None, source="p"):
    return Statement(
        layer=layer,
        effect=effect,
        actions=tuple(actions),
        not_action=not_action,
        resources=tuple(resources),
        not_resource=False,
        condition=condition,
        source=source,
        source_kind="inline",
        policy=source,
    )


def effective(*statements):
    expansion = effective_grants(list(statements), aws_catalog())
    return set(expansion.granted), expansion.removed_by_deny, expansion.removed_by_boundary


def test_service_prefix_wildcard_matches_only_that_prefix():
    granted, _, _ = effective(stmt(["s3:Get*"]))
    assert {"s3:GetObject", "s3:GetBucketPolicy", "s3:GetObjectVersion"} <= granted
    assert "s3:PutObject" not in granted
    assert all(a.startswith("s3:Get") for a in granted)


def test_matching_is_case_insensitive_and_returns_catalog_spelling():
    granted, _, _ = effective(stmt(["S3:getobject", "DYNAMODB:query"]))
    assert granted == {"s3:GetObject", "dynamodb:Query"}


def test_star_is_the_whole_catalog():
    granted, _, _ = effective(stmt(["*"]))
    assert granted == set(aws_catalog().access_levels)


def test_not_action_grants_everything_else():
    granted, _, _ = effective(stmt(["iam:*", "organizations:*"], not_action=True))
    assert "iam:PassRole" not in granted and "organizations:LeaveOrganization" not in granted
    assert {"s3:GetObject", "ec2:TerminateInstances"} <= granted
    assert len(granted) == len(aws_catalog()) - len(aws_catalog().expand(["iam:*", "organizations:*"]))


def test_question_mark_matches_one_character():
    granted, _, _ = effective(stmt(["s3:?etObject"]))
    assert granted == {"s3:GetObject"}


def test_unconditional_deny_removes_and_is_recorded():
    granted, by_deny, _ = effective(stmt(["s3:*"]), stmt(["s3:Delete*"], effect="Deny", source="deny-policy"))
    assert "s3:DeleteBucket" not in granted and "s3:DeleteObject" not in granted
    assert by_deny["s3:DeleteBucket"] == "deny-policy"
    assert "s3:GetObject" in granted


def test_deny_with_condition_or_narrow_resource_does_not_remove():
    granted, by_deny, _ = effective(
        stmt(["s3:*"]),
        stmt(["s3:DeleteBucket"], effect="Deny", condition='{"Bool": {"aws:MultiFactorAuthPresent": "false"}}'),
        stmt(["s3:DeleteObject"], effect="Deny", resources=("arn:aws:s3:::vault/*",)),
    )
    assert {"s3:DeleteBucket", "s3:DeleteObject"} <= granted
    assert not by_deny
    expansion = effective_grants(
        [stmt(["s3:*"]), stmt(["s3:DeleteObject"], effect="Deny", resources=("arn:aws:s3:::vault/*",), source="d")],
        aws_catalog(),
    )
    (partial,) = expansion.granted["s3:DeleteObject"].partial_denies  # kept, and the partial deny recorded
    assert partial.source == "d"


def test_boundary_caps_the_grant():
    granted, _, by_boundary = effective(
        stmt(["*"]), stmt(["s3:Get*", "s3:List*", "athena:*"], layer="boundary", source="boundary")
    )
    assert granted == aws_catalog().expand(["s3:Get*", "s3:List*", "athena:*"])
    assert "iam:CreateUser" in by_boundary


def test_boundary_alone_grants_nothing():
    granted, _, _ = effective(stmt(["*"], layer="boundary"))
    assert granted == set()


def test_unknown_exact_action_is_kept_as_written():
    granted, _, _ = effective(stmt(["newservice:BrandNewAction"]))
    assert granted == {"newservice:BrandNewAction"}


def test_boundary_records_which_statement_lets_each_permission_through():
    expansion = effective_grants(
        [stmt(["s3:*"]), stmt(["s3:Get*"], layer="boundary", source="b1"), stmt(["s3:List*"], layer="boundary")],
        aws_catalog(),
    )
    assert {c.source for c in expansion.granted["s3:GetObject"].caps} == {"b1"}
    assert expansion.boundary_sources == ["b1", "p"]
    assert "s3:PutObject" in expansion.removed_by_boundary


def test_conditional_grant_keeps_its_statement():
    condition = '{"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}'
    expansion = effective_grants([stmt(["ec2:RunInstances"], condition=condition)], aws_catalog())
    (grant,) = expansion.granted["ec2:RunInstances"].statements
    assert grant.condition == condition and grant.condition_json() == {
        "StringEquals": {"aws:RequestedRegion": "eu-west-1"}
    }


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(sorted(aws_catalog().access_levels)) | st.text(alphabet="abcAZ:./*-", max_size=12),
        max_size=40,
    )
)
def test_classified_gives_each_permission_its_service_and_access_level(names):
    catalog = aws_catalog()
    frame = catalog.classified(pl.Series(names, dtype=pl.Utf8))
    assert frame.rows() == [(n, catalog.service_of(n), catalog.access_level(n)) for n in names]


def test_classified_asks_level_of_for_names_the_catalog_does_not_list():
    catalog = Catalog("gcp", {"storage.objects.get": "Read"}, "test", service_separator=".", level_of=lambda n: "Write")
    frame = catalog.classified(pl.Series(["storage.objects.get", "storage.objects.delete", "Storage.Buckets.List"]))
    assert frame.rows() == [
        ("storage.objects.get", "storage", "Read"),
        ("storage.objects.delete", "storage", "Write"),
        ("Storage.Buckets.List", "storage", "Write"),
    ]


_SERVICES = ["s3", "S3", "iam", "ec2", "dynamodb", "*", "s?"]
_TAILS = ["*", "**", "Get*", "get*object", "*Bucket*", "?etObject", "PutObject", "Delete*"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_SERVICES), st.sampled_from(_TAILS)), min_size=1, max_size=4), st.booleans())
def test_expansion_matches_each_pattern_against_every_catalog_name(parts, star_alone):
    """Expanding globs (whole-service and whole-catalog ones take a shortcut) gives exactly the catalog
    names some pattern matches, case-insensitively, IAM style."""
    from auditor.matching import matches

    catalog = aws_catalog()
    patterns = [f"{service}:{tail}" for service, tail in parts] + (["*"] if star_alone else [])
    expected = {name for name in catalog.access_levels if any(matches(p, name) for p in patterns)}
    expected |= {p for p in patterns if "*" not in p and "?" not in p and catalog.canonical(p) is None}
    assert catalog.expand(patterns) == expected
