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


def _real_and_hostile_cloudtrail(folder: Path) -> tuple[list[Path], int]:
    """Every real sample, and hostile copies of them (cut short, wrapped ten thousand levels deep inside
    a record, duplicated, dated in the future, BOM-prefixed): the log files found, and how many samples."""
    folder.mkdir()
    samples = sorted(p for p in (REAL / "cloudtrail").iterdir() if "INVALID" not in p.name)
    for index, path in enumerate(samples):
        raw = path.read_bytes()
        shutil.copy(path, folder / f"{index:03d}-real{''.join(path.suffixes)}")
        shutil.copy(path, folder / f"{index:03d}-again{''.join(path.suffixes)}")  # the same records twice
        if path.suffix != ".gz":
            text = raw.decode("utf-8")
            (folder / f"{index:03d}-bom.json").write_bytes(b"\xef\xbb\xbf" + raw)
            (folder / f"{index:03d}-cut.json").write_bytes(raw[: len(raw) // 2])
            (folder / f"{index:03d}-future.json").write_text(text.replace('"eventTime": "20', '"eventTime": "99'))
            nested = '{"Records": [{"eventTime": "2026-11-01T00:00:00Z", "x": ' + "[" * 10_000 + "]" * 10_000 + "}]}"
            (folder / f"{index:03d}-nested.json").write_text(nested)
    found, _ = trail.find_log_files([folder])
    return found, len(samples)


def test_real_cloudtrail_and_hostile_copies_scan_alike_serial_and_parallel(tmp_path):
    """The real samples and their hostile copies, spread over many small batches: two workers report
    exactly what one does, in the same order."""
    from conftest import RULES

    found, samples = _real_and_hostile_cloudtrail(tmp_path / "mixed")
    assert len(found) > 4 * samples
    options = trail.TrailOptions("2000-01-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z", None, RULES)
    serial = trail.scan(found, options, workers=1)
    parallel = trail.scan(found, options, workers=2)
    assert serial.usage and serial.usage == parallel.usage
    assert serial.days == parallel.days and serial.unmapped == parallel.unmapped
    assert serial.gaps == parallel.gaps and serial.skipped == parallel.skipped
    assert serial.beyond_cap == parallel.beyond_cap > 0

    def ids(partial):
        return {key: sorted(records) for key, records in partial.record_ids.items()}

    assert ids(serial) == ids(parallel)
    assert serial.drop_duplicates(serial.usage) == parallel.drop_duplicates(parallel.usage) > 0
    assert serial.usage == parallel.usage


def test_real_cloudtrail_read_ahead_counts_what_a_scan_for_the_agents_counts(tmp_path):
    """The scan begun before the agents are known (every identity until then), over the real samples
    and their hostile copies, in worker processes and in this one: cut down to the agents, it counts
    exactly what a scan for the agents counts, skips and problems included."""
    from conftest import RULES

    found, _ = _real_and_hostile_cloudtrail(tmp_path / "mixed")
    bounds = ("2000-01-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z")
    everyone = trail.scan(found, trail.TrailOptions(*bounds, None, RULES), workers=1)
    identities = sorted({key[1] for key in everyone.usage})
    agents = frozenset(identities[::2])
    assert agents and len(agents) < len(identities)
    for workers in (1, 2):  # the expected counts afresh each time: drop_duplicates changes them
        expected = trail.scan(found, trail.TrailOptions(*bounds, agents, RULES), workers=1)
        partial = trail.start_scan(found, trail.TrailOptions(*bounds, None, RULES), workers).finish(
            trail.Partial(), read_rest=trail.rest_reader(agents)
        )
        partial.keep_only(agents)
        assert partial.usage == expected.usage and partial.unmapped == expected.unmapped
        assert partial.gaps == expected.gaps and partial.skipped == expected.skipped
        assert partial.days == expected.days and partial.beyond_cap == expected.beyond_cap > 0
        assert partial.drop_duplicates(partial.usage) == expected.drop_duplicates(expected.usage)


def test_real_gcp_audit_logs_and_hostile_copies_scan_alike_serial_and_parallel(tmp_path):
    """The real Cloud Audit Log samples and hostile copies (cut short, duplicated, dated in the future,
    nested deep inside an entry) over many batches: two workers report exactly what one does."""
    from auditor.connectors.gcp import audit_logs as gcp_logs

    folder = tmp_path / "gcp"
    folder.mkdir()
    samples = sorted(p for p in (REAL / "gcp").iterdir() if p.suffix in (".jsonl", ".ndjson"))
    assert samples
    for index, path in enumerate(samples):
        text = path.read_text(encoding="utf-8")
        for copy in range(3):
            (folder / f"{index:03d}-{copy}{path.suffix}").write_text(text)  # the same entries three times
        (folder / f"{index:03d}-cut{path.suffix}").write_text(text[: len(text) // 2])
        (folder / f"{index:03d}-future{path.suffix}").write_text(text.replace('"timestamp": "20', '"timestamp": "99'))
        deep = '{"timestamp": "2026-11-01T00:00:00Z", "protoPayload": ' + "[" * 10_000 + "]" * 10_000 + "}\n"
        (folder / f"{index:03d}-nested{path.suffix}").write_text(text + deep)
    found, _ = gcp_logs.find_log_files([folder])
    assert len(found) == 6 * len(samples)
    options = gcp_logs.ScanOptions("2000-01-01T00:00:00Z", "2026-12-01T00:00:00Z", None, cap="2026-12-01T00:00:00Z")
    serial = gcp_logs.scan(found, options, workers=1)
    parallel = gcp_logs.scan(found, options, workers=2)
    assert serial.usage and serial.usage == parallel.usage
    assert serial.days == parallel.days and serial.gaps == parallel.gaps and serial.skipped == parallel.skipped
    assert serial.beyond_cap == parallel.beyond_cap > 0
    assert serial.drop_duplicates(serial.usage) == parallel.drop_duplicates(parallel.usage) > 0
    assert serial.usage == parallel.usage
