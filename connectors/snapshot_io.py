"""Writing snapshot folders: every file atomically, and a manifest that says whether the collection
finished, so an interrupted collection is refused instead of audited as if it were complete."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

from auditor.errors import InputError
from auditor.timefmt import iso_utc


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any, indent: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(data, default=_json_default, option=option | orjson.OPT_PASSTHROUGH_DATETIME)


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` through a hidden temporary file renamed into place on success only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(temporary, "wb") as handle:
            yield handle
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, data: Any, indent: bool = False) -> None:
    with atomic_file(path) as handle:
        handle.write(dumps(data, indent))


def require_complete(manifest: dict[str, Any], path: Path, command: str) -> None:
    """Refuse a snapshot whose collection started but never finished (``complete: false``)."""
    if manifest.get("complete") is False:
        raise InputError(f"{path}: the collection into this folder did not finish", f"rerun `{command}`")
