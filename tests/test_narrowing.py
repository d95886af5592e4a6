"""Narrowing rules generalize a seen ARN exactly as the regular expression's own replacement would."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from conftest import RULES
from hypothesis import example, given
from hypothesis import strategies as st

from auditor.narrowing import NarrowingRules, _expander

SHIPPED = yaml.safe_load((Path(__file__).parent.parent / "rules" / "aws" / "narrowing.yaml").read_text())["generalize"]

_ARNS = st.one_of(
    st.builds(
        "arn:{}:s3:::{}/{}".format,
        st.sampled_from(["aws", "aws-cn", "aws-us-gov"]),
        st.from_regex(r"[a-z0-9.-]{3,20}", fullmatch=True),
        st.text(max_size=20),
    ),
    st.builds(
        "arn:aws:dynamodb:us-east-1:123456789012:table/{}/{}/{}".format,
        st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True),
        st.sampled_from(["index", "stream", "other"]),
        st.text(max_size=12),
    ),
    st.builds(
        "arn:aws:s3:us-east-1:123456789012:accesspoint/{}/object/{}".format,
        st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True),
        st.text(max_size=12),
    ),
    st.text(max_size=40),
)


def _by_re(arn: str) -> str:
    """The first shipped rule that matches, applied by ``re`` itself; the ARN when none does."""
    for rule in SHIPPED:
        match = re.match(rule["pattern"], arn)
        if match:
            return match.expand(rule["replace"])
    return arn


@given(_ARNS)
@example("arn:aws:s3:::bucket/key/with/slashes")
@example("arn:aws:dynamodb:us-east-1:123456789012:table/T/index/by-date")
@example("arn:aws:s3:::bucket")
def test_the_shipped_rules_generalize_as_re_would(arn):
    assert NarrowingRules.of(RULES).apply(arn) == _by_re(arn)


_PIECES = st.lists(st.one_of(st.sampled_from(["\\1", "\\2", "\\0"]), st.text("ab/*:-", max_size=4)), max_size=5)


@given(_PIECES, st.text("xy/", max_size=8), st.text("xy/", max_size=8))
@example(["\\0", ":"], "x", "y")
@example(["\\2", "\\1"], "x", "y")
def test_any_replacement_expands_as_re_would(pieces, first, second):
    replacement = "".join(pieces)
    match = re.fullmatch(r"([^/]*)/(.*)", f"{first}/{second}")
    assert match is not None
    assert _expander(replacement)(match) == match.expand(replacement.replace("\\0", "\\g<0>"))
