"""A small on-disk cache for data derived from installed packages (catalogs, botocore metadata) or
from files (the parsed rules).

Building them reads hundreds of JSON files (~1 s) or parses YAML; a pickle keyed by the versions and
content it was derived from loads in milliseconds. One entry is kept per name. The cache is an
optimization only: any problem reading or writing it falls back to building the data, and
``AUDITOR_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from auditor import __version__

T = TypeVar("T")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditor"


def _versions(packages: tuple[str, ...]) -> str:
    parts = [f"auditor={__version__}"]
    for name in packages:
        try:
            parts.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name}=?")
    return ",".join(parts)


def cached(name: str, packages: tuple[str, ...], build: Callable[[], T]) -> T:
    """``build()``'s result, reused across runs while ``packages`` keep their versions."""
    return _through(name, _versions(packages).encode(), build)


def cached_for(name: str, packages: tuple[str, ...], content: bytes, build: Callable[[], T]) -> T:
    """``build()``'s result, reused across runs for the same ``content`` (what it is derived from,
    e.g. the text of the files it parses) while ``packages`` keep their versions."""
    return _through(name, _versions(packages).encode() + b"\0" + content, build)


def _through(name: str, key: bytes, build: Callable[[], T]) -> T:
    if os.environ.get("AUDITOR_NO_CACHE"):
        return build()
    digest = hashlib.sha256(key).hexdigest()[:16]
    path = cache_dir() / f"{name}-{digest}.pickle"
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except Exception:  # a cache that cannot be read, for whatever reason, is rebuilt
        pass
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{name}-", delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
        for stale in path.parent.glob(f"{name}-{'?' * len(digest)}.pickle"):  # one entry per name
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass
    return value
