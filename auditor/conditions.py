"""Can a policy condition still be true? AWS ``Condition`` blocks and GCP IAM condition expressions.

Only what is decidable from the policy alone and the clock is decided: request-time bounds
(``aws:CurrentTime`` / ``aws:EpochTime``, GCP ``request.time``), the issue time of session tokens,
and keys whose value the caller supplies in ``context`` (e.g. ``iam:PassedToService`` when asking
whether a role can be passed to one service). Everything that depends on the request (source IP,
tags, MFA, resource names, ...) is ``unknown``: shown to the reader, never assumed away.

A condition is evaluated over every request time from ``now`` on: ``never`` when no such request
can satisfy it, ``always`` when every one does, ``unknown`` otherwise. Odd input never raises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from auditor.matching import matches, resource_matches

Status = Literal["never", "unknown", "always"]

_INF = 1 << 62
_SECOND = 1_000_000
#: Longest life of temporary credentials (``sts:GetSessionToken``, 36 hours): older tokens are dead.
MAX_SESSION = timedelta(hours=36)
_TIME_KEYS = frozenset({"aws:currenttime", "aws:epochtime"})
_TOKEN_TIME = "aws:tokenissuetime"


@dataclass(frozen=True)
class Verdict:
    """Whether a condition can be true from ``now`` on, and a one-line reason."""

    status: Status
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", " ".join(self.reason.split()))


ALWAYS = Verdict("always", "no condition")

# --- sets of request times: sorted disjoint closed intervals of integer microseconds -------------

Spans = tuple[tuple[int, int], ...]
_ALL: Spans = ((-_INF, _INF),)
_NONE: Spans = ()


def _union(a: Spans, b: Spans) -> Spans:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(a + b):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _intersect(a: Spans, b: Spans) -> Spans:
    out = [(max(lo, lo2), min(hi, hi2)) for lo, hi in a for lo2, hi2 in b]
    return tuple(sorted((lo, hi) for lo, hi in out if lo <= hi))


def _complement(a: Spans) -> Spans:
    out: list[tuple[int, int]] = []
    start = -_INF
    for lo, hi in a:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _INF:
        out.append((start, _INF))
    return tuple(out)


def _covers(a: Spans, b: Spans) -> bool:
    return _union(_intersect(a, b), ()) == _union(b, ())


@dataclass(frozen=True)
class _Truth:
    """Three-valued truth over request time: where it is surely true, and where it may be."""

    sure: Spans
    maybe: Spans

    def __and__(self, other: _Truth) -> _Truth:
        return _Truth(_intersect(self.sure, other.sure), _intersect(self.maybe, other.maybe))

    def __or__(self, other: _Truth) -> _Truth:
        return _Truth(_union(self.sure, other.sure), _union(self.maybe, other.maybe))

    def __invert__(self) -> _Truth:
        return _Truth(_complement(self.maybe), _complement(self.sure))


_TRUE = _Truth(_ALL, _ALL)
_FALSE = _Truth(_NONE, _NONE)
_UNKNOWN = _Truth(_NONE, _ALL)


def _exact(spans: Spans) -> _Truth:
    return _Truth(spans, spans)


@dataclass
class _Notes:
    """What the reason line will say."""

    unknown: list[str]
    timed: list[str]
    false: list[str]


# --- time values -------------------------------------------------------------------------------


def _micros(moment: datetime) -> int:
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _SECOND + delta.microseconds


def _parse_time(value: Any) -> int | None:
    """Microseconds since the epoch of an ISO 8601 date or epoch seconds; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value * _SECOND) if abs(value) < 1e13 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return _parse_time(float(text))
    try:
        return _micros(datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        return None


def _show(micros: int) -> str:
    try:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    except OverflowError:
        return "the end of time" if micros > 0 else "the beginning of time"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _compare(op: str, value: int) -> Spans:
    """Request times ``t`` with ``t <op> value``."""
    return {
        "<": ((-_INF, value - 1),),
        "<=": ((-_INF, value),),
        ">": ((value + 1, _INF),),
        ">=": ((value, _INF),),
        "==": ((value, value),),
        "!=": _complement(((value, value),)),
    }[op]


# --- AWS -------------------------------------------------------------------------------------------

_DATE_OPS = {
    "datelessthan": "<",
    "datelessthanequals": "<=",
    "dategreaterthan": ">",
    "dategreaterthanequals": ">=",
    "dateequals": "==",
    "datenotequals": "!=",
}
_STRING_OPS = {
    "stringequals": (False, False, True),  # (negated, glob, case-sensitive)
    "stringnotequals": (True, False, True),
    "stringequalsignorecase": (False, False, False),
    "stringnotequalsignorecase": (True, False, False),
    "stringlike": (False, True, True),
    "stringnotlike": (True, True, True),
    "arnequals": (False, True, True),
    "arnlike": (False, True, True),
    "arnnotequals": (True, True, True),
    "arnnotlike": (True, True, True),
}


def _values(raw: Any) -> list[Any]:
    return list(raw) if isinstance(raw, list) else [raw]


def _date_atom(op: str, key: str, raw: Any, text: str, now: int, if_exists: bool, notes: _Notes) -> _Truth:
    values = [_parse_time(v) for v in _values(raw)]
    if not values or any(v is None for v in values):
        notes.unknown.append(f"{text} (unreadable date)")
        return _UNKNOWN
    symbol = _DATE_OPS[op.lower()]
    # Several values of one key are OR-ed; for the negated operator that means "none of them".
    spans = _ALL if symbol == "!=" else _NONE
    for value in values:
        one = _compare(symbol, value or 0)
        spans = _intersect(spans, one) if symbol == "!=" else _union(spans, one)
    if key.lower() in _TIME_KEYS:
        notes.timed.append(text)
        return _exact(spans)
    # aws:TokenIssueTime: live temporary credentials were issued after now - MAX_SESSION; long-term
    # keys carry no issue time, so the condition is false for them unless it says IfExists.
    live = _intersect(spans, ((now - int(MAX_SESSION.total_seconds()) * _SECOND, _INF),))
    if not live and not if_exists:
        notes.false.append(f"{text}: no live session token was issued then")
        return _FALSE
    notes.unknown.append(text)
    return _UNKNOWN


def _string_atom(op: str, value: str, raw: Any, text: str, notes: _Notes) -> _Truth:
    negated, glob, case_sensitive = _STRING_OPS[op.lower()]
    wanted = [v for v in _values(raw) if isinstance(v, str)]
    if len(wanted) != len(_values(raw)):
        notes.unknown.append(f"{text} (unreadable value)")
        return _UNKNOWN
    if glob:
        hit = any(resource_matches(w, value) if case_sensitive else matches(w, value) for w in wanted)
    else:
        hit = any(w == value if case_sensitive else w.lower() == value.lower() for w in wanted)
    if hit != negated:
        return _TRUE
    notes.false.append(f"{text} is false for {value}")
    return _FALSE


def _aws_atom(operator: str, key: str, raw: Any, now: int, context: Mapping[str, str], notes: _Notes) -> _Truth:
    base = operator.split(":", 1)[-1]
    if_exists = base.lower().endswith("ifexists")
    op = base[: -len("IfExists")] if if_exists else base
    text = f"{key} {op} {', '.join(str(v) for v in _values(raw))}"
    qualified = ":" in operator
    if not qualified and op.lower() in _DATE_OPS and key.lower() in (*_TIME_KEYS, _TOKEN_TIME):
        return _date_atom(op, key, raw, text, now, if_exists, notes)
    known = {k.lower(): v for k, v in context.items()}
    if not qualified and op.lower() in _STRING_OPS and key.lower() in known:
        return _string_atom(op, known[key.lower()], raw, text, notes)
    notes.unknown.append(text)
    return _UNKNOWN


def _aws_truth(block: Mapping[str, Any], now: int, context: Mapping[str, str], notes: _Notes) -> _Truth:
    """A Condition block: every operator, every key in it must hold (values of one key are OR-ed)."""
    truth = _TRUE
    for operator, keys in block.items():
        if not isinstance(operator, str) or not isinstance(keys, Mapping):
            notes.unknown.append(f"unreadable condition operator {operator!r}")
            truth &= _UNKNOWN
            continue
        for key, raw in keys.items():
            truth &= _aws_atom(operator, str(key), raw, now, context, notes)
    return truth


# --- GCP (CEL) ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')|(?P<op>&&|\|\||<=|>=|==|!=|<|>|!|\(|\))"
    r"|(?P<word>[^\s\"'&|<>=!()]+))"
)
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class _CelError(ValueError):
    """An expression this reader cannot tokenize or whose parentheses do not balance."""


def _tokens(expression: str) -> list[tuple[str, int, int]]:
    """(token, start, end) of every token of ``expression``."""
    tokens: list[tuple[str, int, int]] = []
    position = 0
    while expression[position:].strip():
        match = _TOKEN.match(expression, position)
        if match is None:
            raise _CelError(f"cannot read {expression[position:][:20].strip()!r}")
        group = match.lastgroup or "word"
        tokens.append((match.group(group), match.start(group), match.end(group)))
        position = match.end()
    return tokens


class _Cel:
    """Recursive-descent reader of ``&&`` / ``||`` / ``!`` / parentheses over comparison atoms."""

    def __init__(self, expression: str, notes: _Notes) -> None:
        self.expression = expression
        self.tokens = _tokens(expression)
        self.at = 0
        self.notes = notes

    def peek(self, offset: int = 0) -> str | None:
        index = self.at + offset
        return self.tokens[index][0] if index < len(self.tokens) else None

    def source(self, start: int) -> str:
        """The expression text of the tokens from ``start`` to the current one."""
        return self.expression[self.tokens[start][1] : self.tokens[self.at - 1][2]]

    def parse(self) -> _Truth:
        truth = self.disjunction()
        if self.peek() is not None:
            raise _CelError(f"unexpected {self.peek()!r}")
        return truth

    def disjunction(self) -> _Truth:
        truth = self.conjunction()
        while self.peek() == "||":
            self.at += 1
            truth |= self.conjunction()
        return truth

    def conjunction(self) -> _Truth:
        truth = self.unary()
        while self.peek() == "&&":
            self.at += 1
            truth &= self.unary()
        return truth

    def unary(self) -> _Truth:
        if self.peek() == "!":
            self.at += 1
            return ~self.unary()
        if self.peek() == "(":
            self.at += 1
            truth = self.disjunction()
            if self.peek() != ")":
                raise _CelError("unbalanced parentheses")
            self.at += 1
            return truth
        return self.time_comparison() or self.other()

    def operand(self) -> tuple[str, int | None] | None:
        """``request.time`` or ``timestamp("...")``, consumed; None (nothing consumed) otherwise."""
        if self.peek() == "request.time":
            self.at += 1
            return ("time", None)
        literal = self.peek(2)
        if self.peek() == "timestamp" and self.peek(1) == "(" and self.peek(3) == ")" and literal:
            value = _parse_time(literal[1:-1]) if literal[0] in "\"'" else None
            if value is not None:
                self.at += 4
                return ("const", value)
        return None

    def time_comparison(self) -> _Truth | None:
        start = self.at
        left = self.operand()
        op = self.peek()
        if left is not None and op in _FLIP:
            self.at += 1
            right = self.operand()
            if right is not None and {left[0], right[0]} == {"time", "const"}:
                symbol, value = (op, right[1]) if left[0] == "time" else (_FLIP[op], left[1])
                self.notes.timed.append(self.source(start))
                return _exact(_compare(symbol, value or 0))
        self.at = start
        return None

    def other(self) -> _Truth:
        """Any other atom (function calls, resource names ...): consumed up to the next operator."""
        start, depth = self.at, 0
        while (token := self.peek()) is not None and not (depth == 0 and token in ("&&", "||", ")")):
            depth += {"(": 1, ")": -1}.get(token, 0)
            self.at += 1
        if self.at == start:
            raise _CelError(f"expected an expression at {token!r}")
        self.notes.unknown.append(self.source(start))
        return _UNKNOWN


# --- verdicts ------------------------------------------------------------------------------------


def _verdict(truth: _Truth, now: int, notes: _Notes) -> Verdict:
    future: Spans = ((now, _INF),)
    maybe = _intersect(truth.maybe, future)
    if not maybe:
        if notes.false:
            return Verdict("never", "never true: " + "; ".join(notes.false))
        return Verdict("never", f"no request from {_show(now)} on can satisfy: " + "; ".join(notes.timed))
    if _covers(truth.sure, future):
        return Verdict("always", "true for every request from now on")
    parts = []
    if notes.unknown:
        parts.append("depends on the request: " + "; ".join(notes.unknown))
    if maybe != future:
        parts.append(_window(maybe))
    return Verdict("unknown", "; ".join(parts))


def _window(maybe: Spans) -> str:
    lo, hi = maybe[0][0], maybe[-1][1]
    if len(maybe) == 1 and hi >= _INF:
        return f"true only from {_show(lo)}"
    if len(maybe) == 1:
        return f"true only before {_show(hi + 1)}"
    return f"true only at some times between {_show(lo)} and {_show(hi)}"


def _decode(condition: Any) -> Any:
    if isinstance(condition, str):
        try:
            return json.loads(condition)
        except ValueError:
            return condition
    return condition


def aws_condition(block: Any, now: datetime, context: Mapping[str, str] | None = None) -> Verdict:
    """Verdict on an AWS ``Condition`` block (dict or JSON text) for requests from ``now`` on."""
    block = _decode(block)
    if block is None or block == {}:
        return ALWAYS
    if not isinstance(block, Mapping):
        return Verdict("unknown", "unreadable condition")
    notes = _Notes([], [], [])
    return _verdict(_aws_truth(block, _micros(now), context or {}, notes), _micros(now), notes)


def gcp_condition(condition: Any, now: datetime) -> Verdict:
    """Verdict on a GCP IAM condition ``{"expression": CEL, "title": ...}`` (dict or JSON text)."""
    condition = _decode(condition)
    if condition is None or condition == {}:
        return ALWAYS
    expression = condition.get("expression") if isinstance(condition, Mapping) else None
    if not isinstance(expression, str) or not expression.strip():
        return Verdict("unknown", "condition without a readable expression")
    notes = _Notes([], [], [])
    try:
        truth = _Cel(expression, notes).parse()
    except _CelError as exc:
        return Verdict("unknown", f"unsupported expression ({exc})")
    return _verdict(truth, _micros(now), notes)


def evaluate(condition: Any, now: datetime, context: Mapping[str, str] | None = None) -> Verdict:
    """Verdict on either kind: a mapping with an ``expression`` is GCP, anything else AWS."""
    decoded = _decode(condition)
    if isinstance(decoded, Mapping) and isinstance(decoded.get("expression"), str):
        return gcp_condition(decoded, now)
    return aws_condition(decoded, now, context)
