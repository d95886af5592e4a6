"""Secrets out of a tool call's parameters before a human (or a database) sees them.

One function for the guard and the queue: the guard redacts what it sends, the queue redacts again
what it stores, so a guard that missed a secret still does not write it to disk. Redaction is by
name (a parameter called ``password``, ``apiKey``, ``Authorization``, ...) and by value (bearer
tokens, PEM private keys, JWTs, AWS secret-key-like strings, passwords in connection strings and
``key=value`` strings), applied at any depth. A bare ``key`` is not a secret name (an S3 object key,
a KMS key id): its value is still scanned. Standard library only: the guard runs inside the agent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"
MAX_DEPTH = 16
MAX_STRING = 8192
MAX_ITEMS = 1000

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "credential",
        "credentials",
        "authorization",
        "cookie",
        "cookies",
        "signature",
        "sas",
        "apikey",
        "privatekey",
        "secretkey",
        "accesskey",
    }
)
# "key" is a secret word only after one of these (apiKey, access_key, AccountKey, x-api-key).
KEY_QUALIFIERS = frozenset(
    {"api", "access", "secret", "private", "signing", "encryption", "session", "ssh", "master", "account", "auth"}
    | {"client", "shared", "subscription", "storage", "license", "webhook", "primary", "secondary", "sas"}
)

_NAME_PART = (
    r"password|passwd|pwd|passphrase|secret|token|accountkey|sharedaccesskey|sharedaccesssignature|"
    r"api[_-]?key|access[_-]?key|private[_-]?key|credential|\bsig\b"
)


def _keep_quotes(match: re.Match[str]) -> str:
    """The name and separator as they were; the value redacted inside its quotes, if any."""
    value = match.group(2)
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group(1)}{quote}{REDACTED}{quote}"


_VALUE_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # PEM private keys, also cut short (no END line).
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|\Z)", re.S
        ),
        REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"), REDACTED),  # JWT
    # scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*):[^@/\s]+@"), rf"\1:{REDACTED}@"),
    # password=...; AccountKey=...; "client_secret": "..."; aws_secret_access_key VALUE; --password VALUE
    (
        re.compile(
            rf"(?i)(?<![\w.-])([\w.-]*?(?:{_NAME_PART})[\w.-]*[\"']?\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^;&\s,\"']+)"
        ),
        _keep_quotes,
    ),
    (
        re.compile(
            rf"(?i)(?<![\w.-])((?:--?[\w-]*?|\w*_)(?:{_NAME_PART})[\w-]*\s+)(?![-=:\[])(\"[^\"]*\"|'[^']*'|[^;&\s,]+)"
        ),
        _keep_quotes,
    ),
    (re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{86}=="), REDACTED),  # an Azure storage account key
    # Well-known token shapes: GitHub, Slack, OpenAI/Anthropic/Stripe-style, Google API keys.
    (
        re.compile(
            r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|"
            r"sk-[A-Za-z0-9_-]{16,}|[rs]k_(live|test)_[A-Za-z0-9]{10,}|AIza[0-9A-Za-z_-]{35})"
        ),
        REDACTED,
    ),
    # An AWS secret access key: 40 base64 characters mixing cases and digits (not a hex digest).
    (
        re.compile(
            r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[a-z])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}\d)"
            r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
        ),
        REDACTED,
    ),
)


def secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` holds a secret, by its words (camelCase, snake, kebab)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    joined = "".join(words)
    if any(w in SECRET_WORDS for w in words) or any(s in joined for s in ("password", "secret", "apikey")):
        return True
    return any(w == "key" and i > 0 and words[i - 1] in KEY_QUALIFIERS for i, w in enumerate(words))


def redact_text(text: str) -> str:
    """``text`` with every secret-looking part replaced by ``[redacted]``, cut at ``MAX_STRING``."""
    for pattern, replacement in _VALUE_PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_STRING:
        kept = MAX_STRING - 40
        text = f"{text[:kept]}…[{len(text) - kept} more characters]"
    return text


def redact(value: Any, _depth: int = 0) -> Any:
    """A JSON-ready copy of ``value`` with secrets replaced, at most ``MAX_DEPTH`` deep and
    ``MAX_ITEMS`` entries per container (the rest summarized); bytes and unknown objects become
    descriptions, never their contents."""
    if _depth > MAX_DEPTH:
        return "[too deep]"
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"[{len(value)} bytes]"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i == MAX_ITEMS:
                out["…"] = f"[{len(value) - MAX_ITEMS} more entries]"
                break
            name = redact_text(str(key))
            out[name] = REDACTED if secret_name(str(key)) and item not in (None, "") else redact(item, _depth + 1)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        items = list(value)
        out_list = [redact(item, _depth + 1) for item in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            out_list.append(f"[{len(items) - MAX_ITEMS} more items]")
        return out_list
    return f"[{type(value).__name__}]"
