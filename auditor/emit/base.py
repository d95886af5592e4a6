"""What every least-privilege emitter shares: the output types, which permissions are kept, where each
identity's files go, and shell commands whose every value is quoted.

Each identity gets its own folder, ``policies/<provider>/<account>/<kind>/<name>/``, with fixed
file names inside it; folders sit at the same depth, and names that would meet (case, characters a
file name cannot hold, length) get a hash of the identity, so no two identities can share a file.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
import shlex
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import orjson
import polars as pl

if TYPE_CHECKING:
    from auditor.audit import AuditResult

K = TypeVar("K", bound=Hashable)

#: Characters kept in file names; anything else becomes "_" (and the name gets a hash).
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+=,-]+")
MAX_NAME = 80  # bytes of one path component we write (file systems allow 255)


@dataclass(frozen=True)
class PolicyFile:
    path: str  # relative to the output directory
    content: str


@dataclass(frozen=True)
class KeptPermission:
    """A permission row of the diff that the least-privilege output keeps."""

    action: str
    state: str  # used | unobservable
    resources_seen: tuple[str, ...]
    narrowable: bool
    reason: str | None = None  # why unobservable


@dataclass
class IdentityPolicies:
    """The least-privilege output for one identity: files, the commands that apply them, notes."""

    provider: str
    account: str
    identity: str
    name: str
    folder: str
    files: list[PolicyFile] = field(default_factory=list)
    apply: list[str] = field(default_factory=list)  # commands that apply the plan, in order
    exceptions: list[str] = field(default_factory=list)  # commands to keep what the logs cannot show
    kept_unobservable: list[dict[str, str]] = field(default_factory=list)
    dormant: bool = False
    note: str | None = None
    alternative: str | None = None  # a smaller predefined grant that covers what was used, if any
    enforce: list[str] = field(default_factory=list)  # commands that make the cloud enforce the blocklist
    enforce_note: str | None = None


#: One emitter per provider: (result, that provider's audits' folders) -> their outputs.
PolicyEmitter = Callable[["AuditResult", Mapping[str, str]], list[IdentityPolicies]]
_EMITTERS: dict[str, PolicyEmitter] = {}


def register(provider: str, emitter: PolicyEmitter) -> None:
    """Make ``emitter`` write the least-privilege outputs of ``provider`` identities."""
    _EMITTERS[provider] = emitter


def _discover() -> None:
    """Import every module of this package once: each emitter registers itself."""
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"auditor.emit.{module.name}")


def short_name(provider: str, account: str, identity: str, name: str) -> str:
    """The human part of an identity's folder name: the role / user name, a service account's
    local part when it belongs to the project, the last segment of a principal:// member."""
    if provider == "gcp" and identity.endswith(f"@{account}.iam.gserviceaccount.com"):
        return identity.split("@", 1)[0]
    if identity.startswith("principal://"):
        return identity.rstrip("/").rsplit("/", 1)[-1]
    return name


def all_policies(result: AuditResult) -> list[IdentityPolicies]:
    """The least-privilege outputs of every audited identity, each in its own folder."""
    _discover()
    folders = identity_folders(
        (a.provider, a.account, a.identity, a.kind, short_name(a.provider, a.account, a.identity, a.name))
        for a in result.audits
    )
    out: list[IdentityPolicies] = []
    for provider in sorted({a.provider for a in result.audits}):
        emitter = _EMITTERS.get(provider)
        if emitter is not None:
            out += emitter(result, {i: f for (p, i), f in folders.items() if p == provider})
    return out


def kept_permissions(result: AuditResult) -> dict[tuple[str, str], list[KeptPermission]]:
    """Per (provider, identity): the used permissions, plus the unobservable ones unless dropped."""
    states = ["used"] if result.options.drop_unobservable else ["used", "unobservable"]
    rows = (
        result.permissions.lazy()
        .filter(pl.col("granted") & pl.col("state").is_in(states))
        .select("provider", "identity", "action", "state", "resources_seen", "narrowable", "unobservable_reason")
        .collect()
    )
    kept: dict[tuple[str, str], list[KeptPermission]] = {}
    for provider, identity, action, state, seen, narrowable, reason in rows.iter_rows():
        kept.setdefault((provider, identity), []).append(
            KeptPermission(action, state, tuple(seen or ()), bool(narrowable), reason)
        )
    return kept


def json_text(document: object) -> str:
    """A JSON document as written to a file: two-space indent, keys in their order, UTF-8 as is,
    a final newline (what ``json.dumps(indent=2)`` prints for ASCII, at a fraction of the cost)."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"


def sh(*words: str) -> str:
    """One shell command with every word quoted, so no value from the input can become a command.
    Pass values from the input as ``--flag=value`` words: a value that starts with ``-`` then cannot
    become an option either."""
    return " ".join(shlex.quote(w) for w in words)


def slug(name: str) -> str:
    """A file-name-safe form of a name (no separators, no leading dots)."""
    return _UNSAFE.sub("_", name).strip("._") or "identity"


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _only_base(key: object, base: str) -> Iterable[str]:
    return (base,)


def allocate(
    bases: Mapping[K, str],
    names_of: Callable[[K, str], Iterable[str]] = _only_base,
    limit: int = MAX_NAME,
    fold: Callable[[str], str] = str.casefold,
    separator: str = "-",
) -> dict[K, str]:
    """A unique base name per key: ``bases[key]`` where that is safe, else with a hash of the key.

    Two keys conflict when any of the names their bases produce (``names_of(key, base)``: e.g. the
    parts of a split policy) are equal after ``fold`` (case-insensitive file systems, IAM's
    case-insensitive names). Conflicting keys get ``<separator><hash>`` (longer each round) until
    none conflict; bases longer than ``limit`` are cut and hashed too."""
    chosen = {k: b if len(b) <= limit else _hashed(b, k, 8, limit, separator) for k, b in bases.items()}
    for length in (8, 12, 16, 24, 32, 64):
        owners: dict[str, set[K]] = {}
        for key, base in chosen.items():
            for name in names_of(key, base):
                owners.setdefault(fold(name), set()).add(key)
        clashing = {key for keys in owners.values() if len(keys) > 1 for key in keys}
        if not clashing:
            return chosen
        for key in clashing:
            chosen[key] = _hashed(bases[key], key, length, limit, separator)
    raise AssertionError("no unique names after 64 hex digits of SHA-256")  # pragma: no cover


def _hashed(base: str, key: Hashable, length: int, limit: int, separator: str) -> str:
    suffix = separator + short_hash(repr(key), length)
    return base[: max(1, limit - len(suffix))] + suffix


def identity_folders(audits: Iterable[tuple[str, str, str, str, str]]) -> dict[tuple[str, str], str]:
    """``policies/<provider>/<account>/<kind>/<name>`` per (provider, identity), unique for any names.

    ``audits``: (provider, account, identity, kind, short name) tuples."""
    accounts: dict[str, dict[str, str]] = {}
    leaves: dict[tuple[str, str], str] = {}
    where: dict[tuple[str, str], tuple[str, str, str]] = {}
    for provider, account, identity, kind, name in audits:
        accounts.setdefault(provider, {})[account] = slug(account)
        leaves[(provider, identity)] = slug(name)
        where[(provider, identity)] = (provider, account, slug(kind))
    account_dirs = {(p, a): d for p, names in accounts.items() for a, d in allocate(names).items()}
    folders: dict[tuple[str, str], str] = {}
    groups: dict[tuple[str, str, str], dict[tuple[str, str], str]] = {}
    for key, (provider, account, kind) in where.items():
        groups.setdefault((provider, account, kind), {})[key] = leaves[key]
    for (provider, account, kind), members in groups.items():
        for key, leaf in allocate(members).items():
            folders[key] = f"policies/{provider}/{account_dirs[(provider, account)]}/{kind}/{leaf}"
    return folders
