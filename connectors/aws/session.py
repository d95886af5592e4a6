"""AWS sessions for live collection: credentials, assumed roles, client settings and error messages.

Every boto3 client the live connector uses is made here, so the retry mode, the user agent, endpoint
overrides and the test hook apply to all of them, and every AWS error is turned into one line that
names the IAM action and the shipped auditor policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3
import botocore.exceptions as bce
from botocore.config import Config
from botocore.parsers import ResponseParserError

from auditor import __version__
from auditor import ruleset as rule_files
from auditor.catalog import aws_catalog
from auditor.connectors.aws.actions import EventActionMapper
from auditor.errors import ConnectorError, InputError

#: Where the minimal read-only policy the live connector needs is shipped (named in every denial).
POLICY_PATH = "auditor/aws-auditor-policy.json"
DEFAULT_REGION = "us-east-1"

EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
THROTTLED_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown"}
)
#: What a failed call can raise besides ClientError.
SDK_ERRORS = (bce.ClientError, bce.BotoCoreError, ResponseParserError)
#: Called with every boto3 session the connector creates (tests register botocore event hooks here).
SessionHook = Callable[[boto3.Session], None]


@dataclass(frozen=True)
class Endpoints:
    """``--endpoint-url URL`` (every service) and ``--endpoint-url SERVICE=URL`` (one service)."""

    default: str | None = None
    per_service: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: Sequence[str]) -> Endpoints:
        default, per_service = None, {}
        for value in values:
            service, sep, url = value.partition("=")
            if sep and "://" not in service:
                per_service[service.strip().lower()] = url.strip()
            elif default is None:
                default = value.strip()
            else:
                raise InputError(
                    f"--endpoint-url given twice without a service ({default}, {value})",
                    "use --endpoint-url URL once, and SERVICE=URL for single services",
                )
        return cls(default, per_service)

    def url(self, service: str) -> str | None:
        return self.per_service.get(service, self.default)


@cache
def _mapper() -> EventActionMapper:
    return EventActionMapper.from_rules(rule_files.load(), aws_catalog())


def iam_action(endpoint_prefix: str, operation: str) -> str:
    """The IAM action an API operation needs, by the project's own CloudTrail mapping."""
    mapping = _mapper().map(f"{endpoint_prefix}.amazonaws.com", operation)
    return mapping.actions[0] if mapping.actions else f"{endpoint_prefix}:{operation}"


def _is_denied(code: str) -> bool:
    return _mapper().is_denied_error(code) or code in ("AccessDenied", "AccessDeniedException")


def explain(exc: Exception, principal: str, endpoint_prefix: str = "") -> ConnectorError:
    """One line for any error boto3 raises: what was refused or failed, for whom, and what to do."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), " ".join(str(error.get("Message", "")).split())[:300]
        action = iam_action(endpoint_prefix, exc.operation_name) if endpoint_prefix else exc.operation_name
        if _is_denied(code):
            return ConnectorError(f"{action} denied for {principal}", f"grant it: see {POLICY_PATH}")
        if code in EXPIRED_CODES:
            return ConnectorError(
                f"AWS credentials of {principal} expired ({action}: {code})",
                "refresh them (e.g. `aws sso login`) and rerun",
            )
        if code in THROTTLED_CODES:
            return ConnectorError(
                f"{action} still throttled by AWS after 10 adaptive retries", "rerun later or lower --download-workers"
            )
        return ConnectorError(f"{action} failed for {principal}: {code}: {message}")
    if isinstance(exc, bce.ProfileNotFound):
        return ConnectorError(f"AWS profile {exc.kwargs.get('profile')!r} not found", "check ~/.aws/config")
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return ConnectorError(
            "no AWS credentials found", "configure them (`aws configure`, `aws sso login`) or pass --profile"
        )
    if isinstance(exc, (bce.SSOTokenLoadError, bce.UnauthorizedSSOTokenError, bce.TokenRetrievalError)):
        return ConnectorError(f"AWS SSO session unusable ({exc})", "run `aws sso login` and rerun")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        return ConnectorError(f"cannot reach AWS ({exc})", "check --region, --endpoint-url and the network")
    if isinstance(exc, ResponseParserError):  # e.g. an HTML error page from a proxy or endpoint
        return ConnectorError(f"unreadable answer from AWS ({str(exc).splitlines()[0]})", "check --endpoint-url")
    if isinstance(exc, bce.BotoCoreError):
        return ConnectorError(f"AWS SDK error: {exc}")
    raise exc


def prefix_of(client: Any) -> str:
    return client.meta.service_model.endpoint_prefix


@dataclass(frozen=True)
class AccountSession:
    """Credentials for one account, with the principal they act as (named in error messages)."""

    account: str
    principal: str
    session: boto3.Session
    factory: SessionFactory

    def client(self, service: str, region: str | None = None) -> Any:
        return self.factory.client(self.session, service, region)

    def fail(self, exc: Exception, client: Any) -> ConnectorError:
        return explain(exc, self.principal, prefix_of(client))


class SessionFactory:
    """Makes sessions and clients; boto3 sessions are not thread-safe, so client creation is locked."""

    def __init__(
        self,
        profile: str | None,
        region: str | None,
        endpoints: Endpoints,
        hook: SessionHook | None = None,
        pool_size: int = 32,
    ) -> None:
        self.profile = profile
        self.endpoints = endpoints
        self.hook = hook
        self.config = Config(
            retries={"mode": "adaptive", "max_attempts": 10},
            user_agent_extra=f"auditor/{__version__}",
            max_pool_connections=max(10, pool_size),
        )
        self._lock = threading.Lock()
        self._region = region

    def _new(self, **kwargs: Any) -> boto3.Session:
        session = boto3.Session(**kwargs)
        if self.hook is not None:
            self.hook(session)
        return session

    @property
    def region(self) -> str:
        return self._region or DEFAULT_REGION

    def client(self, session: boto3.Session, service: str, region: str | None = None) -> Any:
        with self._lock:
            return session.client(
                service,
                region_name=region or self.region,
                endpoint_url=self.endpoints.url(service),
                config=self.config,
            )

    def base(self) -> AccountSession:
        """The caller's own credentials (standard boto3 resolution: profile, env, SSO, instance role)."""
        try:
            session = self._new(profile_name=self.profile) if self.profile else self._new()
            self._region = self._region or session.region_name
            identity = self.client(session, "sts").get_caller_identity()
        except Exception as exc:
            raise explain(exc, "the configured credentials", "sts") from None
        return AccountSession(identity["Account"], identity["Arn"], session, self)

    def assume(self, base: AccountSession, account: str, role_name: str, external_id: str | None) -> AccountSession:
        """Credentials in a member account via ``sts:AssumeRole`` (read-only session name ``auditor``)."""
        partition = base.principal.split(":")[1] if base.principal.count(":") >= 5 else "aws"
        role_arn = f"arn:{partition}:iam::{account}:role/{role_name}"
        sts = base.client("sts")
        params: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": "auditor"}
        if external_id:
            params["ExternalId"] = external_id
        try:
            response = sts.assume_role(**params)
        except Exception as exc:
            error = explain(exc, base.principal, "sts")
            raise ConnectorError(f"{error} (assuming {role_arn})", error.hint) from None
        creds = response["Credentials"]
        session = self._new(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=self.region,
        )
        return AccountSession(account, response["AssumedRoleUser"]["Arn"], session, self)
