"""An agent process for the guard's cross-process tests: one guarded boto3 call, its outcome on stdout.

guard_agent.py BLOCKLIST IDENTITY QUEUE ENDPOINT BUCKET KEY TIMEOUT_S LOG
"""

from __future__ import annotations

import sys

import boto3

from auditor.guard import ActionDenied, Guard

blocklist, identity, queue, endpoint, bucket, key, timeout, log = sys.argv[1:]
guard = Guard.from_blocklist(blocklist, identity=identity, queue=queue, approval_timeout=float(timeout), log=log)
session = guard.protect(boto3.Session(region_name="us-east-1"))
s3 = session.client("s3", endpoint_url=endpoint)
print("asking", flush=True)
try:
    s3.delete_object(Bucket=bucket, Key=key)
except ActionDenied as exc:
    print("refused", exc.status, exc.approver, flush=True)
    sys.exit(3)
print("deleted", flush=True)
