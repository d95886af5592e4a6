"""IAM Access Advisor: when each identity last used each service and, where AWS tracks it, each action.

A usage signal independent of CloudTrail. AWS builds the report asynchronously per identity
(``GenerateServiceLastAccessedDetails``, then ``GetServiceLastAccessedDetails`` until COMPLETED);
only a few jobs run at once because IAM rate-limits these calls. The raw answer is kept; what it
proves is decided when the snapshot is read (:func:`auditor.connectors.aws.snapshot.fold_advisor`).
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from auditor.connectors.aws.session import SDK_ERRORS, explain

POLL_START, POLL_MAX, TIMEOUT = 0.2, 5.0, 600.0
WORKERS = 4


def _job(client: Any, arn: str, principal: str) -> dict[str, Any]:
    try:
        job = client.generate_service_last_accessed_details(Arn=arn, Granularity="ACTION_LEVEL")["JobId"]
        delay, waited = POLL_START, 0.0
        page = client.get_service_last_accessed_details(JobId=job)
        while page["JobStatus"] == "IN_PROGRESS" and waited < TIMEOUT:
            time.sleep(delay)
            waited += delay
            delay = min(delay * 1.5, POLL_MAX)
            page = client.get_service_last_accessed_details(JobId=job)
        if page["JobStatus"] != "COMPLETED":
            reason = (page.get("Error") or {}).get("Message") or f"job {page['JobStatus'].lower()}"
            return {"arn": arn, "job_id": job, "error": f"Access Advisor job {job}: {reason}"}
        services = list(page.get("ServicesLastAccessed") or [])
        while page.get("IsTruncated"):
            page = client.get_service_last_accessed_details(JobId=job, Marker=page["Marker"])
            services += page.get("ServicesLastAccessed") or []
    except SDK_ERRORS as exc:
        return {"arn": arn, "error": explain(exc, principal, "iam").one_line()}
    return {
        "arn": arn,
        "job_id": job,
        "granularity": page.get("JobType", "ACTION_LEVEL"),
        "completed": page.get("JobCompletionDate"),
        "services": services,
    }


def collect(client: Any, account: str, arns: list[str], principal: str) -> tuple[dict[str, Any], Counter[str]]:
    """The ``access-advisor-<account>.json`` document, and each distinct error with its count."""
    with ThreadPoolExecutor(max(1, min(WORKERS, len(arns)))) as pool:
        identities = list(pool.map(lambda arn: _job(client, arn, principal), arns))
    errors = Counter(i["error"] for i in identities if "error" in i)
    return {"account": account, "granularity": "ACTION_LEVEL", "identities": identities}, errors
