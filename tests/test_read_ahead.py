"""The CloudTrail scan begun before the agents are known (``read_ahead``): it answers exactly what a
scan for the agents answers, whichever batches were read before they were known, and it begins
before polars is imported."""

import json
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import RULES
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from auditor.audit import AuditConfig, run_audit
from auditor.catalog import aws_catalog
from auditor.connectors.aws import cloudtrail as trail
from auditor.connectors.aws.files import AwsFiles
from auditor.connectors.base import EarlyRequest, UsageRequest
from auditor.connectors.log_scan import FoldInFlight, ScanCounters, batches_of
from auditor.errors import InputError
from auditor.selection import AgentSelector
from auditor.window import Window
from builders import allow, auth_details, event, policy, role, role_arn, trail_file

ROOT = Path(__file__).resolve().parents[1]
AGENT, OTHER, HUMAN = role_arn("agent", "/agents/"), role_arn("other-agent", "/agents/"), role_arn("human")
WINDOW = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 28, 23, 59, 59, tzinfo=UTC))
CAP = datetime(2026, 12, 1, tzinfo=UTC)
CALLS = [
    ("s3.amazonaws.com", "GetObject", ["arn:aws:s3:::bucket/key"], None),
    ("s3.amazonaws.com", "PutObject", ["arn:aws:s3:::bucket/other"], None),
    ("dynamodb.amazonaws.com", "Query", [], None),
    ("iam.amazonaws.com", "CreateRole", [], {"roleName": "x", "assumeRolePolicyDocument": "{}"}),
    ("lambda.amazonaws.com", "CreateFunction20150331", [], {"role": "arn:aws:iam::123456789012:role/runner"}),
    ("nosuch.amazonaws.com", "DoThing", [], None),
]


def _logs(root: Path, spec: list[tuple[int, int, int, bool]]) -> list[Path]:
    """One file per day of events (identity, call, error) from ``spec``; every third day also holds
    the same records again, as an export of them would."""
    for day in range(1, 29):
        records = []
        for who, call, hour, denied in spec:
            source, name, resources, request = CALLS[call]
            when = f"2026-11-{day:02d}T{hour:02d}:00:00Z"
            identity = (AGENT, OTHER, HUMAN)[who]
            records.append(
                event(identity, source, name, when, "AccessDenied" if denied else None, resources, request, False)
            )
        trail_file(root, records, day=f"2026/11/{day:02d}", name=f"d{day}")
        if day % 3 == 0:
            trail_file(root, records, day=f"2026/11/{day:02d}", name=f"copy{day}")
    found, problems = trail.find_log_files([root])
    assert problems == []
    return found


def _counters(partial: trail.Partial) -> tuple:
    duplicates = partial.drop_duplicates(partial.usage)
    return (
        partial.usage,
        partial.unmapped,
        partial.days,
        partial.first,
        partial.last,
        partial.in_window,
        partial.skipped,
        partial.gaps,
        partial.files_read,
        duplicates,
    )


events = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, len(CALLS) - 1), st.integers(0, 23), st.booleans()),
    min_size=1,
    max_size=8,
)


@given(spec=events, first_read=st.lists(st.booleans(), min_size=50, max_size=50))
@example(spec=[(2, 5, 3, False), (2, 0, 4, False), (2, 4, 5, False), (0, 4, 6, True)], first_read=[True] * 50)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_split_between_the_two_readers_counts_what_a_scan_for_the_agents_counts(tmp_path_factory, spec, first_read):
    root = tmp_path_factory.mktemp("logs")
    found = _logs(root, spec)
    agents = frozenset({AGENT, OTHER})
    start, end = "2026-11-01T00:00:00Z", "2026-11-28T23:59:59Z"
    for_agents = trail.scan(found, trail.TrailOptions(start, end, "2026-12-01T00:00:00Z", agents, RULES), workers=1)
    everyone = trail.TrailOptions(start, end, "2026-12-01T00:00:00Z", None, RULES)
    trail._init_worker(everyone)
    merged = trail.Partial()
    for path, early in zip(found, first_read, strict=False):  # before the agents were known, or after
        merged.merge(trail.read_file(path) if early else trail.read_file(path, agents))
    merged.keep_only(agents)
    assert _counters(merged) == _counters(for_agents)
    assert all(key[1] in agents for key in merged.usage)


def _request(agents: frozenset[str], window: Window = WINDOW, workers: int = 2) -> UsageRequest:
    return UsageRequest(window, CAP, agents, aws_catalog(), RULES, workers)


def _source(root: Path) -> AwsFiles:
    return AwsFiles((root / "authorization-details.json",), (root,))


def _snapshot(root: Path) -> AwsFiles:
    spec = [(0, 0, 9, False), (1, 2, 10, True), (2, 3, 11, False), (0, 4, 12, False), (1, 5, 13, False)]
    spec += [(2, 5, 14, False), (2, 4, 15, False)]  # the human's calls too: unmapped, passing a role
    _logs(root, spec * 3)
    grant = {"work": policy(allow(["s3:*", "dynamodb:Query", "iam:PassRole"]))}
    roles = [role(n, grant, path="/agents/") for n in ("agent", "other-agent")] + [role("human", grant, tags={})]
    (root / "authorization-details.json").write_text(json.dumps(auth_details(roles=roles)))
    return _source(root)


def _same_evidence(a, b) -> None:
    for name in ("usage", "unmapped", "observability", "coverage", "gaps"):
        assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.logs == b.logs


def test_the_scan_in_flight_answers_what_a_fresh_scan_answers(tmp_path):
    source = _snapshot(tmp_path)
    agents = frozenset({AGENT, OTHER})
    flight = source.read_ahead(EarlyRequest(WINDOW, CAP, RULES, workers=2))
    assert flight.flight.pool is not None  # in worker processes: enough files for two
    got = flight.evidence(_request(agents))
    _same_evidence(got, _source(tmp_path).usage(_request(agents)))
    assert got.usage.height and set(got.usage["identity"]) <= agents


def test_a_scan_begun_for_another_window_is_dropped_and_read_again(tmp_path):
    source = _snapshot(tmp_path)
    agents = frozenset({AGENT})
    flight = source.read_ahead(EarlyRequest(WINDOW, CAP, RULES, workers=2))
    later = Window(datetime(2026, 11, 10, tzinfo=UTC), datetime(2026, 11, 20, tzinfo=UTC))
    got = flight.evidence(_request(agents, later))
    assert flight.flight.pool is None  # the workers of the first scan are gone
    _same_evidence(got, _source(tmp_path).usage(_request(agents, later)))
    assert got.logs[0].scopes[next(iter(got.logs[0].scopes))].events_in_window < sum(
        s.events_in_window for s in _source(tmp_path).usage(_request(agents)).logs[0].scopes.values()
    )


@dataclass
class Readers(ScanCounters):
    read: list[tuple[str, str]] = field(default_factory=list)  # (file name, reader)

    def merge(self, other: "Readers") -> None:
        super().merge(other)
        self.read += other.read


def _slow_first(path: Path) -> Readers:
    time.sleep(0.2)  # slow enough that only the batches begun or queued before finish() stay with it
    return Readers(read=[(path.name, "first")])


def _rest(path: Path) -> Readers:
    return Readers(read=[(path.name, "rest")])


def _failing_first(path: Path) -> Readers:
    raise ValueError(f"the first reader cannot read {path.name}")


def _paths(tmp_path: Path, count: int) -> list[Path]:
    for i in range(count):
        (tmp_path / f"f{i:03d}").write_text("")
    return sorted(tmp_path.iterdir())


def test_the_batches_not_begun_are_read_by_the_later_reader_in_file_order(tmp_path):
    paths = _paths(tmp_path, 60)
    flight = FoldInFlight(paths, batches_of(_slow_first, Readers), workers=2, batch_size=1)
    done = flight.finish(Readers(), read_rest=batches_of(_rest, Readers))
    assert [name for name, _ in done.read] == [p.name for p in paths]
    readers = [reader for _, reader in done.read]
    assert readers.count("rest") >= 50  # only what the two workers had begun or queued stayed with the first
    assert not multiprocessing.active_children()


def test_a_batch_the_first_reader_fails_on_is_read_again_by_the_later_one(tmp_path):
    paths = _paths(tmp_path, 20)
    flight = FoldInFlight(paths, batches_of(_failing_first, Readers), workers=2, batch_size=1)
    done = flight.finish(Readers(), read_rest=batches_of(_rest, Readers))
    assert done.read == [(p.name, "rest") for p in paths]


def test_the_first_readers_failure_stands_when_no_later_reader_is_given(tmp_path):
    flight = FoldInFlight(_paths(tmp_path, 20), batches_of(_failing_first, Readers), workers=2, batch_size=1)
    with pytest.raises(ValueError, match="first reader cannot read"):
        flight.finish(Readers())
    assert not multiprocessing.active_children()


def test_an_audit_that_fails_after_the_scan_began_leaves_no_worker(tmp_path):
    source = _snapshot(tmp_path)
    config = AuditConfig((source,), rules=RULES, workers=2, selector=AgentSelector(None, ("nobody-*",)), now=CAP)
    with pytest.raises(InputError, match="no agent identities selected"):
        run_audit(config)
    assert not multiprocessing.active_children()


#: What loads while the workers read, never before the scan begins.
LOADED_DURING_THE_SCAN = ("polars", "auditor.escalation", "auditor.conditions", "auditor.diff", "auditor.findings")


def test_the_command_loads_neither_polars_nor_the_engine_before_the_scan_begins(tmp_path):
    """The gain depends on it: the workers read while polars and the engine load (an import added at
    the top of a module on this path would silently serialize them again)."""
    _snapshot(tmp_path / "aws")
    script = (
        "import sys\n"
        f"late = {LOADED_DURING_THE_SCAN!r}\n"
        "from auditor.connectors.aws import cloudtrail\n"
        "begin = cloudtrail.start_scan\n"
        "def start_scan(*a, **k):\n"
        "    print('loaded:', *sorted(m for m in late if m in sys.modules), flush=True)\n"
        "    return begin(*a, **k)\n"
        "cloudtrail.start_scan = start_scan\n"
        "from auditor.cli import main\n"
        f"sys.argv = ['auditor', 'audit', '--aws-dir', {str(tmp_path / 'aws')!r}, '--out', {str(tmp_path / 'out')!r},"
        " '-q', '--workers', '2', '--until', '2026-11-28T23:59:59Z']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["loaded:"]
    assert (tmp_path / "out" / "report.json").is_file()


def test_the_engine_modules_import_no_polars():
    code = (
        "import sys, auditor.cli.app, auditor.audit, auditor.window, auditor.connectors.aws.files; "
        "print('polars' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


class Recorded(AwsFiles):
    """AwsFiles, recording what the core asks it and when."""

    def grants(self, selector, rules):
        self.asked.append("grants")
        return super().grants(selector, rules)

    def window_end(self, cap, rules, workers):
        self.asked.append("window_end")
        return super().window_end(cap, rules, workers)

    def read_ahead(self, request):
        self.asked.append("read_ahead")
        return super().read_ahead(request)


@dataclass
class NoReadAhead:
    """A source that cannot read ahead (the protocol's four questions only), over an AwsFiles."""

    inner: Recorded
    provider: str = "aws"
    name: str = "no-read-ahead"

    def grants(self, selector, rules):
        return self.inner.grants(selector, rules)

    def catalog(self, grants, rules):
        return self.inner.catalog(grants, rules)

    def collected_at(self):
        return self.inner.collected_at()

    def window_end(self, cap, rules, workers):
        return self.inner.window_end(cap, rules, workers)

    def usage(self, request, progress=None):
        return self.inner.usage(request)

    def inputs(self):
        return self.inner.inputs()


def test_sources_that_cannot_read_ahead_are_asked_for_their_grants_first(tmp_path):
    source = _snapshot(tmp_path)
    ahead = Recorded(source.auth_files, source.trail_paths)
    ahead.asked = []
    run_audit(AuditConfig((ahead,), rules=RULES, workers=2, now=CAP))
    assert ahead.asked == ["window_end", "read_ahead", "grants"]
    late = Recorded(source.auth_files, source.trail_paths)
    late.asked = []
    both = AuditConfig((NoReadAhead(late),), rules=RULES, workers=2, now=CAP)
    run_audit(both)
    assert late.asked == ["grants", "window_end"]  # the order the Source protocol documents


def test_meanwhile_runs_once_after_the_grants_while_the_scan_reads(tmp_path):
    source = _snapshot(tmp_path)
    recorded = Recorded(source.auth_files, source.trail_paths)
    recorded.asked = []
    config = AuditConfig((recorded,), rules=RULES, workers=2, now=CAP)
    result = run_audit(config, meanwhile=lambda: recorded.asked.append("meanwhile"))
    assert recorded.asked == ["window_end", "read_ahead", "grants", "meanwhile"]
    assert result.permissions.height


def test_two_serial_scans_in_flight_each_read_with_their_own_options(tmp_path):
    """Serial scans read in this process when finished: one begun later (another source, its own
    cap and window) must not have set the process up for itself in the meantime."""
    found = _logs(tmp_path, [(0, 0, 9, False), (1, 2, 10, False)])
    early = trail.TrailOptions("2026-11-01T00:00:00Z", "2026-11-10T00:00:00Z", "2026-11-12T00:00:00Z", None, RULES)
    late = trail.TrailOptions("2026-11-01T00:00:00Z", "2026-11-28T23:59:59Z", "2026-12-01T00:00:00Z", None, RULES)
    first = trail.start_scan(found, early, workers=1)
    second = trail.start_scan(found, late, workers=1)
    assert _counters(first.finish(trail.Partial())) == _counters(trail.scan(found, early, workers=1))
    assert _counters(second.finish(trail.Partial())) == _counters(trail.scan(found, late, workers=1))


def _very_slow(path: Path) -> Readers:
    time.sleep(30)
    return Readers(read=[(path.name, "first")])


def test_a_scan_cancelled_before_it_is_collected_does_not_wait_for_its_workers(tmp_path):
    """An error or Ctrl-C while the grants are read must not wait for the batches being read (a batch of
    an organization trail can take seconds)."""
    flight = FoldInFlight(_paths(tmp_path, 8), batches_of(_very_slow, Readers), workers=2, batch_size=1)
    time.sleep(0.2)  # the workers have begun
    began = time.monotonic()
    flight.cancel()
    assert time.monotonic() - began < 5
    assert not multiprocessing.active_children()
    flight.cancel()  # again: nothing left to stop
