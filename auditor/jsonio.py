"""Reading JSON / gzip input files with one-line errors that name the file and the fix."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import orjson

try:  # Intel ISA-L inflates 2-3x faster than zlib; same format, same errors
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    _inflate = zlib  # type: ignore[assignment]

from auditor.errors import InputError


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the name ends in .gz."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if path.name.endswith(".gz"):
        return gunzip(raw, path)
    return raw


def gunzip(raw: bytes, path: Path | str) -> bytes:
    try:
        return _inflate.decompress(raw, 47)  # 32 + 15: gzip or zlib header, auto-detected
    except (zlib.error, _inflate.error) as exc:
        raise InputError(f"{path}: corrupt or truncated gzip ({exc})", "re-download the file") from None


def load_json(path: Path, what: str) -> Any:
    """Parse a JSON file (optionally .gz), naming ``what`` it should be in the error."""
    raw = read_bytes(path)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})", f"expected {what}") from None
