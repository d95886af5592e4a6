"""Reading ``blocklist.yaml`` for the guard: validated against the shipped schema, or refused.

A missing, unreadable, malformed, schema-invalid or cut-off file (no closing ``complete: true``: YAML
cut at a line break still parses) is a :class:`GuardConfigError`: a broken guard never silently
allows everything. So is an ``identity=`` that names no entry, or several.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from auditor.guard.errors import GuardConfigError
from auditor.guard.policy import IdentityPolicy

SCHEMA = "blocklist.schema.json"


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The blocklist document at ``path``, schema-valid."""
    import yaml  # imported here: the guard's import stays light

    where = Path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GuardConfigError(
            f"{where}: blocklist not found", "run `auditor audit ... --out DIR` and pass DIR/blocklist.yaml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GuardConfigError(f"{where}: cannot read the blocklist: {exc}", "check the path and permissions") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        document = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise GuardConfigError(f"{where}: not valid YAML{at}", "regenerate it with `auditor audit`") from None
    _validate(document, where)
    if document.get("complete") is not True:
        raise GuardConfigError(
            f"{where}: the blocklist ends before its last line (`complete: true`): cut off while written or copied",
            "copy it again whole, or regenerate it with `auditor audit`",
        )
    return document


def _validate(document: Any, where: Path) -> None:
    import jsonschema

    schema = json.loads(resources.files("auditor").joinpath("schemas", SCHEMA).read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
        raise GuardConfigError(
            f"{where}: not a valid blocklist at {at}: {message}",
            f"it must match auditor/schemas/{SCHEMA}; regenerate it with `auditor audit`",
        )


def select(document: Mapping[str, Any], identity: str, provider: str | None, where: str) -> IdentityPolicy:
    """The entry whose identity id is ``identity`` (else whose name is), of ``provider`` if given."""
    entries = [e for e in document["identities"] if provider is None or e["provider"] == provider]
    for key in ("identity", "name"):
        found = [e for e in entries if e.get(key) == identity] or [
            e for e in entries if str(e.get(key, "")).lower() == identity.lower()
        ]
        if len(found) == 1:
            return IdentityPolicy.from_entry(found[0])
        if len(found) > 1:
            ids = ", ".join(f"{e['provider']} {e['identity']}" for e in found[:5])
            raise GuardConfigError(
                f"{where}: identity {identity!r} matches {len(found)} entries ({ids})",
                "pass the identity id, or provider=",
            )
    known = ", ".join(e.get("name") or e["identity"] for e in entries[:8])
    scope = f" of provider {provider!r}" if provider else ""
    raise GuardConfigError(
        f"{where}: no identity {identity!r}{scope} in the blocklist",
        f"pass one of its identity ids or names ({known}{', …' if len(entries) > 8 else ''})"
        if entries
        else "audit that identity first",
    )
