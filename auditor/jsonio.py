"""Reading JSON / gzip input files with one-line errors that name the file and the fix."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import orjson

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
        return zlib.decompress(raw, wbits=47)  # 32 + 15: gzip or zlib header, auto-detected
    except zlib.error as exc:
        raise InputError(f"{path}: corrupt or truncated gzip ({exc})", "re-download the file") from None


def load_json(path: Path, what: str) -> Any:
    """Parse a JSON file (optionally .gz), naming ``what`` it should be in the error."""
    raw = read_bytes(path)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})", f"expected {what}") from None


def open_text(path: Path):
    """Open a possibly gzipped text file for streaming line reads."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")
