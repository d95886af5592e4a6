"""The shared log-scan engine: how files are cut into batches for the workers."""

import subprocess
import sys
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from auditor.connectors.log_scan import guided_batches


@given(st.integers(0, 3000), st.integers(1, 16), st.integers(1, 64))
def test_guided_batches_hold_every_file_once_in_order_and_shrink(count, workers, largest):
    files = [Path(f"f{i:05d}.json.gz") for i in range(count)]
    batches = guided_batches(files, workers, largest)
    assert [f for batch in batches for f in batch] == files
    sizes = [len(b) for b in batches]
    assert all(1 <= s <= largest for s in sizes)
    assert sizes == sorted(sizes, reverse=True)
    # the tail is fine-grained: the last ``workers`` batches hold one file each when there are enough files
    if count >= 2 * workers * largest:
        assert sizes[-workers:] == [1] * workers


def test_the_first_batches_are_as_large_as_allowed():
    batches = guided_batches([Path(str(i)) for i in range(200)], 2, 32)
    assert [len(b) for b in batches[:3]] == [32, 32, 32]
    assert len(batches) < 30  # not one file per batch: each batch costs a round trip to a worker


ORPHANED_WORKER = """
import os, sys
from auditor.connectors.log_scan import _die_with_parent
parent = os.getpid()
r, w = os.pipe()
if os.fork() == 0:  # the worker: its parent is gone (and init has adopted it) before it sets itself up
    os.close(w)
    os.read(r, 1)
    _die_with_parent(parent)
    open(sys.argv[1], "w").write("outlived its parent")
    os._exit(0)
os._exit(0)
"""


def test_a_worker_whose_parent_died_before_it_was_set_up_exits(tmp_path):
    """The race the kill test met once in a dozen runs: the audit killed between forking a reader and
    the reader asking Linux to kill it with its parent; the reader then took init for its parent."""
    marker = tmp_path / "survived"
    subprocess.run([sys.executable, "-c", ORPHANED_WORKER, str(marker)], check=True, timeout=30)
    time.sleep(1.5)  # the orphan reads EOF at once; it would write the marker within milliseconds
    assert not marker.exists()
