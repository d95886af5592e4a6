"""The diff engine: effective grants joined with usage, one evidence state per permission.

Provider-neutral: it reads only the normalized frames of :mod:`auditor.model` and a
:class:`~auditor.catalog.Catalog` per provider. For every audited identity it

1. expands each statement (wildcards, ``NotAction``) against the catalog,
2. removes what unconditional explicit ``Deny`` statements remove and caps the result with the
   permissions boundary (intersection), so "granted" means effectively granted,
3. joins the result with usage and gives each permission exactly one state — ``used``,
   ``denied``, ``unused`` or ``unobservable`` — never calling unused what the logs cannot show.

Identities holding the same statements (many agents share a managed policy) share one expansion,
and the permission table is built with joins over sets, so cost grows linearly with identities.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import polars as pl

from auditor.catalog import Catalog
from auditor.conditions import Verdict, evaluate
from auditor.model import UTC_TIME, AuditInput
from auditor.ruleset import Rules

PERMISSIONS = {
    "provider": pl.Utf8,
    "account": pl.Utf8,
    "identity": pl.Utf8,
    "name": pl.Utf8,
    "action": pl.Utf8,
    "service": pl.Utf8,
    "access_level": pl.Utf8,
    "granted": pl.Boolean,
    "state": pl.Utf8,
    "calls": pl.UInt64,
    "denied_calls": pl.UInt64,
    "first_seen": UTC_TIME,
    "last_seen": UTC_TIME,
    "evidence": pl.List(pl.Utf8),
    "resources_seen": pl.List(pl.Utf8),
    "narrowable": pl.Boolean,
    "grant_sources": pl.List(pl.Utf8),
    "unobservable_reason": pl.Utf8,
    "destructive": pl.Boolean,
    "destructive_rule": pl.Utf8,
    "destructive_category": pl.Utf8,
    "destructive_severity": pl.Utf8,
    "destructive_reason": pl.Utf8,
    "note": pl.Utf8,
}

_STATEMENT_FIELDS = (
    "layer",
    "effect",
    "actions",
    "not_action",
    "resources",
    "not_resource",
    "condition",
    "source",
    "source_kind",
    "policy",
    "scope",
    "member",
)


@dataclass(frozen=True)
class Statement:
    """One grant statement (a row of the GRANTS frame, without the identity it belongs to)."""

    layer: str
    effect: str
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    condition: str | None
    source: str
    source_kind: str
    policy: str | None = None
    scope: str | None = None
    member: str | None = None

    @property
    def unconditional_everywhere(self) -> bool:
        return self.condition is None and not self.not_resource and "*" in self.resources

    @property
    def is_admin(self) -> bool:
        """AWS ``Action: "*"`` (or NotAction) on ``Resource: "*"``; a binding of a basic role that
        grants nearly everything (GCP roles/owner, roles/editor: ``source_kind`` admin-role)."""
        if self.effect != "Allow":
            return False
        return self.source_kind == "admin-role" or ("*" in self.resources and (self.not_action or "*" in self.actions))

    def condition_json(self) -> Any:
        return json.loads(self.condition) if self.condition else None


@dataclass
class Grant:
    """How one effective permission is granted: the statements that allow it."""

    statements: list[Statement] = field(default_factory=list)
    partial_denies: list[Statement] = field(default_factory=list)
    caps: list[Statement] = field(default_factory=list)  # boundary statements that let it through


class Grants(Mapping[str, Grant]):
    """The effective permissions of one set of statements, ``action -> Grant``; a permission's Grant
    is assembled when asked for (emitters ask for the kept ones only), so an expansion costs set
    operations, not one object per permission."""

    def __init__(
        self,
        actions: frozenset[str],
        allows: Sequence[tuple[Statement, frozenset[str]]],
        partial_denies: Sequence[tuple[Statement, frozenset[str]]],
        caps: Sequence[tuple[Statement, frozenset[str]]],
    ) -> None:
        self._actions, self._allows, self._denies, self._caps = actions, allows, partial_denies, caps
        self._built: dict[str, Grant] = {}

    def __getitem__(self, action: str) -> Grant:
        grant = self._built.get(action)
        if grant is None:
            if action not in self._actions:
                raise KeyError(action)
            grant = self._built[action] = Grant(
                [s for s, acts in self._allows if action in acts],
                [s for s, acts in self._denies if action in acts],
                [s for s, acts in self._caps if action in acts],
            )
        return grant

    def __contains__(self, action: object) -> bool:
        return action in self._actions

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def __len__(self) -> int:
        return len(self._actions)

    def keys(self) -> frozenset[str]:  # type: ignore[override]
        return self._actions

    def rows(self) -> tuple[list[str], list[str], list[bool], list[str]]:
        """(action, source, conditional, condition) per granting statement, for the permission table."""
        actions: list[str] = []
        sources: list[str] = []
        conditional: list[bool] = []
        conditions: list[str] = []
        for stmt, acts in self._allows:
            mine = acts & self._actions
            actions += mine
            sources += [stmt.source] * len(mine)
            conditional += [stmt.condition is not None] * len(mine)
            conditions += [stmt.condition or ""] * len(mine)
        return actions, sources, conditional, conditions

    def partial_deny_rows(self) -> tuple[list[str], list[str]]:
        actions: list[str] = []
        sources: list[str] = []
        for stmt, acts in self._denies:
            mine = acts & self._actions
            actions += mine
            sources += [stmt.source] * len(mine)
        return actions, sources


@dataclass
class Effective:
    """The expansion of one set of statements (shared by every identity holding exactly that set)."""

    statements: tuple[Statement, ...]
    granted: Grants
    removed_by_deny: dict[str, str]
    removed_by_boundary: frozenset[str]
    boundary_sources: list[str]
    expired: tuple[tuple[Statement, str], ...] = ()  # statements whose condition can never hold again, and why


@dataclass
class IdentityAudit:
    """Everything the diff engine decided about one identity."""

    provider: str
    account: str
    identity: str
    name: str
    kind: str
    expansion: Effective
    any_activity: bool

    @property
    def statements(self) -> tuple[Statement, ...]:
        return self.expansion.statements

    @property
    def effective(self) -> dict[str, Grant]:
        return self.expansion.granted

    @property
    def removed_by_deny(self) -> dict[str, str]:
        return self.expansion.removed_by_deny

    @property
    def removed_by_boundary(self) -> set[str]:
        return self.expansion.removed_by_boundary

    @property
    def boundary_sources(self) -> list[str]:
        return self.expansion.boundary_sources


@dataclass
class DiffResult:
    permissions: pl.DataFrame
    identities: list[IdentityAudit]


def effective_grants(statements: Sequence[Statement], catalog: Catalog, now: datetime | None = None) -> Effective:
    """Expand statements to concrete permissions and apply Deny and the boundary. With ``now``, an
    Allow whose condition can never be true again (an expiry in the past) grants nothing: it is
    listed as expired instead (a Deny is kept whatever its condition: keeping it is the safe side)."""
    expired = tuple(
        (s, verdict.reason)
        for s in statements
        if s.effect == "Allow" and s.condition and now is not None
        for verdict in [_verdict(s.condition, now)]
        if verdict.status == "never"
    )
    dead = {s for s, _ in expired}
    live = [s for s in statements if s not in dead]
    expanded = [(s, catalog.expand(s.actions, s.not_action)) for s in live]
    allows = [(s, acts) for s, acts in expanded if s.layer == "identity" and s.effect == "Allow"]
    allowed = frozenset().union(*(acts for _, acts in allows))
    removed_by_deny: dict[str, str] = {}
    partial: list[tuple[Statement, frozenset[str]]] = []
    for stmt, acts in expanded:
        if stmt.effect != "Deny":
            continue
        if stmt.unconditional_everywhere:
            for action in acts & allowed:
                removed_by_deny.setdefault(action, stmt.source)
        else:
            partial.append((stmt, acts))
    effective = allowed - removed_by_deny.keys()
    caps = [(s, acts) for s, acts in expanded if s.layer == "boundary" and s.effect == "Allow"]
    removed_by_boundary: frozenset[str] = frozenset()
    if any(s.layer == "boundary" for s in live):
        capped = effective & frozenset().union(*(acts for _, acts in caps))
        removed_by_boundary, effective = effective - capped, capped
    return Effective(
        (*live, *dead),
        Grants(frozenset(effective), allows, partial, caps),
        removed_by_deny,
        removed_by_boundary,
        sorted({s.source for s in live if s.layer == "boundary"}),
        expired,
    )


@lru_cache(maxsize=4096)
def _verdict(condition: str, now: datetime) -> Verdict:
    return evaluate(condition, now)


def _statement(row: dict[str, Any]) -> Statement:
    return Statement(
        layer=row["layer"],
        effect=row["effect"],
        actions=tuple(row["actions"] or ()),
        not_action=bool(row["not_action"]),
        resources=tuple(row["resources"] or ("*",)),
        not_resource=bool(row["not_resource"]),
        condition=row["condition"],
        source=row["source"],
        source_kind=row["source_kind"],
        policy=row["policy"],
        scope=row["scope"],
        member=row["member"],
    )


def _usage_per_action(usage: pl.DataFrame) -> pl.DataFrame:
    """Usage rows folded to one row per (provider, identity, action)."""
    used = pl.col("outcome") == "used"
    return usage.group_by(["provider", "identity", "action"]).agg(
        pl.col("calls").filter(used).sum().cast(pl.UInt64).alias("calls"),
        pl.col("calls").filter(~used).sum().cast(pl.UInt64).alias("denied_calls"),
        pl.col("first_seen").min(),
        pl.col("last_seen").max(),
        pl.col("evidence").filter(used).unique().sort().alias("evidence"),
        pl.col("resources")
        .filter(used)
        .list.explode(keep_nulls=False, empty_as_null=False)
        .unique()
        .sort()
        .alias("resources_seen"),
        pl.col("all_with_resource").filter(used).all().alias("complete"),
    )


def _observability_reasons(data: AuditInput, audited: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Why the evidence cannot show a permission: (order, action, reason, rank) for rows naming an
    identity and (provider, account, action, reason, rank) for account-wide ones, which apply to every
    identity of the account. Where several match, the lowest rank (the first row) wins."""
    rows: list[tuple[str, str, str | None, str, str]] = []
    for provider, account, identity, actions, reason in data.observability.iter_rows():
        if actions:
            expanded = data.catalogs[provider].expand(actions) if provider in data.catalogs else frozenset(actions)
            rows += [(provider, account, identity, action, reason) for action in expanded]
    schema = {"provider": pl.Utf8, "account": pl.Utf8, "identity": pl.Utf8, "action": pl.Utf8, "reason": pl.Utf8}
    reasons = pl.DataFrame(rows, schema=schema, orient="row").with_row_index("rank")
    specific = (
        reasons.filter(pl.col("identity").is_not_null())
        .join(audited.select("provider", "account", "identity", "order"), on=["provider", "account", "identity"])
        .unique(["order", "action"], keep="first", maintain_order=True)
        .select("order", "action", "reason", "rank")
    )
    general = (
        reasons.filter(pl.col("identity").is_null())
        .unique(["provider", "account", "action"], keep="first", maintain_order=True)
        .select("provider", "account", "action", "reason", "rank")
    )
    return specific, general


def _ungranted_note(audit: IdentityAudit, action: str, calls: int) -> str:
    if action in audit.removed_by_deny:
        return f"explicitly denied by {audit.removed_by_deny[action]}"
    if action in audit.removed_by_boundary:
        return f"outside permissions boundary {', '.join(audit.boundary_sources)}"
    if calls:
        return "used but not granted by an identity policy (resource policy or session grant?)"
    return "not granted"


def _sets_frame(expansions: dict[int, Effective]) -> pl.DataFrame:
    """One row per (set, permission) the sets grant, with its sources and note, built from flat
    columns in polars (per-permission Python objects would be the slow part)."""
    grants: dict[str, list] = {"set_id": [], "action": [], "source": [], "conditional": [], "condition": []}
    denies: dict[str, list] = {"set_id": [], "action": [], "deny": []}
    for set_id, expansion in expansions.items():
        actions, sources, conditional, conditions = expansion.granted.rows()
        grants["set_id"] += [set_id] * len(actions)
        grants["action"] += actions
        grants["source"] += sources
        grants["conditional"] += conditional
        grants["condition"] += conditions
        actions, sources = expansion.granted.partial_deny_rows()
        denies["set_id"] += [set_id] * len(actions)
        denies["action"] += actions
        denies["deny"] += sources
    keys = ["set_id", "action"]
    rows = pl.DataFrame(
        grants,
        schema={
            "set_id": pl.UInt32,
            "action": pl.Utf8,
            "source": pl.Utf8,
            "conditional": pl.Boolean,
            "condition": pl.Utf8,
        },
    )
    # Most permissions are granted by one statement: only those granted by several need a group-by.
    several = pl.struct(keys).is_duplicated()
    single = rows.filter(~several).select(
        *keys,
        pl.concat_list("source").alias("grant_sources"),
        pl.col("conditional").alias("only_conditional"),
        pl.when(pl.col("conditional"))
        .then(pl.concat_list("condition"))
        .otherwise(pl.lit([], dtype=pl.List(pl.Utf8)))
        .alias("conditions"),
    )
    multiple = (
        rows.filter(several)
        .group_by(keys)
        .agg(
            pl.col("source").unique().sort().alias("grant_sources"),
            pl.col("conditional").all().alias("only_conditional"),
            pl.col("condition").filter(pl.col("conditional")).unique().sort().alias("conditions"),
        )
    )
    frame = pl.concat([single, multiple])
    partial = (
        pl.DataFrame(denies, schema={"set_id": pl.UInt32, "action": pl.Utf8, "deny": pl.Utf8})
        .group_by(keys)
        .agg(pl.col("deny").unique().sort().str.join(", ").alias("denied_by"))
    )
    frame = frame.join(partial, on=keys, how="left")
    condition_note = pl.when(pl.col("only_conditional")).then(
        pl.lit("granted only under condition ") + pl.col("conditions").list.join("; ")
    )
    deny_note = pl.when(pl.col("denied_by").is_not_null()).then(pl.lit("partly denied by ") + pl.col("denied_by"))
    return frame.select(
        *keys,
        "grant_sources",
        pl.concat_str([condition_note, deny_note], separator="; ", ignore_nulls=True).alias("note"),
    ).with_columns(pl.when(pl.col("note") != "").then("note").alias("note"))


def _glob_expr(search: str) -> pl.Expr:
    """Permission globs (:func:`auditor.matching.any_glob_search`) as a polars match, case-insensitive."""
    return pl.col("action").str.contains(f"(?is){search}")


def _classification_frame(data: AuditInput, rules: Rules, keys: pl.DataFrame) -> pl.DataFrame:
    """Service, access level and the destructive rule (highest severity first) of every permission,
    matched in polars: an administrator's 20,000 permissions against every rule at once."""
    frames = []
    for (provider,), actions in keys.unique().group_by(["provider"]):
        frame = data.catalogs[provider].classified(actions["action"]).with_columns(pl.lit(provider).alias("provider"))
        ranked = rules.ranked(provider)
        rule = pl.lit(None, dtype=pl.UInt32)
        for index in reversed(range(len(ranked))):  # the first matching rule wins
            this = ranked[index]
            match = _glob_expr(this.match_search)
            if this.exceptions:
                match &= ~_glob_expr(this.except_search)
            if this.access_levels is not None:
                match &= pl.col("access_level").is_in(sorted(this.access_levels))
            rule = pl.when(match).then(pl.lit(index, dtype=pl.UInt32)).otherwise(rule)
        table = pl.DataFrame(
            {
                "rule": list(range(len(ranked))),
                "destructive_rule": [r.id for r in ranked],
                "destructive_category": [r.category for r in ranked],
                "destructive_severity": [r.severity for r in ranked],
                "destructive_reason": [r.reason for r in ranked],
            },
            schema={
                "rule": pl.UInt32,
                "destructive_rule": pl.Utf8,
                "destructive_category": pl.Utf8,
                "destructive_severity": pl.Utf8,
                "destructive_reason": pl.Utf8,
            },
        )
        frames.append(
            frame.with_columns(rule.alias("rule"))
            .join(table, on="rule", how="left")
            .with_columns(pl.col("rule").is_not_null().alias("destructive"))
            .drop("rule")
        )
    schema = {
        "provider": pl.Utf8,
        "action": pl.Utf8,
        "service": pl.Utf8,
        "access_level": pl.Utf8,
        "destructive": pl.Boolean,
        "destructive_rule": pl.Utf8,
        "destructive_category": pl.Utf8,
        "destructive_severity": pl.Utf8,
        "destructive_reason": pl.Utf8,
    }
    return pl.concat([f.select(list(schema)) for f in frames]) if frames else pl.DataFrame(schema=schema)


def permission_table(
    data: AuditInput, rules: Rules, audits: list[IdentityAudit], set_ids: dict[int, int]
) -> pl.DataFrame:
    """One row per (identity, permission) granted or seen, with its evidence state.

    What depends on the permission alone (sources, note, service, destructive rule) is worked out
    once per permission set, which identities with the same statements share; the granted rows are
    then one lazy query over (identity, set) pairs, joined on a number per identity."""
    audited = pl.DataFrame(
        {
            "provider": [a.provider for a in audits],
            "identity": [a.identity for a in audits],
            "account": [a.account for a in audits],
            "name": [a.name for a in audits],
            "set_id": [set_ids[id(a.expansion)] for a in audits],
        },
        schema={"provider": pl.Utf8, "identity": pl.Utf8, "account": pl.Utf8, "name": pl.Utf8, "set_id": pl.UInt32},
    )
    # The table's order (provider, account, name, identity, action) as one number per identity:
    # sorting millions of rows on four string columns is most of this function's time otherwise.
    audited = audited.sort(["provider", "account", "name", "identity"]).with_row_index("order")
    expansions = {set_ids[id(a.expansion)]: a.expansion for a in audits}
    set_provider = {set_ids[id(a.expansion)]: a.provider for a in audits}
    sets = _sets_frame(expansions).with_columns(
        pl.col("set_id").replace_strict(set_provider, default=None, return_dtype=pl.Utf8).alias("provider")
    )
    usage = _usage_per_action(data.usage).join(audited, on=["provider", "identity"], how="inner")
    ungranted = usage.join(sets.select("set_id", "action"), on=["set_id", "action"], how="anti")
    classes = _classification_frame(
        data, rules, pl.concat([sets.select("provider", "action"), ungranted.select("provider", "action")])
    )
    specific, general = _observability_reasons(data, audited)
    seen = usage.select(
        "order", "action", "calls", "denied_calls", "first_seen", "last_seen", "evidence", "resources_seen", "complete"
    )
    first_specific = pl.col("rank").is_not_null() & (
        pl.col("rank_general").is_null() | (pl.col("rank") < pl.col("rank_general"))
    )
    granted = (
        audited.lazy()
        .join(
            sets.join(classes, on=["provider", "action"], how="left").sort("set_id", "action").lazy(),
            on=["set_id", "provider"],
            maintain_order="left_right",
        )
        .join(seen.lazy(), on=["order", "action"], how="left", maintain_order="left")
        .join(specific.lazy(), on=["order", "action"], how="left", maintain_order="left")
        .join(
            general.lazy(), on=["provider", "account", "action"], how="left", suffix="_general", maintain_order="left"
        )
        .with_columns(
            pl.lit(True).alias("granted"),
            pl.when(first_specific).then("reason").otherwise("reason_general").alias("unobservable_reason"),
        )
    )
    by_key = {(a.provider, a.identity): a for a in audits}
    notes = [
        _ungranted_note(by_key[(p, i)], a, c)
        for p, i, a, c in ungranted.select("provider", "identity", "action", "calls").iter_rows()
    ]
    extra = ungranted.join(classes, on=["provider", "action"], how="left").with_columns(
        pl.lit(False).alias("granted"),
        pl.lit([], dtype=pl.List(pl.Utf8)).alias("grant_sources"),
        pl.lit(None, dtype=pl.Utf8).alias("unobservable_reason"),
        pl.Series("note", notes, dtype=pl.Utf8),
    )
    columns = ["order", *(c for c in PERMISSIONS if c not in ("state", "narrowable")), "complete"]
    table = pl.concat([granted.select(columns), extra.lazy().select(columns)], how="vertical_relaxed").with_columns(
        pl.col("calls").fill_null(0),
        pl.col("denied_calls").fill_null(0),
        pl.col("evidence").fill_null([]),
        pl.col("resources_seen").fill_null([]),
    )
    state = (
        pl.when(pl.col("calls") > 0)
        .then(pl.lit("used"))
        .when(pl.col("denied_calls") > 0)
        .then(pl.lit("denied"))
        .when(pl.col("unobservable_reason").is_not_null())
        .then(pl.lit("unobservable"))
        .otherwise(pl.lit("unused"))
    )
    table = table.with_columns(
        state.alias("state"),
        ((pl.col("calls") > 0) & pl.col("complete").fill_null(False) & (pl.col("resources_seen").list.len() > 0)).alias(
            "narrowable"
        ),
    ).with_columns(pl.when(pl.col("state") == "unobservable").then("unobservable_reason").alias("unobservable_reason"))
    # The in-memory engine: the streaming one (polars' default) takes half as long again at this size.
    return (
        (table.sort(["order", "action"]) if ungranted.height else table)  # the granted rows are in order
        .select([pl.col(c).cast(t) for c, t in PERMISSIONS.items()])
        .collect(engine="in-memory")
    )


def _signature(statements: Iterable[Statement]) -> tuple[Statement, ...]:
    return tuple(sorted(set(statements), key=lambda s: tuple(str(getattr(s, f)) for f in _STATEMENT_FIELDS)))


def diff(data: AuditInput, rules: Rules, now: datetime | None = None) -> DiffResult:
    """Run the engine over every agent identity in ``data``."""
    agents = data.identities.filter(pl.col("is_agent")).sort(["provider", "account", "name", "identity"])
    rows = data.grants.join(agents.select("provider", "identity"), on=["provider", "identity"], how="semi")
    by_identity: dict[tuple[str, str], list[Statement]] = defaultdict(list)
    for row in rows.select("provider", "identity", *_STATEMENT_FIELDS).iter_rows(named=True):
        by_identity[(row["provider"], row["identity"])].append(_statement(row))
    active = set(zip(data.usage["provider"], data.usage["identity"], strict=True))
    active |= set(zip(data.unmapped["provider"], data.unmapped["identity"], strict=True))
    expansions: dict[tuple[str, tuple[Statement, ...]], Effective] = {}
    audits: list[IdentityAudit] = []
    for ident in agents.iter_rows(named=True):
        provider, identity = ident["provider"], ident["identity"]
        signature = _signature(by_identity.get((provider, identity), ()))
        expansion = expansions.get((provider, signature))
        if expansion is None:
            expansion = expansions[(provider, signature)] = effective_grants(signature, data.catalogs[provider], now)
        audits.append(
            IdentityAudit(
                provider,
                ident["account"],
                identity,
                ident["name"],
                ident["kind"],
                expansion,
                any_activity=(provider, identity) in active,
            )
        )
    set_ids = {id(e): i for i, e in enumerate(expansions.values())}
    return DiffResult(permission_table(data, rules, audits, set_ids), audits)


def wildcard_patterns(statements: Iterable[Statement], catalog: Catalog) -> list[str]:
    """Allow patterns that grant a whole service or match across services (``s3:*``, ``*:Get*``)."""
    found = set()
    for stmt in statements:
        if stmt.effect != "Allow" or stmt.layer != "identity" or stmt.is_admin:
            continue
        for pattern in stmt.actions:
            if stmt.not_action:
                found.add(f"NotAction {pattern}")
            elif catalog.wildcard_kind(pattern) in ("service", "cross-service"):
                found.add(pattern)
    return sorted(found)
