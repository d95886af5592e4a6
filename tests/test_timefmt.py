"""parse_iso reads the canonical form itself and must agree with strptime on every string."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from auditor.timefmt import ISO_FORMAT, iso_utc, parse_iso


def _strptime(value: str) -> datetime | str:
    try:
        return datetime.strptime(value, ISO_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        return str(exc)


def _parsed(value: str) -> datetime | str:
    try:
        return parse_iso(value)
    except ValueError as exc:
        return str(exc)


#: Strings shaped like the canonical form, each character drawn from what is or is almost valid there.
_NEAR = st.lists(st.sampled_from("0123456789-:TZ+ .a٣"), min_size=20, max_size=20).map("".join)
_SHAPED = st.tuples(*(st.sampled_from("0123456789a") if c == "9" else st.just(c) for c in "9999-99-99T99:99:99Z")).map(
    "".join
)


@given(st.one_of(_NEAR, _SHAPED, st.text(max_size=24)))
@example("2026-11-03T12:00:00Z")
@example("2026-02-29T12:00:00Z")  # not a leap year
@example("2026-11-03T23:59:60Z")  # strptime reads the second, datetime refuses it
@example("2026-11-03 12:00:00Z")
@example("2026-11-03T12:00:00+")
@example("٢٠٢٦-11-03T12:00:00Z")  # digits strptime reads and fromisoformat does not
def test_parse_iso_agrees_with_strptime(value):
    parsed = _parsed(value)
    assert parsed == _strptime(value)
    if isinstance(parsed, datetime):
        assert parsed.tzinfo is UTC


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_parse_iso_reads_back_what_iso_utc_writes(moment):
    """(strftime writes years before 1000 unpadded, which neither reads.)"""
    moment = moment.replace(microsecond=0, tzinfo=UTC)
    assert parse_iso(iso_utc(moment)) == moment
