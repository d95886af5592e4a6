"""How Azure grants sit in the normalized model: the catalog bundle of dataActions and the JSON of an
ABAC condition. A module of its own so the custom-role emitter reads them without the connector."""

from __future__ import annotations

import json

#: The catalog bundle (``Catalog.roles``) naming the data-plane operations, for the custom-role emitter.
DATA_ACTIONS = "dataActions"
#: The key of an ABAC condition in the normalized ``condition`` JSON (shown as is in reports).
CONDITION_KEY = "Azure ABAC"


def condition_json(*parts: tuple[str | None, str | None]) -> str | None:
    """The assignment's and the role entry's conditions as one JSON value (None: unconditional)."""
    found = [{"condition": c, "version": v or "2.0"} for c, v in parts if c]
    if not found:
        return None
    return json.dumps({CONDITION_KEY: found[0] if len(found) == 1 else found}, sort_keys=True)


def condition_of(text: str | None) -> list[tuple[str, str]]:
    """(condition, version) pairs of a normalized condition JSON."""
    if not text:
        return []
    value = json.loads(text).get(CONDITION_KEY)
    items = value if isinstance(value, list) else [value]
    return [(i["condition"], i.get("version") or "2.0") for i in items if isinstance(i, dict)]
