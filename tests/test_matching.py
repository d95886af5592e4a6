"""Permission globs: the search form polars runs finds exactly the names the globs match whole."""

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor.matching import any_glob_search, matches

# Few characters, so that globs and names meet often; ":" and "." are what separators look like.
_GLOB = st.text(alphabet="aAb:.*?", max_size=7)
_NAME = st.text(alphabet="aAb:.x\n", max_size=8)


@settings(max_examples=400, deadline=None)
@given(st.lists(_GLOB, max_size=4), st.lists(_NAME, min_size=1, max_size=12))
def test_the_search_form_finds_exactly_the_names_some_glob_matches(globs, names):
    found = pl.Series(names, dtype=pl.Utf8).str.contains(f"(?is){any_glob_search(globs)}").to_list()
    assert found == [any(matches(g, n) for g in globs) for n in names]


def test_leading_and_trailing_stars_become_a_search_and_the_rest_stays_anchored():
    search = any_glob_search(["*:Delete*", "s3:Get*", "*Object", "iam:PassRole"])
    assert search == "(?::Delete|Object$|^iam:PassRole$|^s3:Get)"
    assert any_glob_search([]) == r"[^\s\S]"  # matches nothing, without a look-ahead polars lacks
