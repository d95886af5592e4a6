"""Live AWS collection: one account or a whole organization, written as an offline snapshot.

:func:`collect_snapshot` gathers grants, usage (the trail bucket, ``LookupEvents`` or an Athena
aggregate), the trail's event selectors and Access Advisor into a folder that
:class:`~auditor.connectors.aws.files.AwsFiles` reads, plus a ``manifest.json``. ``auditor audit
--aws`` collects into such a folder and audits it: a live audit and an offline audit of its snapshot
are the same computation. Only List/Get/Describe/Lookup/Generate calls and Athena's
StartQueryExecution are made; nothing is written to any cloud resource (Athena writes its own result
file, see :mod:`auditor.connectors.aws.athena`).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from auditor import __version__
from auditor.connectors.aws import access_advisor as aws_access_advisor
from auditor.connectors.aws import athena as aws_athena
from auditor.connectors.aws import lookup_events as aws_lookup
from auditor.connectors.aws import s3_trail as s3trail
from auditor.connectors.aws import snapshot as snap
from auditor.connectors.aws.iam import AUTH_KEYS, AuthorizationDetails
from auditor.connectors.aws.live_options import AdvisorScope, CollectRequest, LiveOptions, UsageSource
from auditor.connectors.aws.session import AccountSession, Endpoints, SessionFactory
from auditor.connectors.base import Progress, no_progress
from auditor.errors import ConnectorError
from auditor.fileio import write_json
from auditor.timefmt import iso_utc
from auditor.window import window_ending


@dataclass(frozen=True)
class Trail:
    """A trail whose bucket holds the logs; ``shared`` when it serves every account (org trail, --bucket)."""

    name: str
    arn: str | None
    bucket: str
    prefix: str
    home_region: str | None
    is_org: bool
    shared: bool = False


def collection_window(request: CollectRequest, now: datetime) -> tuple[datetime, datetime]:
    end = (request.until or now).astimezone(UTC).replace(microsecond=0)
    window = window_ending(end, request.days, "--until")
    return window.start, window.end


class _Collection:
    """One run: the shared state (sessions, pool, gaps) and the steps for each account."""

    def __init__(self, options: LiveOptions, root: Path, request: CollectRequest, progress: Progress) -> None:
        self.options, self.root, self.request, self.progress = options, root, request, progress
        self.factory = SessionFactory(
            options.profile,
            options.region,
            Endpoints.parse(options.endpoints),
            options.session_hook,
            options.download_workers,
        )
        self.started = datetime.now(UTC)
        self.start, self.end = collection_window(request, self.started)
        self.gaps: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.pool: Executor | None = None
        self.base: AccountSession | None = None
        self.shared: Trail | None = None
        self.shared_selectors: dict[str, Any] | None = None

    # -- bookkeeping ---------------------------------------------------------------------------

    def gap(self, account: str | None, scope: str, reason: str, severity: str = "error", count: int = 1) -> None:
        with self._lock:
            self.gaps.append(
                {"account": account, "scope": scope, "reason": reason, "severity": severity, "count": count}
            )

    def _write(self, name: str, data: Any) -> str:
        write_json(self.root / name, data)
        return name

    # -- the run -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        snap.prepare(self.root)
        clock = time.monotonic()
        self.base = base = self.factory.base()
        accounts = self._accounts(base) if self.options.org else [(base.account, None)]
        if self.options.usage_mode is not UsageSource.none and self.options.usage_mode is not UsageSource.lookup_events:
            self.shared = self._shared_trail(base)
        records: list[dict[str, Any]] = []
        with ThreadPoolExecutor(self.options.download_workers, thread_name_prefix="auditor-s3") as pool:
            self.pool = pool
            workers = max(1, min(self.options.account_workers, len(accounts)))
            with ThreadPoolExecutor(workers, thread_name_prefix="auditor-account") as account_pool:
                for done, record in enumerate(account_pool.map(self._account_or_gap, accounts), start=1):
                    records.append(record)
                    self.progress("AWS accounts", done, len(accounts))
        failed = [r for r in records if r["status"] == "failed"]
        if failed and len(failed) == len(records):
            raise ConnectorError(failed[0]["error"], failed[0].get("hint"))
        athena = self._athena(base) if self.options.usage_mode is UsageSource.athena else None
        seconds = time.monotonic() - clock
        for record in records:
            if record["status"] == "complete" and any(
                g["account"] == record["account"] and g["severity"] == "error" for g in self.gaps
            ):
                record["status"] = "partial"
        manifest = {
            "schema": snap.SCHEMA,
            "complete": True,
            "tool": {"name": "auditor", "version": __version__},
            "collected_at": iso_utc(self.started),
            "caller": base.principal,
            "window": {"start": iso_utc(self.start), "end": iso_utc(self.end), "days": self.request.days},
            "options": self.options.manifest(),
            "accounts": records,
            "athena": athena,
            "gaps": self.gaps,
            "stats": _stats(records, seconds),
        }
        write_json(self.root / snap.MANIFEST, manifest, indent=True)
        return manifest

    def _accounts(self, base: AccountSession) -> list[tuple[str, str | None]]:
        client = base.client("organizations")
        try:
            listed = [a for page in client.get_paginator("list_accounts").paginate() for a in page["Accounts"]]
        except Exception as exc:
            raise base.fail(exc, client) from None
        wanted = set(self.options.accounts)
        accounts = []
        for account in listed:
            if wanted and account["Id"] not in wanted:
                continue
            if account.get("Status", "ACTIVE") != "ACTIVE":
                self.gap(
                    account["Id"], "organizations:ListAccounts", f"account is {account['Status']}: skipped", "warning"
                )
                continue
            accounts.append((account["Id"], account.get("Name")))
        for missing in sorted(wanted - {a["Id"] for a in listed}):
            self.gap(missing, "--account", "not an account of the organization", "error")
        return accounts

    def _account_or_gap(self, account: tuple[str, str | None]) -> dict[str, Any]:
        account_id, name = account
        record: dict[str, Any] = {"account": account_id, "name": name, "status": "complete"}
        try:
            return self._account(record)
        except ConnectorError as exc:
            if not self.options.org:
                raise
            self.gap(account_id, f"account {account_id}", f"not collected: {exc.one_line()}")
            return record | {"status": "failed", "error": str(exc), "hint": exc.hint}

    def _account(self, record: dict[str, Any]) -> dict[str, Any]:
        assert self.base is not None
        account = record["account"]
        if account == self.base.account:
            session = self.base
        elif self.options.assume_role:
            session = self.factory.assume(self.base, account, self.options.assume_role, self.options.external_id)
        else:
            raise ConnectorError(f"account {account}: no role to assume", "pass --assume-role NAME with --org")
        record["principal"] = session.principal
        details = self._grants(session, record)
        mode = self.options.usage_mode
        if mode in (UsageSource.auto, UsageSource.s3, UsageSource.athena):
            trail = self.shared or self._account_trail(session)
            if mode is UsageSource.athena:
                record["usage"] = {"source": "athena", "table": self.options.athena_table}
            else:
                record["usage"] = self._trail_logs(session, trail, mode)
            if record["usage"]["source"] in ("s3", "athena"):
                record["event_selectors"] = self._selectors(session, trail)
        elif mode is UsageSource.lookup_events:
            record["usage"] = self._lookup(session)
        else:
            record["usage"] = {"source": "none", "detail": "usage not collected (--usage none)"}
        if record["usage"]["source"] == "lookup-events" and record["usage"].get("events") is not None:
            record["event_selectors"] = self._write(
                snap.selectors_name(account, "-lookup-events"), aws_lookup.MANAGEMENT_ONLY_SELECTORS
            )
        if self.options.access_advisor is not AdvisorScope.off:
            record["access_advisor"] = self._advisor(session, details)
        return record

    # -- grants --------------------------------------------------------------------------------

    def _grants(self, session: AccountSession, record: dict[str, Any]) -> AuthorizationDetails:
        client = session.client("iam")
        merged: dict[str, list[Any]] = {key: [] for key in AUTH_KEYS}
        try:
            for page in client.get_paginator("get_account_authorization_details").paginate():
                for key in AUTH_KEYS:
                    merged[key] += page.get(key) or []
        except Exception as exc:
            raise session.fail(exc, client) from None
        name = self._write(snap.auth_name(session.account), merged)
        record["grants"] = {"file": name} | {key: len(merged[key]) for key in AUTH_KEYS}
        return AuthorizationDetails(merged, name)

    # -- trails and their logs -----------------------------------------------------------------

    def _describe_trails(self, session: AccountSession) -> list[Trail]:
        client = session.client("cloudtrail")
        try:
            listed = client.describe_trails(includeShadowTrails=True)["trailList"]
        except Exception as exc:
            self.gap(session.account, "cloudtrail:DescribeTrails", session.fail(exc, client).one_line(), "warning")
            return []
        wanted = self.options.trail
        found = [
            (
                Trail(
                    t["Name"],
                    t.get("TrailARN"),
                    t["S3BucketName"],
                    t.get("S3KeyPrefix") or "",
                    t.get("HomeRegion"),
                    bool(t.get("IsOrganizationTrail")),
                ),
                bool(t.get("IsMultiRegionTrail")),
            )
            for t in listed
            if t.get("S3BucketName") and (not wanted or wanted in (t.get("Name"), t.get("TrailARN")))
        ]
        # Multi-region organization trails first: they hold the most of what an account did.
        found.sort(key=lambda item: (not item[1], not item[0].is_org, item[0].name))
        return [trail for trail, _ in found]

    def _shared_trail(self, base: AccountSession) -> Trail | None:
        """The trail that serves every account: --bucket, or the organization trail with --org."""
        options = self.options
        trails = self._describe_trails(base) if (options.bucket or options.org) else []
        if options.bucket:
            match = next((t for t in trails if t.bucket == options.bucket), None)
            return Trail(
                match.name if match else "--bucket",
                match.arn if match else None,
                options.bucket,
                options.prefix if options.prefix is not None else (match.prefix if match else ""),
                match.home_region if match else None,
                bool(match and match.is_org),
                shared=True,
            )
        org_trail = next((t for t in trails if t.is_org), None)
        return replace(org_trail, shared=True) if org_trail else None

    def _account_trail(self, session: AccountSession) -> Trail | None:
        return next(iter(self._describe_trails(session)), None)

    def _selectors(self, session: AccountSession, trail: Trail | None) -> str | None:
        if trail is None or trail.arn is None:
            reason = (
                "no trail found to read event selectors from: data-event coverage unknown (audit with --data-events)"
            )
            self.gap(session.account, "cloudtrail:GetEventSelectors", reason, "warning")
            return None
        owner = self.base if trail.shared or trail.is_org else session
        assert owner is not None
        if trail.shared and self.shared_selectors is not None:
            doc = self.shared_selectors
        else:
            client = owner.client("cloudtrail", trail.home_region)
            try:
                response = client.get_event_selectors(TrailName=trail.arn)
            except Exception as exc:
                reason = f"{owner.fail(exc, client).one_line()}; data-event coverage unknown"
                self.gap(session.account, f"cloudtrail:GetEventSelectors {trail.arn}", reason, "warning")
                return None
            doc = {k: v for k, v in response.items() if k != "ResponseMetadata"}
            if trail.shared:
                self.shared_selectors = doc
        return self._write(snap.selectors_name(session.account), doc)

    def _trail_logs(self, session: AccountSession, trail: Trail | None, mode: UsageSource) -> dict[str, Any]:
        account = session.account
        if trail is None:
            if mode is UsageSource.s3:
                self.gap(
                    account, "cloudtrail:DescribeTrails", "no trail delivering to S3 found (pass --bucket/--prefix)"
                )
                return {"source": "none", "detail": "no trail bucket found"}
            return self._lookup(session, "no trail delivering to S3")
        owner = self.base if trail.shared or trail.is_org else session
        assert owner is not None
        try:
            return self._download(owner, trail, account)
        except ConnectorError as exc:
            if mode is UsageSource.auto:
                self.gap(account, f"s3://{trail.bucket}", f"{exc.one_line()}; falling back to LookupEvents", "warning")
                return self._lookup(session, f"trail bucket s3://{trail.bucket} unreadable")
            self.gap(account, f"s3://{trail.bucket}", exc.one_line())
            return {"source": "s3", "bucket": trail.bucket, "detail": f"trail bucket unreadable: {exc}"}

    def _download(self, owner: AccountSession, trail: Trail, account: str) -> dict[str, Any]:
        assert self.pool is not None
        probe = owner.client("s3")
        try:
            region = s3trail.bucket_region(probe, trail.bucket)
            client = owner.client("s3", region)
            located = s3trail.account_root(client, trail.bucket, trail.prefix, account)
        except Exception as exc:
            raise owner.fail(exc, probe) from None
        if located is None:
            root = f"s3://{trail.bucket}/{s3trail.logs_root(trail.prefix)}"
            raise ConnectorError(f"no CloudTrail logs of account {account} under {root}")
        account_prefix, regions = located
        if self.options.regions:
            regions = [r for r in regions if r in self.options.regions]
        prefixes = s3trail.day_prefixes(account_prefix, regions, self.start.date(), self.end.date())
        label = f"S3 objects {account}"
        in_flight = 4 * self.options.download_workers
        downloader = s3trail.Downloader(
            client, trail.bucket, self.root, self.pool, in_flight, lambda d, t: self.progress(label, d, t)
        )
        try:
            report = downloader.run(prefixes)
        except Exception as exc:
            raise owner.fail(exc, client) from None
        for code, (count, key, message) in sorted(report.failures.items()):
            hint = (
                " (a KMS-encrypted log needs kms:Decrypt on the trail's key)"
                if code.startswith(("AccessDenied", "KMS"))
                else ""
            )
            self.gap(
                account,
                f"s3://{trail.bucket}/{key}",
                f"{count} object(s) not downloaded: {code}: {message}{hint}",
                count=count,
            )
        if report.cancelled:
            self.gap(
                account,
                f"s3://{trail.bucket}/{account_prefix}",
                f"{report.cancelled} object(s) not downloaded: credentials expired",
                count=report.cancelled,
            )
        days = len(prefixes) // max(1, len(regions))
        return {
            "source": "s3",
            "trail": trail.arn or trail.name,
            "bucket": trail.bucket,
            "bucket_region": region,
            "prefix": account_prefix,
            "regions": regions,
            "day_folders": days,
            "objects_listed": report.listed,
            "objects_downloaded": report.downloaded,
            "objects_reused": report.reused,
            "objects_failed": report.failed + report.cancelled,
            "bytes": report.bytes,
            "detail": f"s3://{trail.bucket}/{account_prefix} ({region}; trail {trail.name}): {report.listed:,} objects "
            f"in {len(regions)} region(s) x {days} day folders; {report.downloaded:,} downloaded "
            f"({report.bytes / 1e6:,.1f} MB), {report.reused:,} already in the snapshot, "
            f"{report.failed + report.cancelled:,} failed",
        }

    def _lookup(self, session: AccountSession, why: str | None = None) -> dict[str, Any]:
        account = session.account
        start = aws_lookup.retention_start(self.start, self.started)
        if start > self.start:
            self.gap(
                account,
                "cloudtrail:LookupEvents",
                f"LookupEvents keeps 90 days: nothing before {start:%Y-%m-%d}",
                "warning",
            )
        regions = list(self.options.regions) or self._enabled_regions(session)
        clients = {r: session.client("cloudtrail", r) for r in regions}
        paths = {r: self.root / snap.lookup_name(account, r) for r in regions}
        try:
            report = aws_lookup.lookup_events(clients, start, self.end, paths)
        except Exception as exc:
            self.gap(account, "cloudtrail:LookupEvents", session.fail(exc, clients[regions[0]]).one_line())
            return {"source": "lookup-events", "detail": "LookupEvents failed"}
        detail = report.detail(start) + (f" (used because: {why})" if why else "")
        return {
            "source": "lookup-events",
            "regions": report.regions,
            "events": report.events,
            "pages": report.pages,
            "retries": report.retries,
            "files": report.files,
            "detail": detail,
        }

    def _enabled_regions(self, session: AccountSession) -> list[str]:
        client = session.client("ec2")
        try:
            return sorted(r["RegionName"] for r in client.describe_regions()["Regions"])
        except Exception as exc:
            reason = f"{session.fail(exc, client).one_line()}; LookupEvents read in {self.factory.region} only"
            self.gap(session.account, "ec2:DescribeRegions", reason, "warning")
            return [self.factory.region]

    # -- Access Advisor and Athena -------------------------------------------------------------

    def _advisor(self, session: AccountSession, details: AuthorizationDetails) -> dict[str, Any]:
        identities = details.frames(self.request.selector).identities
        if self.options.access_advisor is AdvisorScope.agents:
            identities = identities.filter(pl.col("is_agent"))
        arns = identities.filter(~pl.col("service_linked"))["identity"].to_list()
        if not arns:
            return {"identities": 0}
        document, errors = aws_access_advisor.collect(session.client("iam"), session.account, arns, session.principal)
        for message, count in errors.items():
            self.gap(
                session.account, "iam:GenerateServiceLastAccessedDetails", f"{count} identities: {message}", count=count
            )
        name = self._write(snap.advisor_name(session.account), document)
        return {"file": name, "identities": len(arns), "failed": sum(errors.values())}

    def _athena(self, base: AccountSession) -> dict[str, Any] | None:
        options = self.options
        assert options.athena_table is not None
        table = aws_athena.AthenaTable.parse(options.athena_table)
        client = base.client("athena")
        try:
            keys = aws_athena.partition_keys(client, table)
        except Exception as exc:
            self.gap(
                None,
                f"athena:GetTableMetadata {table}",
                f"{base.fail(exc, client).one_line()}; no partition filter",
                "warning",
            )
            keys = []
        partition = aws_athena.partition_filter(keys, self.start.date(), self.end.date())
        if partition is None:
            self.gap(
                None,
                f"athena {table}",
                "no date partition (timestamp or year/month/day): the query scans the whole table",
                "warning",
            )
        try:
            doc = aws_athena.run(
                client, table, options.athena_workgroup, options.athena_output, self.start, self.end, partition
            )
        except Exception as exc:
            self.gap(None, f"athena {table}", base.fail(exc, client).one_line())
            return {"table": str(table), "error": str(exc)}
        self._write(snap.ATHENA_FILE, doc)
        return {"file": snap.ATHENA_FILE, "table": str(table), "queries": doc["queries"]}


def _stats(records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    usage = [r.get("usage") or {} for r in records]
    objects = sum(u.get("objects_downloaded", 0) for u in usage)
    return {
        "seconds": round(seconds, 2),
        "accounts": len(records),
        "accounts_failed": sum(1 for r in records if r["status"] == "failed"),
        "objects_listed": sum(u.get("objects_listed", 0) for u in usage),
        "objects_downloaded": objects,
        "bytes_downloaded": sum(u.get("bytes", 0) for u in usage),
        "objects_per_second": round(objects / seconds, 1) if seconds else None,
    }


def collect_snapshot(
    options: LiveOptions, root: Path, request: CollectRequest, progress: Progress = no_progress
) -> dict[str, Any]:
    """Collect into ``root`` (created, or a previous snapshot refreshed) and return the manifest."""
    return _Collection(options, root, request, progress).run()
