"""Usage from ``cloudtrail:LookupEvents``, for accounts whose trail bucket cannot be read (or that have
no trail): management events only, the last 90 days, about 2 requests per second per account and
region. Pages are written to the snapshot as they arrive (one ``lookup-events`` item per line, which
the CloudTrail parser reads); throttling is absorbed by botocore's adaptive retry mode and counted.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from auditor.fileio import atomic_file, dumps

RETENTION_DAYS = 90
PAGE_SIZE = 50  # the API maximum

#: What LookupEvents can show, as ``get-event-selectors`` output: management events, no data events.
MANAGEMENT_ONLY_SELECTORS = {
    "EventSelectors": [{"ReadWriteType": "All", "IncludeManagementEvents": True, "DataResources": []}],
    "Source": "cloudtrail:LookupEvents (management events only)",
}


@dataclass
class LookupReport:
    regions: list[str] = field(default_factory=list)
    events: int = 0
    pages: int = 0
    retries: int = 0
    files: list[str] = field(default_factory=list)

    def detail(self, start: datetime) -> str:
        return (
            f"cloudtrail:LookupEvents from {start:%Y-%m-%d} in {len(self.regions)} region(s) "
            f"({', '.join(self.regions)}): {self.events:,} management events in {self.pages:,} pages, "
            f"{self.retries:,} throttled or failed requests retried (adaptive retry mode; LookupEvents allows "
            "about 2 requests/s per region); data events cannot be seen this way"
        )


def retention_start(start: datetime, now: datetime) -> datetime:
    """LookupEvents keeps 90 days: the window is clipped to them."""
    return max(start, now - timedelta(days=RETENTION_DAYS))


def _region(client: Any, start: datetime, end: datetime, path: Path) -> tuple[int, int, int]:
    events = pages = retries = 0
    paginator = client.get_paginator("lookup_events")
    with atomic_file(path) as out:
        for page in paginator.paginate(StartTime=start, EndTime=end, PaginationConfig={"PageSize": PAGE_SIZE}):
            pages += 1
            retries += page.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            for item in page.get("Events") or []:
                line = {k: item.get(k) for k in ("EventId", "EventName", "EventTime", "CloudTrailEvent")}
                out.write(dumps(line) + b"\n")
                events += 1
    return events, pages, retries


def lookup_events(clients: dict[str, Any], start: datetime, end: datetime, paths: dict[str, Path]) -> LookupReport:
    """Page through every region (regions in parallel: the rate limit is per region)."""
    report = LookupReport(regions=sorted(clients))
    with ThreadPoolExecutor(max(1, min(8, len(clients)))) as pool:
        results = pool.map(lambda r: _region(clients[r], start, end, paths[r]), report.regions)
        for region, (events, pages, retries) in zip(report.regions, results, strict=True):
            report.events += events
            report.pages += pages
            report.retries += retries
            report.files.append(paths[region].name)
    return report
