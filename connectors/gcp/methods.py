"""Calls logged without ``authorizationInfo``: still observed, so never unused.

Some Cloud Audit Log entries name their ``methodName`` but record no permission check (the last
entry of a long-running operation, some services' own entries). Such a call is mapped to a
permission only when that is unambiguous:

1. the same logs show other calls of the same method with ``authorizationInfo``, and every one of
   them checked the same permissions (learned from the logs: evidence ``audit-log-method``);
2. the method name is itself exactly one catalog permission once its version prefix is dropped
   (``beta.compute.instances.stop`` -> ``compute.instances.stop``) or, for ``Verb`` + ``Resource``
   names (``google.iam.admin.v1.CreateServiceAccountKey``), exactly one catalog permission
   ``<service>.<resource>s.<verb>`` exists.

Otherwise every permission of that API service becomes *unobservable* for that identity: the call
happened, the permission it used cannot be told, so none of them may be called unused or denied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from auditor.connectors.gcp.rules import GcpRules

EVIDENCE = "audit-log-method"
_VERSION = re.compile(r"^(?:v\d+[a-z0-9]*|beta\d*|alpha\d*)$")
_CAMEL = re.compile(r"[A-Z][a-z0-9]*")


@dataclass
class Resolved:
    usage: list[dict[str, Any]] = field(default_factory=list)
    observability: list[dict[str, Any]] = field(default_factory=list)
    unmapped: list[dict[str, Any]] = field(default_factory=list)


def derived_permissions(service: str, method: str, catalog: Iterable[str]) -> tuple[str, ...]:
    """The one catalog permission a method name spells, or () when it spells none or several."""
    known = set(catalog)
    parts = [p for p in method.split(".") if p and not _VERSION.match(p)]
    if len(parts) >= 3 and ".".join(parts[-3:]) in known:
        return (".".join(parts[-3:]),)
    prefix = service.split(".", 1)[0]
    words = _CAMEL.findall(parts[-1]) if parts else []
    if len(words) < 2:
        return ()
    verb, noun = words[0].lower(), words[1].lower() + "".join(words[2:])
    candidates = {f"{prefix}.{noun}{plural}.{verb}" for plural in ("", "s", "es")} & known
    return (candidates.pop(),) if len(candidates) == 1 else ()


def resolve(
    unchecked: Mapping[tuple[str, str, str, str], list[Any]],
    method_checks: Mapping[tuple[str, str], frozenset[str]],
    catalog: Iterable[str],
    rules: GcpRules,
) -> Resolved:
    """Usage, observability and listing rows for the calls logged without a permission check."""
    permissions = sorted(set(catalog))
    out = Resolved()
    for (project, principal, service, method), (calls, first, last) in sorted(unchecked.items()):
        learned = method_checks.get((service, method))
        mapped = tuple(sorted(learned)) if learned else derived_permissions(service, method, permissions)
        if mapped:
            how = "the permissions its other logged calls checked" if learned else "its method name"
            out.usage += [
                {
                    "provider": "gcp",
                    "account": project,
                    "identity": principal,
                    "action": permission,
                    "outcome": "used",
                    "evidence": EVIDENCE,
                    "calls": calls,
                    "first_seen": first,
                    "last_seen": last,
                    "resources": [],
                    "all_with_resource": False,
                }
                for permission in mapped
            ]
            reason = f"logged without authorizationInfo: mapped to {', '.join(mapped)} by {how}"
        else:
            scope = [p for p in permissions if rules.service(p) == service] or [f"{service.split('.', 1)[0]}.*"]
            out.observability.append(
                {
                    "provider": "gcp",
                    "account": project,
                    "identity": principal,
                    "actions": scope,
                    "reason": f"{calls:,} call(s) of {method} were logged without authorizationInfo: the "
                    f"{service} permission they used cannot be told",
                }
            )
            reason = f"logged without authorizationInfo: {service} permissions kept as unobservable"
        out.unmapped.append(
            {
                "provider": "gcp",
                "account": project,
                "identity": principal,
                "event": f"{service}:{method}",
                "calls": calls,
                "reason": reason,
            }
        )
    return out
