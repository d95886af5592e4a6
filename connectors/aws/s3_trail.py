"""CloudTrail log objects from a trail's S3 bucket into the snapshot.

Only the day folders of the window are listed (per region, per account; the organization-trail level
``AWSLogs/<o-id>/<account>/`` is detected), objects are downloaded by a bounded thread pool and
streamed to disk one chunk at a time through a temporary file renamed into place, so neither the
listing pass nor the download ever holds the window in memory. A failed object (access denied, a KMS
key the identity cannot use) is counted by error code and named; the others still arrive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import botocore.exceptions as bce
from botocore.parsers import ResponseParserError

from auditor.connectors.aws.session import EXPIRED_CODES
from auditor.fileio import atomic_file

CHUNK = 1 << 20
#: CloudTrail delivers a file into the folder of its delivery day, up to ~15 minutes after the
#: events it holds: the day after the window is listed too.
DELIVERY_DAYS = 1


def logs_root(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/AWSLogs/" if prefix else "AWSLogs/"


def bucket_region(client: Any, bucket: str) -> str:
    """The bucket's region (``GetBucketLocation`` says None for us-east-1 and EU for eu-west-1)."""
    location = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    return {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location)


def common_prefixes(client: Any, bucket: str, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return [p["Prefix"] for page in pages for p in page.get("CommonPrefixes") or []]


def account_root(client: Any, bucket: str, prefix: str, account: str) -> tuple[str, list[str]] | None:
    """``(<root><account>/ or <root><o-id>/<account>/, regions)`` for the account's logs, or None."""
    root = logs_root(prefix)
    tops = common_prefixes(client, bucket, root)
    candidates = [f"{root}{account}/"] if f"{root}{account}/" in tops else []
    candidates += [f"{top}{account}/" for top in tops if top[len(root) :].startswith("o-")]
    for candidate in candidates:
        base = f"{candidate}CloudTrail/"
        regions = sorted(p[len(base) : -1] for p in common_prefixes(client, bucket, base))
        if regions:
            return candidate, regions
    return None


def day_prefixes(account_prefix: str, regions: list[str], first: date, last: date) -> list[str]:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1 + DELIVERY_DAYS)]
    return [f"{account_prefix}CloudTrail/{region}/{day:%Y/%m/%d}/" for region in regions for day in days]


def list_keys(client: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents") or []]


def local_path(root: Path, key: str) -> Path | None:
    """Where an object goes: its key from ``AWSLogs/`` on; None for a key that would leave ``root``."""
    relative = PurePosixPath(key[key.find("AWSLogs/") :] if "AWSLogs/" in key else key)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return root.joinpath(*relative.parts)


@dataclass
class DownloadReport:
    listed: int = 0
    downloaded: int = 0
    reused: int = 0
    bytes: int = 0
    failures: dict[str, list[Any]] = field(default_factory=dict)  # error code -> [count, first key, message]
    cancelled: int = 0

    @property
    def failed(self) -> int:
        return sum(count for count, _, _ in self.failures.values())


class Downloader:
    """Lists the window's day folders and downloads their objects with a shared, bounded pool.

    At most ``in_flight`` downloads are queued at a time and listings feed them as they arrive, so
    memory stays flat however many objects the window holds.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        root: Path,
        pool: Executor,
        in_flight: int,
        progress: Callable[[int, int], None],
    ) -> None:
        self.client, self.bucket, self.root, self.pool = client, bucket, root, pool
        self.in_flight, self.progress = max(1, in_flight), progress
        self._stop = threading.Event()

    def run(self, prefixes: list[str]) -> DownloadReport:
        report = DownloadReport()
        listings = [self.pool.submit(list_keys, self.client, self.bucket, p) for p in prefixes]
        pending: set[Future[tuple[str, str, int, str]]] = set()
        for listing in listings:
            for key, size in listing.result():
                report.listed += 1
                if len(pending) >= self.in_flight:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    self._tally(report, finished)
                pending.add(self.pool.submit(self._fetch, key, size))
        self._tally(report, wait(pending).done)
        return report

    def _tally(self, report: DownloadReport, finished: set[Future[tuple[str, str, int, str]]]) -> None:
        for future in finished:
            status, key, size, message = future.result()
            if status == "downloaded":
                report.downloaded += 1
                report.bytes += size
            elif status == "reused":
                report.reused += 1
            elif status == "cancelled":
                report.cancelled += 1
            else:
                entry = report.failures.setdefault(status, [0, key, message])
                entry[0] += 1
        self.progress(report.downloaded + report.reused + report.cancelled + report.failed, report.listed)

    def _fetch(self, key: str, size: int) -> tuple[str, str, int, str]:
        if self._stop.is_set():
            return "cancelled", key, 0, ""
        path = local_path(self.root, key)
        if path is None:
            return "UnsafeKey", key, 0, "key leaves the snapshot folder; not downloaded"
        if path.is_file() and path.stat().st_size == size:
            return "reused", key, size, ""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            with atomic_file(path) as handle:
                for chunk in body.iter_chunks(CHUNK):
                    handle.write(chunk)
        except bce.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "ClientError"))
            if code in EXPIRED_CODES:
                self._stop.set()
            return code, key, 0, " ".join(str(error.get("Message", "")).split())[:300]
        except (bce.BotoCoreError, ResponseParserError, OSError) as exc:
            return type(exc).__name__, key, 0, str(exc)
        return "downloaded", key, size, ""
