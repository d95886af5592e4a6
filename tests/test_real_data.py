"""The whole audit on real public samples (tests/data/real, sources and licences in SOURCES.md).

Nothing here was written by us: real ``get-account-authorization-details`` dumps and real CloudTrail
records in every shape they were found in. The audit must read them all without a traceback, give
every identity its own output folder, and call no observed call unused.
"""

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from conftest import audit

from auditor.connectors.aws import cloudtrail as trail
from auditor.connectors.aws.files import AwsFiles
from auditor.emit.write import write_outputs
from auditor.selection import AgentSelector

REAL = Path(__file__).parent / "data" / "real"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "export",
    ["cloudsplaining-example-authorization-details-trimmed.json", "cloudmapper-demo-authorization-details.json"],
)
def test_real_exports_with_real_logs_audit_without_surprises(tmp_path, export):
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    shutil.copy(REAL / "authorization-details" / export, snapshot / "authorization-details.json")
    shutil.copytree(REAL / "cloudtrail", snapshot / "exports")
    (snapshot / "exports" / "awsdocs-lake-get-query-results-docs-example.INVALID-JSON.txt").unlink()
    result = audit(
        AwsFiles.from_dir(snapshot, data_events="all"), selector=AgentSelector(everyone=True), days=400, now=NOW
    )
    assert result.audits, "every role and user is audited with --all-identities"
    kinds = dict(result.data.identities.select("identity", "kind").iter_rows())
    assert {kinds[a.identity] for a in result.audits} <= {"role", "user"}
    # Nothing observed is unused, and every used permission was observed.
    used = result.data.usage.filter(pl.col("outcome") == "used").select("identity", "action").unique()
    states = result.permissions.join(used, on=["identity", "action"], how="semi")
    assert set(states["state"].to_list()) <= {"used"}
    document = write_outputs(result, tmp_path / "out")
    folders = [i["policy_folder"] for i in document["identities"]]
    assert len(folders) == len(set(folders)) == len(result.audits)
    json.loads((tmp_path / "out" / "policies" / "index.json").read_text())


def test_every_real_cloudtrail_shape_is_found_and_read(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for index, path in enumerate(sorted((REAL / "cloudtrail").iterdir())):
        if "INVALID" not in path.name:
            shutil.copy(path, folder / f"part-{index:03d}")  # names say nothing: content decides
    found, problems = trail.find_log_files([folder])
    assert problems == []
    assert len(found) == len([p for p in (REAL / "cloudtrail").iterdir() if "INVALID" not in p.name])
