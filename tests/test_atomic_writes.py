"""Snapshot folders: files appear whole or not at all; an unfinished collection is refused."""

import json
import shutil
from pathlib import Path

import pytest

from auditor.connectors.gcp.files import GcpFiles
from auditor.errors import InputError
from auditor.fileio import atomic_file, write_json

GCP_FIXTURE = Path(__file__).parents[1] / "fixtures" / "gcp"


def test_a_failed_write_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "data.json"
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b'{"half": ')
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list((tmp_path / "sub").iterdir()) == []
    write_json(target, {"whole": True})
    assert json.loads(target.read_text()) == {"whole": True}


def test_an_unfinished_gcp_collection_is_refused(tmp_path):
    snapshot = tmp_path / "snapshot"
    shutil.copytree(GCP_FIXTURE, snapshot)
    write_json(snapshot / "manifest.json", {"format": "auditor.gcp-snapshot/v1", "complete": False})
    with pytest.raises(InputError, match="did not finish"):
        GcpFiles.from_dir(snapshot)
    write_json(snapshot / "manifest.json", {"format": "auditor.gcp-snapshot/v1", "complete": True})
    assert GcpFiles.from_dir(snapshot).manifest["complete"] is True
