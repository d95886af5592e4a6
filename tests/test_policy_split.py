"""Splitting least-privilege policies at the managed-policy size limit."""

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.aws_policy import allows
from auditor.catalog import aws_catalog
from auditor.emit.aws_policy import MANAGED_POLICY_LIMIT, pack

ACTIONS = sorted(aws_catalog().access_levels)

statement = st.builds(
    lambda i, actions, arn: {"Sid": f"S{i}", "Effect": "Allow", "Action": sorted(set(actions)), "Resource": arn},
    st.integers(0, 10**6),
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=600),
    st.sampled_from(["*", "arn:aws:s3:::bucket/*", "arn:aws:dynamodb:us-east-1:123456789012:table/T"]),
)
deny = {"Sid": "CarriedDeny0", "Effect": "Deny", "Action": ["s3:DeleteBucket"], "Resource": "*"}


@settings(max_examples=40, deadline=None)
@given(st.lists(statement, min_size=1, max_size=6), st.booleans())
def test_every_document_fits_and_together_they_allow_the_same(statements, with_deny):
    denies = [deny] if with_deny else []
    documents = pack(statements, denies)
    for document in documents:
        assert len(orjson.dumps(document)) <= MANAGED_POLICY_LIMIT
        assert document["Version"] == "2012-10-17"
        if with_deny:
            assert deny in document["Statement"]
    for stmt in statements:
        for action in stmt["Action"][:50]:
            if with_deny and action == "s3:DeleteBucket":
                continue
            assert any(allows([d], action, stmt["Resource"]) for d in documents)
    kept = {a for d in documents for s in d["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}
    assert kept == {a for s in statements for a in s["Action"]}


def test_nothing_at_all_gives_no_document_and_denies_alone_stay_in_force():
    assert pack([], []) == []  # AWS rejects a policy without statements
    (only,) = pack([], [deny])  # a dormant identity keeps its explicit denies (denies.json)
    assert only == {"Version": "2012-10-17", "Statement": [deny]}
