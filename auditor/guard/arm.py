"""An Azure Resource Manager request's operation, from its method and URL path alone.

``/subscriptions/S/resourceGroups/G/providers/Microsoft.X/t1/n1/t2/n2`` names resource type
``Microsoft.X/t1/t2``; the method gives the verb (GET/HEAD ``read``, PUT/PATCH ``write``, DELETE
``delete``). A POST to ``<resource>/<name>`` is the action ``<type>/<name>/action``
(``.../storageAccounts/sa/listKeys`` -> ``Microsoft.Storage/storageAccounts/listKeys/action``).
The innermost ``providers`` segment wins (an extension resource such as a role assignment on a
vault is ``Microsoft.Authorization/roleAssignments``). Paths without one are Microsoft.Resources'
own (subscriptions, resource groups, tags, deployments at subscription level via the provider).
Anything else (data-plane URLs, unknown shapes) is not an ARM operation: ``None``, and the guard blocks it.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

VERBS = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}
_RESOURCES = "Microsoft.Resources"
#: Microsoft.Resources types addressed without a ``providers`` segment.
_OWN_TYPES = {"subscriptions": "subscriptions", "resourcegroups": "resourceGroups", "tags": "tags"}


def operation(method: str, url: str) -> str | None:
    """The ARM operation of one request, or None when the path is not an ARM resource path."""
    method = method.upper()
    path = urlsplit(url).path
    segments = [unquote(s) for s in path.split("/") if s]
    if not segments:
        return None
    lower = [s.lower() for s in segments]
    if "providers" in lower:
        at = len(lower) - 1 - lower[::-1].index("providers")
        rest = segments[at + 1 :]
        if not rest or "." not in rest[0]:
            return None
        namespace, tail = rest[0], rest[1:]
        if not tail:
            return f"{namespace}/{'register/action' if method == 'POST' else VERBS.get(method, 'read')}"
        return _typed(namespace, tail, method)
    if lower[0] != "subscriptions":
        return None
    # /subscriptions/S[/resourceGroups/G[/resources]], /subscriptions/S/tagNames/...
    types = [_OWN_TYPES.get(s.lower(), s) for s in segments[0::2]]
    return _verb(f"{_RESOURCES}/{'/'.join(types)}", method, len(segments) % 2 == 1)


def _typed(namespace: str, tail: list[str], method: str) -> str:
    types = tail[0::2]
    collection_or_action = len(tail) % 2 == 1
    if collection_or_action and method == "POST":
        return f"{namespace}/{'/'.join(types)}/action"
    return _verb(f"{namespace}/{'/'.join(types)}", method, collection_or_action)


def _verb(resource_type: str, method: str, collection: bool) -> str:
    if method == "POST":
        return f"{resource_type}/action" if collection else f"{resource_type}/write"
    return f"{resource_type}/{VERBS.get(method, 'write')}"
