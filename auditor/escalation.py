"""Privilege-escalation paths: the methods a principal can really use, and the roles it reaches them through.

Pure (no I/O); AWS and GCP share the engine. A method of ``rules/privesc.yaml`` fires for a
principal only when every action it requires is *effectively* granted on a resource where the
method works:

* an Allow of the identity layer matches the action (wildcards and ``NotAction`` through
  :meth:`Catalog.expand`) and its ``Resource`` / ``NotResource`` can touch the target
  (:func:`~auditor.matching.globs_intersect`, field by field for ARNs; GCP: the binding's
  resource holds the target);
* no Deny that covers the whole target applies unconditionally (a Deny whose condition is
  unknown is listed as a condition of the path), and the permissions boundary, when there is
  one, lets the action through;
* statements whose condition can never be true again (:mod:`auditor.conditions`) are dead;
  unknown conditions are kept and reported with the path.

Role chaining: P can assume role R when R's trust policy admits P (its ARN, its account or root,
``*``; conditions shown) and, unless the trust names P's ARN in P's own account (AWS then needs
no identity grant), P's own policies grant ``sts:AssumeRole`` on R; an explicit Deny always
blocks. P then inherits R's paths, transitively and cycle-safe; ``via`` lists the roles assumed
(for the assuming method itself, it ends with the role assumed). GCP service-account
impersonation (``chains: true`` methods) works the same way.

Approximations, on purpose:

* *more privileged* (what taking over another identity must bring): the target is ``admin`` or
  holds some action the principal lacks (action names; resource scopes are not compared);
* ``runs_as``: functions, stacks, instances, notebooks, projects and their roles are not in the
  IAM export, so any role the service can assume (EC2: only roles in an instance profile) is
  taken as possibly running one of them. For ``cloudformation:UpdateStack`` this means: the
  account has a more privileged role CloudFormation can assume, which some stack may use as its
  service role (a stack without one runs with the caller's own permissions: no gain);
* a principal classified ``admin`` has nothing left to gain: it gets no paths (the admin finding
  covers it).
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from auditor.catalog import Catalog
from auditor.conditions import Verdict, evaluate
from auditor.escalation_methods import CHAIN_KINDS, EscalationMethod, TargetSpec
from auditor.matching import glob_covers, globs_intersect, has_wildcard, matches

#: Kinds whose targets are other identities: they must be more privileged than the principal.
_GAIN_KINDS = frozenset({"group", "other-user", "role", "assumable-role", "role-assumable-by", "service-account"})
_GCP_ADMIN = ("resourcemanager.projects.setIamPolicy", "resourcemanager.folders.setIamPolicy")
_GCP_CONTAINERS = ("projects/", "folders/", "organizations/")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")
_EC2 = "ec2.amazonaws.com"


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    """One policy statement or role binding (a row of the normalized GRANTS frame)."""

    effect: str  # Allow | Deny
    actions: tuple[str, ...]
    not_action: bool = False
    resources: tuple[str, ...] = ("*",)
    not_resource: bool = False
    condition: str | None = None  # JSON text of the AWS Condition block or the GCP condition
    layer: str = "identity"  # identity | boundary
    source: str = ""


@dataclass(frozen=True)
class TrustStatement:
    """One statement of an AWS role's trust policy."""

    effect: str = "Allow"
    aws: tuple[str, ...] = ()  # principal ARNs, account ids, account roots, "*"
    services: tuple[str, ...] = ()
    federated: tuple[str, ...] = ()
    not_principal: bool = False
    actions: tuple[str, ...] = ("sts:AssumeRole",)
    not_action: bool = False
    condition: str | None = None


@dataclass(frozen=True)
class Principal:
    """An identity: AWS role, user or group (groups are only targets), GCP service account."""

    provider: str
    id: str  # ARN, or the service-account email
    account: str  # AWS account id, GCP project id
    kind: str  # role | user | group | service_account
    statements: tuple[Statement, ...] = ()
    trust: tuple[TrustStatement, ...] = ()  # AWS roles
    groups: tuple[str, ...] = ()  # AWS users: ARNs of their groups
    instance_profiles: tuple[str, ...] = ()  # AWS roles: ARNs of the instance profiles holding them

    @property
    def name(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    @property
    def resource(self) -> str:
        """The resource other principals act on to reach this one."""
        if self.kind == "service_account":
            return f"//iam.googleapis.com/projects/{self.account}/serviceAccounts/{self.id}"
        return self.id


# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One action effectively granted on one target, and what it depends on."""

    action: str
    target: str
    sources: tuple[str, ...]
    conditions: tuple[str, ...] = ()  # one line each; empty when unconditional


@dataclass(frozen=True)
class ActionGrant:
    action: str
    targets: tuple[str, ...]  # resources where the method works and the action is granted
    sources: tuple[str, ...]  # policies / bindings granting it


@dataclass(frozen=True)
class EscalationPath:
    method: str
    severity: str
    reason: str
    grants: tuple[ActionGrant, ...]
    conditions: tuple[str, ...] = ()  # unknown conditions the path depends on
    via: tuple[str, ...] = ()  # roles assumed / service accounts impersonated, in order
    detail: str = ""  # the roles passed or run as, and the approximation made

    def describe(self) -> str:
        chain = f" via {' -> '.join(self.via)}" if self.via else ""
        extra = f" ({self.detail})" if self.detail else ""
        conditions = f" [if: {'; '.join(self.conditions)}]" if self.conditions else ""
        return f"{self.method}{chain}: {self.reason}{extra}{conditions}"


@dataclass(frozen=True)
class AdminClass:
    level: str  # admin | broad
    reason: str
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Target:
    resource: str
    principal: Principal | None = None
    conditions: tuple[str, ...] = ()
    context: tuple[tuple[str, str], ...] = ()  # condition keys known for this target
    assumed: bool = False  # reached by assuming it: the principal must be able to
    note: str = ""


_Edge = tuple[str, tuple[str, ...]]  # (identity it can become, conditions)


@dataclass(frozen=True)
class _Compiled:
    statement: Statement
    actions: frozenset[str]


def _merge(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for group in groups for c in group))


def _substitute(pattern: str, known: Mapping[str, str]) -> tuple[str, bool]:
    """``pattern`` with policy variables (``${aws:username}``) replaced; unknown ones become ``*``.

    Returns the text and whether every variable was known.
    """
    exact = True

    def value(match: re.Match[str]) -> str:
        nonlocal exact
        name = match.group(1)
        if name in ("*", "?", "$"):
            return name
        if name.lower() in known:
            return known[name.lower()]
        exact = False
        return "*"

    return _VARIABLE.sub(value, pattern), exact


def _template(pattern: str, account: str) -> str:
    """A rule or catalog ARN template as a glob: ``${Account}`` is the account, others ``*``."""
    return _VARIABLE.sub(lambda m: account if m.group(1) == "Account" else "*", pattern)


def _arn_touch(a: str, b: str) -> bool:
    """:func:`globs_intersect` for ARNs, field by field: no real ARN has a ``:`` in its partition,
    service, region or account, so ``arn:aws:s3:::bucket/*`` never touches a Lambda function."""
    fields_a, fields_b = a.split(":", 5), b.split(":", 5)
    if len(fields_a) < 6 or len(fields_b) < 6:
        return globs_intersect(a, b, True)
    return all(globs_intersect(x, y, True) for x, y in zip(fields_a, fields_b, strict=True))


def _gcp_path(resource: str) -> str:
    return re.sub(r"^//[^/]+/", "", resource)


def _gcp_holds(scope: str, target: str) -> bool:
    """Whether a binding on ``scope`` applies to ``target`` (folders/orgs: ancestry unknown, assumed)."""
    if target == "*":
        return True
    scope, target = _gcp_path(scope), _gcp_path(target)
    if scope.startswith(("folders/", "organizations/")) or scope == target or target.startswith(scope + "/"):
        return True
    account = "/serviceAccounts/"
    return account in scope and account in target and scope.split(account)[1] == target.split(account)[1]


def _acts(statement: TrustStatement, action: str) -> bool:
    return any(matches(a, action) for a in statement.actions) != statement.not_action


class _Engine:
    """Effective access, trust and method evaluation over one provider's principals, with caches."""

    def __init__(
        self,
        principals: Iterable[Principal],
        catalog: Catalog,
        now: datetime,
        arn_formats: Mapping[str, Sequence[str]] | None,
    ) -> None:
        self.principals = [p for p in principals if p.provider == catalog.provider]
        self.by_id = {p.id: p for p in self.principals}
        self.catalog = catalog
        self.now = now
        self.arn_formats = {} if arn_formats is None else arn_formats
        self._compiled: dict[str, list[_Compiled]] = {}
        self._verdicts: dict[tuple[str | None, tuple[tuple[str, str], ...]], Verdict] = {}
        self._actions: dict[tuple[str, str], frozenset[str]] = {}
        self._admin: dict[str, AdminClass | None] = {}
        self._globs: dict[tuple[str, str, str], bool] = {}
        self._by_kind: dict[str, list[Principal]] = {}
        for q in self.principals:
            self._by_kind.setdefault(q.kind, []).append(q)
        # Which roles' trust policies can admit whom: a role is a candidate for P only when its trust
        # names P's ARN, P's account (id or root) or "*", or uses NotPrincipal (so role chaining costs
        # per principal the roles that may admit it, not every role of the organization).
        self._trusting: dict[str, list[Principal]] = {}
        self._open: list[Principal] = []
        for role in self._by_kind.get("role", []):
            names = {n for t in role.trust if not t.not_principal for n in t.aws}
            if "*" in names or any(t.not_principal for t in role.trust):
                self._open.append(role)
                continue
            for name in names:
                self._trusting.setdefault(name, []).append(role)
        self._service_cache: dict[tuple[str, ...], list[_Target]] = {}

    # --- statements and conditions ----------------------------------------------------------

    def compiled(self, p: Principal) -> list[_Compiled]:
        if p.id not in self._compiled:
            self._compiled[p.id] = [_Compiled(s, self.catalog.expand(s.actions, s.not_action)) for s in p.statements]
        return self._compiled[p.id]

    def context(self, p: Principal, extra: Iterable[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
        """Condition keys whose value is known for requests made by ``p``."""
        known: dict[str, str] = {}
        if p.provider == "aws":
            known = {"aws:PrincipalArn": p.id, "aws:PrincipalAccount": p.account}
            if p.kind == "user":
                known["aws:username"] = p.name
        known.update(extra)
        return tuple(sorted(known.items()))

    def verdict(self, condition: str | None, context: tuple[tuple[str, str], ...]) -> Verdict:
        key = (condition, context)
        if key not in self._verdicts:
            self._verdicts[key] = evaluate(condition, self.now, dict(context))
        return self._verdicts[key]

    def _glob(self, how: str, pattern: str, target: str) -> bool:
        key = (how, pattern, target)
        if key not in self._globs:
            self._globs[key] = _arn_touch(pattern, target) if how == "touch" else glob_covers(pattern, target, True)
        return self._globs[key]

    def _patterns(self, s: Statement, context: tuple[tuple[str, str], ...]) -> list[tuple[str, bool]]:
        known = {k.lower(): v for k, v in context}
        return [_substitute(r, known) for r in s.resources]

    def _touches(self, p: Principal, s: Statement, target: str, cover: bool, ctx: tuple[tuple[str, str], ...]) -> bool:
        """Whether an Allow can grant on (some of, or with ``cover`` all of) ``target``."""
        if p.provider == "gcp":
            return any(_gcp_holds(r, target) for r in s.resources)
        patterns = self._patterns(s, ctx)
        if s.not_resource:
            if cover:
                return not any(self._glob("touch", x, target) for x, _ in patterns)
            return not any(exact and self._glob("cover", x, target) for x, exact in patterns)
        return any(self._glob("cover" if cover else "touch", x, target) for x, _ in patterns)

    def _blankets(self, p: Principal, s: Statement, target: str, ctx: tuple[tuple[str, str], ...]) -> bool:
        """Whether a Deny provably covers the whole ``target``."""
        if p.provider == "gcp":
            return any(_gcp_holds(r, target) for r in s.resources)
        patterns = self._patterns(s, ctx)
        if s.not_resource:
            return not any(self._glob("touch", x, target) for x, _ in patterns)
        return any(exact and self._glob("cover", x, target) for x, exact in patterns)

    # --- effective access ----------------------------------------------------------------------

    def access(
        self, p: Principal, action: str, target: str, extra: Iterable[tuple[str, str]] = (), cover: bool = False
    ) -> Access | None:
        """``action`` on ``target`` if ``p`` effectively holds it, with the conditions it depends on."""
        ctx = self.context(p, extra)
        allowed = self._allowed_by(p, "identity", action, target, ctx, cover)
        if allowed is None:
            return None
        sources, conditions = allowed
        if self.bounded(p):
            capped = self._allowed_by(p, "boundary", action, target, ctx, cover)
            if capped is None:
                return None
            conditions = _merge(conditions, capped[1])
        unless = self._unless_denied(p, action, target, ctx)
        if unless is None:
            return None
        return Access(action, target, sources, _merge(conditions, unless))

    def _allowed_by(
        self, p: Principal, layer: str, action: str, target: str, ctx: tuple[tuple[str, str], ...], cover: bool
    ) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """(sources, conditions) of the live Allows of ``layer`` granting ``action`` on ``target``."""
        live: list[tuple[Statement, Verdict]] = []
        for c in self.compiled(p):
            s = c.statement
            if s.layer == layer and s.effect == "Allow" and action in c.actions:
                verdict = self.verdict(s.condition, ctx)
                if verdict.status != "never" and self._touches(p, s, target, cover, ctx):
                    live.append((s, verdict))
        if not live:
            return None
        sources = tuple(sorted({s.source for s, _ in live}))
        if any(v.status == "always" for _, v in live):
            return sources, ()
        return sources, tuple(sorted({f"{s.source}: {v.reason}" for s, v in live}))

    def _unless_denied(
        self, p: Principal, action: str, target: str, ctx: tuple[tuple[str, str], ...]
    ) -> tuple[str, ...] | None:
        """None when a Deny applies unconditionally; else the conditions of the Denies that may."""
        unless: list[str] = []
        for c in self.compiled(p):
            s = c.statement
            if s.effect == "Deny" and action in c.actions and self._blankets(p, s, target, ctx):
                verdict = self.verdict(s.condition, ctx)
                if verdict.status == "always":
                    return None
                if verdict.status == "unknown":
                    unless.append(f"unless denied by {s.source}: {verdict.reason}")
        return tuple(unless)

    def bounded(self, p: Principal) -> bool:
        return any(s.layer == "boundary" for s in p.statements)

    def _layer_actions(self, p: Principal, layer: str) -> frozenset[str]:
        """Actions the live Allows of ``layer`` name, minus those denied everywhere unconditionally."""
        key = (p.id, layer)
        if key not in self._actions:
            ctx = self.context(p)
            allowed: set[str] = set()
            denied: set[str] = set()
            for c in self.compiled(p):
                s = c.statement
                verdict = self.verdict(s.condition, ctx)
                if s.effect == "Allow" and s.layer == layer and verdict.status != "never":
                    allowed |= c.actions
                elif s.effect == "Deny" and verdict.status == "always" and self._blankets(p, s, "*", ctx):
                    denied |= c.actions
            self._actions[key] = frozenset(allowed - denied)
        return self._actions[key]

    def actions(self, p: Principal) -> frozenset[str]:
        """Actions ``p`` may hold on some resource (resource scopes ignored)."""
        held = self._layer_actions(p, "identity")
        return held & self._layer_actions(p, "boundary") if self.bounded(p) else held

    def gains(self, p: Principal, target: Principal | None) -> bool:
        """Whether taking over ``target`` brings ``p`` something: admin, or an action it lacks."""
        if target is None:
            return False
        admin = self.admin(target)
        return (admin is not None and admin.level == "admin") or not self.actions(target) <= self.actions(p)

    def room(self, p: Principal) -> bool:
        """Whether rewriting its own policies can bring ``p`` more: its boundary leaves room."""
        return not self.bounded(p) or bool(self._layer_actions(p, "boundary") - self.actions(p))

    def unbound_gain(self, p: Principal) -> bool:
        """Whether lifting the boundary of ``p`` brings it more."""
        return self.bounded(p) and bool(self._layer_actions(p, "identity") - self.actions(p))

    # --- admin -----------------------------------------------------------------------------------

    def admin(self, p: Principal) -> AdminClass | None:
        if p.id not in self._admin:
            self._admin[p.id] = self._aws_admin(p) if p.provider == "aws" else self._gcp_admin(p)
        return self._admin[p.id]

    def _aws_admin(self, p: Principal) -> AdminClass | None:
        iam = self.catalog.actions_of_service("iam")
        writes = sorted(a for a in iam if self.catalog.access_level(a) == "Permissions management")
        grants = [self.access(p, a, "*", cover=True) for a in writes]
        own = [self.access(p, a, p.id) for a in writes]
        if writes and all(grants) and all(own):
            conditions = _merge(*(g.conditions for g in grants if g), *(g.conditions for g in own if g))
            return AdminClass("admin", f"holds all {len(writes)} IAM permissions-management actions on *", conditions)
        broad = sorted(
            {
                c.statement.source
                for c in self.compiled(p)
                if _is_broad(c.statement) and c.actions & self.actions(p)
                if self.verdict(c.statement.condition, self.context(p)).status != "never"
            }
        )
        if broad:
            return AdminClass("broad", f"'*' or NotAction grant on * from {', '.join(broad)}, short of every IAM write")
        return None

    def _gcp_admin(self, p: Principal) -> AdminClass | None:
        scopes = {r for s in p.statements for r in s.resources if _gcp_path(r).startswith(_GCP_CONTAINERS)}
        for permission in _GCP_ADMIN:
            for scope in sorted(scopes):
                grant = self.access(p, permission, scope)
                if grant is not None:
                    return AdminClass("admin", f"can rewrite the IAM policy of {scope}", grant.conditions)
        return None

    # --- trust -------------------------------------------------------------------------------------

    def _admits(self, role: Principal, p: Principal) -> tuple[bool, tuple[str, ...]] | None:
        """(names p's ARN in its own account, conditions) if the trust policy of ``role`` admits ``p``."""
        ctx = self.context(p)
        best: tuple[bool, tuple[str, ...]] | None = None
        unless: list[str] = []
        for t in role.trust:
            how = _names(t, p)
            if how is None or not _acts(t, "sts:AssumeRole"):
                continue
            verdict = self.verdict(t.condition, ctx)
            if verdict.status == "never":
                continue
            if t.effect == "Deny":
                if verdict.status == "always":
                    return None
                unless.append(f"unless the trust policy of {role.name} denies: {verdict.reason}")
                continue
            direct = how == "direct" and role.account == p.account
            conditions = () if verdict.status == "always" else (f"trust policy of {role.name}: {verdict.reason}",)
            if best is None or (direct, -len(conditions)) > (best[0], -len(best[1])):
                best = (direct, conditions)
        return None if best is None else (best[0], _merge(best[1], unless))

    def assume(self, p: Principal, role: Principal, action: str = "sts:AssumeRole") -> Access | None:
        """Whether ``p`` can assume ``role``: trust admits it, and its own policies allow it when needed."""
        admitted = self._admits(role, p)
        if admitted is None:
            return None
        direct, conditions = admitted
        if direct:
            ctx = self.context(p)
            # A trust policy naming a user's ARN is not limited by the user's boundary; a role's is.
            capped = p.kind == "role" and self.bounded(p)
            if capped and self._allowed_by(p, "boundary", action, role.id, ctx, False) is None:
                return None
            unless = self._unless_denied(p, action, role.id, ctx)
            if unless is None:
                return None
            return Access(action, role.id, (f"trust policy of {role.name}",), _merge(conditions, unless))
        grant = self.access(p, action, role.id)
        return None if grant is None else replace(grant, conditions=_merge(grant.conditions, conditions))

    def runs(self, role: Principal, service: str) -> tuple[str, ...] | None:
        """Trust conditions if ``service`` can assume ``role`` (EC2 also needs an instance profile)."""
        if role.kind != "role" or (service == _EC2 and not role.instance_profiles):
            return None
        for t in role.trust:
            if t.effect == "Allow" and service in t.services and _acts(t, "sts:AssumeRole"):
                verdict = self.verdict(t.condition, ())
                if verdict.status == "always":
                    return ()
                if verdict.status == "unknown":
                    return (f"trust policy of {role.name}: {verdict.reason}",)
        return None

    # --- targets -------------------------------------------------------------------------------------

    def targets(self, p: Principal, spec: TargetSpec) -> list[_Target]:
        if spec.kind == "resources":
            return [_Target(_template(r, p.account)) for r in spec.resources]
        found = self._entities(p, spec)
        if spec.resources:
            patterns = [_template(r, p.account) for r in spec.resources]
            found = [t for t in found if any(self._glob("touch", x, t.resource) for x in patterns)]
        return found

    def default_targets(self, p: Principal, action: str) -> list[_Target]:
        """Where an action without ``works_on`` works: its catalog ARN formats, else anywhere."""
        formats = self.arn_formats.get(action) or ["*"]
        return [_Target(_template(f, p.account)) for f in formats]

    def _may_admit(self, p: Principal) -> list[Principal]:
        """The roles whose trust policy may admit ``p`` (the exact check is :meth:`_admits`)."""
        partition = p.id.split(":")[1] if p.id.count(":") >= 5 else "aws"
        keys = (p.id, p.account, f"arn:{partition}:iam::{p.account}:root")
        found = {q.id: q for key in keys for q in self._trusting.get(key, ())}
        found.update((q.id, q) for q in self._open)
        return [q for q in found.values() if q.id != p.id]

    def _entities(self, p: Principal, spec: TargetSpec) -> list[_Target]:
        kind = spec.kind
        if kind in ("assumable-role", "self-or-assumable-role"):
            trusting = self._may_admit(p)
            if kind == "assumable-role":
                return [_Target(q.id, q, assumed=True) for q in trusting]
            own = [_Target(p.id, p)] if p.kind == "role" else []
            return own + [_Target(q.id, q, assumed=True) for q in trusting if "/aws-service-role/" not in q.id]
        others = [q for q in self._by_kind.get(_KIND_OF_TARGETS.get(kind, kind), []) if q.id != p.id]
        roles = [q for q in self._by_kind.get("role", []) if q.id != p.id]
        changeable = [q for q in roles if "/aws-service-role/" not in q.id]
        if kind in ("self", "bounded-self"):
            keep = p.kind in ("user", "role") and (kind == "self" or self.bounded(p))
            return [_Target(p.id, p)] if keep else []
        if kind == "own-group":
            return [_Target(g, self.by_id.get(g)) for g in p.groups]
        if kind == "group":
            groups = [q for q in others if q.id not in p.groups]
            return [_Target(q.id, q) for q in groups] if p.kind == "user" else []
        if kind == "other-user":
            return [_Target(q.id, q) for q in others]
        if kind == "role":
            return [_Target(q.id, q) for q in changeable]
        if kind == "role-assumable-by":
            return [t for t in self._service_roles(spec.services) if t.resource != p.id]
        return [_Target(q.resource, q) for q in others]

    def _service_roles(self, services: Iterable[str]) -> list[_Target]:
        """Every role one of ``services`` can assume (computed once per set of services)."""
        key = tuple(services)
        if key in self._service_cache:
            return self._service_cache[key]
        found = []
        for role in self._by_kind.get("role", []):
            for service in services:
                conditions = self.runs(role, service)
                if conditions is not None:
                    context = (("iam:PassedToService", service),)
                    found.append(_Target(role.id, role, conditions, context, note=f"{service} can assume it"))
        self._service_cache[key] = found
        return found

    # --- methods -------------------------------------------------------------------------------------

    def grant(self, p: Principal, action: str, target: _Target) -> Access | None:
        if target.assumed and action == "sts:AssumeRole" and target.principal is not None:
            return self.assume(p, target.principal, action)
        grant = self.access(p, action, target.resource, target.context)
        if grant is None or not target.assumed or target.principal is None:
            return grant
        hop = self.assume(p, target.principal)
        return None if hop is None else replace(grant, conditions=_merge(grant.conditions, hop.conditions))

    def useful(self, p: Principal, spec: TargetSpec | None, target: _Target) -> bool:
        """Whether using the method on ``target`` brings ``p`` more than it has."""
        if spec is None or spec.kind == "resources":
            return True
        if spec.kind in _GAIN_KINDS:
            return self.gains(p, target.principal)
        if spec.kind == "bounded-self":
            return self.unbound_gain(p)
        return target.assumed or self.room(p)

    def passing(
        self, p: Principal, spec: TargetSpec | None, actions: Sequence[str], gain_only: bool
    ) -> list[tuple[_Target, list[Access]]]:
        """Targets on which ``p`` holds every one of ``actions``, with the grants."""
        candidates = self.targets(p, spec) if spec is not None else self.default_targets(p, actions[0])
        out = []
        for target in candidates:
            if gain_only and not self.useful(p, spec, target):
                continue
            grants = [self.grant(p, a, target) for a in actions]
            if all(grants):
                out.append((target, [g for g in grants if g]))
        return out

    def fire(self, p: Principal, method: EscalationMethod) -> tuple[list[EscalationPath], list[_Edge]]:
        """(paths, chain edges) of ``method`` for ``p``."""
        needed = [a for a in method.requires if (method.spec(a) or TargetSpec()).kind != "assumable-role"]
        if not set(needed) <= self.actions(p):
            return [], []  # a quick no: an assumable role may need no grant, any other action does
        if any(self.access(p, a, "*", cover=True) is None for a in method.resource_star):
            return [], []
        groups: dict[TargetSpec | str, list[str]] = {}
        for action in method.requires:
            groups.setdefault(method.spec(action) or action, []).append(action)
        found: list[list[tuple[_Target, list[Access]]]] = []
        details: list[str] = []
        chained: list[tuple[_Target, list[Access]]] = []
        edges: list[_Edge] = []
        for key, actions in groups.items():
            spec = key if isinstance(key, TargetSpec) else None
            if method.chains and spec is not None and spec.kind in CHAIN_KINDS:
                everyone = self.passing(p, spec, actions, gain_only=False)
                edges = [(t.principal.id, _conditions_of(t, gs)) for t, gs in everyone if t.principal]
                chained = [(t, gs) for t, gs in everyone if self.useful(p, spec, t)]
                continue
            hits = self.passing(p, spec, actions, gain_only=True)
            if not hits:
                return [], edges
            found.append(hits)
            details += _describe(spec, actions, hits)
        runs = self._runs_as(p, method.runs_as)
        if method.runs_as and not runs:
            return [], edges
        if runs:
            found.append([(t, []) for t in runs])
            details.append(f"an existing {'/'.join(method.runs_as)} resource may run as {_names_of(runs)}")
        base = _path(method, found, details)
        if not method.chains:
            return [base], edges
        return [_chain_path(base, t, gs) for t, gs in chained], edges

    def _runs_as(self, p: Principal, services: Sequence[str]) -> list[_Target]:
        candidates = [t for t in self._service_roles(services) if t.resource != p.id]
        found = [t for t in candidates if self.gains(p, t.principal)]
        return sorted(found, key=lambda t: len(t.conditions))

    def paths(self, p: Principal, methods: Sequence[EscalationMethod]) -> tuple[list[EscalationPath], list[_Edge]]:
        admin = self.admin(p)
        if admin is not None and admin.level == "admin":
            return [], []
        paths: list[EscalationPath] = []
        edges: dict[str, tuple[str, ...]] = {}
        for method in methods:
            found, hops = self.fire(p, method)
            paths += found
            for target, conditions in hops:
                if target not in edges or len(conditions) < len(edges[target]):
                    edges[target] = conditions
        return paths, sorted(edges.items())


#: The principal kind each target kind enumerates.
_KIND_OF_TARGETS = {"group": "group", "other-user": "user", "service-account": "service_account"}


def _is_broad(s: Statement) -> bool:
    """``Action: "*"`` (any service) or ``NotAction`` on every resource."""
    every = s.not_resource or "*" in s.resources
    wild = s.not_action or any(has_wildcard(a.split(":", 1)[0]) for a in s.actions)
    return s.effect == "Allow" and s.layer == "identity" and every and wild


def _names(t: TrustStatement, p: Principal) -> str | None:
    """How a trust statement names ``p``: "direct" (its ARN), "account" (account, root, "*"), or None."""
    partition = p.id.split(":")[1] if p.id.count(":") >= 5 else "aws"
    accounts = {p.account, f"arn:{partition}:iam::{p.account}:root"}
    listed = set(t.aws)
    if t.not_principal:
        return None if p.id in listed or listed & accounts else "account"
    if p.id in listed:
        return "direct"
    return "account" if listed & accounts or "*" in listed else None


def _conditions_of(target: _Target, grants: Sequence[Access]) -> tuple[str, ...]:
    return _merge(target.conditions, *(g.conditions for g in grants))


def _names_of(targets: Iterable[_Target]) -> str:
    return ", ".join(dict.fromkeys(_name(t) for t in targets))


def _describe(
    spec: TargetSpec | None, actions: Sequence[str], hits: Sequence[tuple[_Target, list[Access]]]
) -> list[str]:
    """``ACTION on NAME (note), ...`` for targets that are identities (at most five named)."""
    if spec is None or spec.kind == "resources":
        return []
    names = list(dict.fromkeys(f"{_name(t)} ({t.note})" if t.note else _name(t) for t, _ in hits))
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return [f"{'+'.join(actions)} on {', '.join(names[:5])}{more}"]


def _name(target: _Target) -> str:
    return target.principal.name if target.principal else target.resource


def _best(hits: Sequence[tuple[_Target, list[Access]]]) -> tuple[str, ...]:
    """Conditions of the least conditional of ``hits``."""
    return min((_conditions_of(t, gs) for t, gs in hits), key=len)


def _path(
    method: EscalationMethod, found: Sequence[Sequence[tuple[_Target, list[Access]]]], details: list[str]
) -> EscalationPath:
    grants: dict[str, tuple[list[str], list[str]]] = {}
    for hits in found:
        for _, accesses in hits:
            for access in accesses:
                targets, sources = grants.setdefault(access.action, ([], []))
                targets.append(access.target)
                sources += access.sources
    return EscalationPath(
        method=method.id,
        severity=method.severity,
        reason=method.reason,
        grants=tuple(ActionGrant(a, _merge(t), _merge(s)) for a, (t, s) in grants.items()),
        conditions=_merge(*(_best(hits) for hits in found)),
        detail="; ".join(details),
    )


def _chain_path(base: EscalationPath, target: _Target, grants: Sequence[Access]) -> EscalationPath:
    """The path of a chaining method on one target: ``via`` ends with the identity it becomes."""
    extra = tuple(ActionGrant(g.action, (g.target,), g.sources) for g in grants)
    return replace(
        base,
        grants=base.grants + extra,
        conditions=_merge(base.conditions, _conditions_of(target, grants)),
        via=(target.principal.id if target.principal else target.resource,),
    )


# --- public API ------------------------------------------------------------------------------------


def effective_permissions(
    principal: Principal,
    actions: Iterable[str],
    targets: Iterable[str],
    catalog: Catalog,
    now: datetime,
    context: Mapping[str, str] | None = None,
) -> dict[tuple[str, str], Access]:
    """(action, target) -> how ``principal`` effectively holds it, for every pair it holds.

    ``actions`` may hold wildcards (expanded with the catalog); ``targets`` are resource ARNs or
    patterns (a grant counts when it can touch the pattern); ``context`` gives condition keys whose
    value is known (e.g. ``iam:PassedToService``).
    """
    engine = _Engine([principal], catalog, now, None)
    extra = tuple(sorted((context or {}).items()))
    wanted = sorted(catalog.expand(actions))
    found: dict[tuple[str, str], Access] = {}
    for target in targets:
        for action in wanted:
            grant = engine.access(principal, action, target, extra)
            if grant is not None:
                found[(action, target)] = grant
    return found


def classify_admin(principal: Principal, catalog: Catalog, now: datetime) -> AdminClass | None:
    """``admin`` when the effective grant includes every IAM permissions-management write on ``*``
    (it can rewrite its own policies; GCP: the IAM policy of its project or folder), ``broad`` for
    a surviving ``*`` / ``NotAction`` grant short of that, None otherwise."""
    return _Engine([principal], catalog, now, None).admin(principal)


def find_paths(
    principals: Iterable[Principal],
    methods: Iterable[EscalationMethod],
    catalog: Catalog,
    now: datetime,
    arn_formats: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[EscalationPath]]:
    """Escalation paths of every principal of ``catalog.provider`` (groups are targets only).

    Pass *every* principal of the account, not only the audited ones: other users, groups and
    roles are the targets of the methods and the links of role chains. ``arn_formats``
    (:func:`auditor.catalog.aws_resource_arn_formats`) tells where actions without ``works_on``
    work; without it, any grant of them counts.
    """
    engine = _Engine(principals, catalog, now, arn_formats)
    usable = [m for m in methods if m.provider == catalog.provider]
    actors = [p for p in engine.principals if p.kind != "group"]
    direct: dict[str, list[EscalationPath]] = {}
    edges: dict[str, list[_Edge]] = {}
    for p in actors:
        direct[p.id], edges[p.id] = engine.paths(p, usable)
    return {p.id: _with_chains(p.id, direct, edges) for p in actors}


def _with_chains(
    start: str, direct: Mapping[str, list[EscalationPath]], edges: Mapping[str, list[_Edge]]
) -> list[EscalationPath]:
    """Paths of ``start`` and of every identity it can become, breadth first (shortest chain, cycles safe)."""
    found = list(direct.get(start, []))
    seen = {start}
    queue: deque[tuple[str, tuple[str, ...], tuple[str, ...]]] = deque([(start, (), ())])
    while queue:
        node, via, conditions = queue.popleft()
        for target, hop in edges.get(node, []):
            if target in seen:
                continue
            seen.add(target)
            chain, needs = (*via, target), _merge(conditions, hop)
            found += [
                replace(path, via=chain + path.via, conditions=_merge(needs, path.conditions))
                for path in direct.get(target, [])
            ]
            queue.append((target, chain, needs))
    return found


# --- adapters -------------------------------------------------------------------------------------


def statements_from_grants(rows: Iterable[Mapping[str, Any]]) -> tuple[Statement, ...]:
    """Statements from rows of the normalized GRANTS frame (``auditor.model.GRANTS``) of one identity."""
    return tuple(
        Statement(
            effect=row["effect"],
            actions=tuple(row["actions"] or ()),
            not_action=bool(row["not_action"]),
            resources=tuple(row["resources"] or ()) or (() if row["not_resource"] else ("*",)),
            not_resource=bool(row["not_resource"]),
            condition=row["condition"],
            layer=row["layer"],
            source=row["source"],
        )
        for row in rows
    )


def _listed(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def _trust_statement(raw: Mapping[str, Any]) -> TrustStatement | None:
    negated = "NotPrincipal" in raw
    principal = raw.get("NotPrincipal" if negated else "Principal")
    if principal == "*":
        principal = {"AWS": "*"}
    if raw.get("Effect") not in ("Allow", "Deny") or not isinstance(principal, Mapping):
        return None
    condition = raw.get("Condition")
    return TrustStatement(
        effect=raw["Effect"],
        aws=_listed(principal.get("AWS")),
        services=_listed(principal.get("Service")),
        federated=_listed(principal.get("Federated")),
        not_principal=negated,
        actions=_listed(raw.get("NotAction", raw.get("Action"))),
        not_action="NotAction" in raw,
        condition=json.dumps(condition, sort_keys=True) if condition else None,
    )


def trust_from_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[TrustStatement, ...]:
    """Trust statements from rows of the normalized TRUSTS frame of one role
    (``principals`` as ``"AWS:<arn or account>"``, ``"Service:<name>"``, ``"Federated:<idp>"``, ``"*"``)."""
    found = []
    for row in rows:
        named: dict[str, list[str]] = {"AWS": [], "Service": [], "Federated": []}
        for principal in row["principals"] or ():
            kind, _, name = ("AWS:*" if principal == "*" else principal).partition(":")
            named.setdefault(kind, []).append(name)
        found.append(
            TrustStatement(
                effect=row["effect"],
                aws=tuple(named["AWS"]),
                services=tuple(named["Service"]),
                federated=tuple(named["Federated"]),
                not_principal=bool(row["not_principal"]),
                actions=tuple(row["actions"] or ()),
                not_action=bool(row["not_action"]),
                condition=row["condition"],
            )
        )
    return tuple(found)


def aws_trust(document: Any) -> tuple[TrustStatement, ...]:
    """Statements of a decoded AWS trust policy (``AssumeRolePolicyDocument``); unreadable ones are skipped."""
    raw = document.get("Statement", []) if isinstance(document, Mapping) else []
    listed = raw if isinstance(raw, list) else [raw]
    parsed = (_trust_statement(s) for s in listed if isinstance(s, Mapping))
    return tuple(s for s in parsed if s is not None)
