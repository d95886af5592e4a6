"""What the Azure evidence cannot show, once storage resource logs are given: OBSERVABILITY rows.

Without data-plane logs every dataAction is unobservable (one account-wide row). With them, a
storage dataAction of a logged service becomes observable for one identity only when every
assignment granting it to that identity sits at or below an account service the logs cover for the
whole window; a grant anywhere else (the subscription, an account without complete logs) could be
used there unseen. The diff takes the first matching row, so identity rows come first, and the
account-wide rows leave out the actions some identity can be observed using (the identity rows keep
them unobservable for everybody else).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from auditor.connectors.azure.storage_records import SERVICES
from auditor.matching import any_glob_regex


@dataclass(frozen=True)
class Coverage:
    """Which account services the storage logs cover for the whole window."""

    covered: Mapping[str, str]  # "<account id lower>/<service>services" -> account id as written
    services: frozenset[str]  # the services whose logs were given at all

    def covers(self, scope: str, service: str) -> bool:
        lowered = scope.lower().rstrip("/")
        for key in self.covered:
            account, _, logged = key.rpartition("/")
            if logged == f"{service}services" and (lowered == account or lowered.startswith(account + "/")):
                return True
        return False

    def names(self) -> str:
        names = sorted({f"{a.rsplit('/', 1)[-1]} ({k.rsplit('/', 1)[-1][:-8]})" for k, a in self.covered.items()})
        return ", ".join(names) or "no account"


def storage_service(action: str) -> str | None:
    """The storage service of a dataAction (``Microsoft.Storage/storageAccounts/blobServices/...``)."""
    parts = action.lower().split("/")
    if len(parts) > 3 and parts[:2] == ["microsoft.storage", "storageaccounts"] and parts[2].endswith("services"):
        service = parts[2][: -len("services")]
        return service if service in SERVICES else None
    return None


def _grant_scopes(grants: pl.DataFrame, agents: frozenset[str], actions: set[str]) -> dict[tuple[str, str], set[str]]:
    """(identity, action) -> the scopes of the assignments granting it."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    rows = grants.filter(
        pl.col("identity").is_in(list(agents)) & (pl.col("effect") == "Allow") & (pl.col("layer") == "identity")
    )
    for identity, granted, scope in rows.select("identity", "actions", "scope").iter_rows():
        for action in set(granted or ()) & actions:
            found[(identity, action)].add(scope or "")
    return found


def observability_rows(
    subscription: str,
    operations: Mapping[str, bool],
    data_reason: str,
    patterns: Iterable[tuple[tuple[str, ...], str]],
    grants: pl.DataFrame,
    agents: frozenset[str],
    coverage: Coverage | None,
    unattributed: Mapping[str, frozenset[str]] | None = None,
) -> list[dict[str, Any]]:
    """OBSERVABILITY rows for one subscription (``coverage`` None: no storage logs given).
    ``unattributed``: identity -> the services it made requests to that carry no authorization
    details; whichever dataAction those used, none of that service's may be called unused."""
    data = sorted(n for n, is_data in operations.items() if is_data)
    logged = {a for a in data if coverage and storage_service(a) in coverage.services}
    observable: dict[str, set[str]] = defaultdict(set)  # identity -> actions
    reasons: dict[tuple[str, str], str] = {}  # (identity, action) -> why not
    if coverage is not None and coverage.covered:
        for (identity, action), scopes in sorted(_grant_scopes(grants, agents, logged).items()):
            service = storage_service(action) or ""
            outside = sorted(s for s in scopes if not coverage.covers(s, service))
            if service in (unattributed or {}).get(identity, ()):
                reasons[(identity, action)] = (
                    f"the identity's {service} requests without authorization details (see unmapped) may have used it"
                )
            elif outside:
                reasons[(identity, action)] = (
                    f"granted on {', '.join(outside)}; storage logs cover the whole window only for {coverage.names()}"
                )
            else:
                observable[identity].add(action)
    seen = set().union(*observable.values()) if observable else set()
    by_reason: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (identity, action), reason in reasons.items():
        by_reason[(identity, reason)].append(action)
    rows = [_row(subscription, identity, actions, reason) for (identity, reason), actions in sorted(by_reason.items())]
    if coverage is not None:
        unseen = sorted(logged - seen)
        if unseen:
            why = (
                f"data-plane operation (dataAction): storage logs cover the whole window only for {coverage.names()}, "
                "not where it is granted"
            )
            rows.append(_row(subscription, None, unseen, why))
    rest = sorted(set(data) - logged)
    if rest:
        rows.append(_row(subscription, None, rest, data_reason))
    for globs, reason in patterns:
        if not seen:
            rows.append(_row(subscription, None, list(globs), reason))
            continue
        regex = any_glob_regex(list(globs))
        matched = sorted(n for n in operations if regex.fullmatch(n) and n not in seen)
        rows.append(_row(subscription, None, matched, reason))
    return rows


def _row(subscription: str, identity: str | None, actions: list[str], reason: str) -> dict[str, Any]:
    return {"provider": "azure", "account": subscription, "identity": identity, "actions": actions, "reason": reason}
