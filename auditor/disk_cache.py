"""A small on-disk cache for data derived from installed packages (catalogs, botocore metadata) or
from files (the parsed rules).

Building them reads hundreds of JSON files (~1 s) or parses YAML; a pickle keyed by the versions and
content it was derived from loads in milliseconds. One entry is kept per name. The cache is an
optimization only: any problem reading or writing it falls back to building the data, and
``AUDITOR_NO_CACHE=1`` turns it off.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from auditor import __version__

T = TypeVar("T")
V = TypeVar("V")
#: Whether a cached value has the shape its reader expects (None: any value does).
Validity = Callable[[object], bool] | None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "auditor"


def _versions(packages: tuple[str, ...]) -> str:
    return ",".join([f"auditor={__version__}", *(f"{name}={installed_version(name)}" for name in packages)])


@functools.cache
def installed_version(name: str) -> str:
    """The installed version of package ``name`` ("?" if not installed), from the name of the one
    ``<name>-<version>.dist-info`` folder installers put beside it: found without importing the
    package or importlib.metadata (~12 ms, before the log scan can begin). Anything else (several
    such folders, an egg, an editable install) is asked of importlib.metadata."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return "?"
    if spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))).parent
        prefix, suffix = f"{name.replace('-', '_').lower()}-", ".dist-info"
        with_name = [e for e in os.listdir(folder) if e.lower().startswith(prefix) and e.endswith(suffix)]
        if len(with_name) == 1:
            return with_name[0][len(prefix) : -len(suffix)]
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def cached(name: str, packages: tuple[str, ...], build: Callable[[], T], valid: Validity = None) -> T:
    """``build()``'s result, reused across runs while ``packages`` keep their versions. An entry
    ``valid`` rejects (a well-formed pickle of another shape: another auditor's layout) is built again."""
    return _through(name, _key(packages), build, valid)


def cached_for(
    name: str, packages: tuple[str, ...], content: bytes, build: Callable[[], T], valid: Validity = None
) -> T:
    """``build()``'s result, reused across runs for the same ``content`` (what it is derived from,
    e.g. the text of the files it parses) while ``packages`` keep their versions (``valid``: as
    for :func:`cached`)."""
    return _through(name, _key(packages, content), build, valid)


def cached_shards(
    name: str, packages: tuple[str, ...], build: Callable[[], Mapping[str, V]], shard_of: Callable[[str], str]
) -> ShardedMapping[V]:
    """``build()``'s mapping, reused across runs while ``packages`` keep their versions, stored in
    shards (``shard_of(key)``) that are unpickled on first use: a run that looks up a few services'
    entries does not load them all."""

    def shards() -> dict[str, bytes]:
        grouped: dict[str, dict[str, V]] = {}
        for key, value in build().items():
            grouped.setdefault(shard_of(key), {})[key] = value
        return {shard: pickle.dumps(part, protocol=pickle.HIGHEST_PROTOCOL) for shard, part in grouped.items()}

    # keyed apart from a whole pickle of the same name, so an older layout is never read as this one
    key = _key(packages, b"shards")

    def rebuild() -> dict[str, bytes]:  # a damaged shard: built again, stored over the damaged entry
        fresh = shards()
        _store(name, key, fresh)
        return fresh

    return ShardedMapping(_through(name, key, shards, _are_shards), shard_of, rebuild)


class ShardedMapping(Mapping[str, V]):
    """A read-only mapping whose shards (pickled dicts) are unpickled when a key of theirs is first looked up;
    a shard that does not unpickle makes it ``rebuild()`` its shards, as an unreadable cache file does."""

    def __init__(
        self, shards: dict[str, bytes], shard_of: Callable[[str], str], rebuild: Callable[[], dict[str, bytes]]
    ) -> None:
        self._shards = shards
        self._shard_of = shard_of
        self._rebuild = rebuild
        self._loaded: dict[str, dict[str, V]] = {}

    def _shard(self, shard: str) -> dict[str, V]:
        part = self._loaded.get(shard)
        if part is None:
            try:
                part = self._unpickled(shard)
                if not isinstance(part, dict):
                    raise TypeError(f"shard {shard!r} is a {type(part).__name__}")
            except Exception:  # a damaged cache entry: built again, never a failure
                self._shards = self._rebuild()
                part = self._unpickled(shard)
            self._loaded[shard] = part
        return part

    def _unpickled(self, shard: str) -> dict[str, V]:
        blob = self._shards.get(shard)
        return pickle.loads(blob) if blob is not None else {}

    def __getitem__(self, key: str) -> V:
        return self._shard(self._shard_of(key))[key]

    def __iter__(self) -> Iterator[str]:
        for shard in self._shards:
            yield from self._shard(shard)

    def __len__(self) -> int:
        return sum(len(self._shard(shard)) for shard in self._shards)

    def __bool__(self) -> bool:  # without it, ``mapping or {}`` would unpickle every shard to count them
        return bool(self._shards)  # a shard holds at least one key


def _key(packages: tuple[str, ...], content: bytes | None = None) -> bytes:
    """What an entry is derived from: the packages' versions, and ``content`` when given."""
    versions = _versions(packages).encode()
    return versions if content is None else versions + b"\0" + content


def _are_shards(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, bytes) for k, v in value.items())


def _through(name: str, key: bytes, build: Callable[[], T], valid: Validity) -> T:
    if os.environ.get("AUDITOR_NO_CACHE"):
        return build()
    try:
        with open(_entry(name, key), "rb") as handle:
            value = pickle.load(handle)
        if valid is None or valid(value):
            return value
    except Exception:  # a cache that cannot be read, for whatever reason, is rebuilt
        pass
    value = build()
    _store(name, key, value)
    return value


def _entry(name: str, key: bytes) -> Path:
    return cache_dir() / f"{name}-{hashlib.sha256(key).hexdigest()[:16]}.pickle"


def _store(name: str, key: bytes, value: object) -> None:
    """Write the entry atomically and drop the name's other entries; a cache that cannot be written is skipped."""
    if os.environ.get("AUDITOR_NO_CACHE"):
        return
    path = _entry(name, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{name}-", delete=False) as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(handle.name, path)
        for stale in path.parent.glob(f"{name}-{'?' * 16}.pickle"):  # one entry per name
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:
        pass
