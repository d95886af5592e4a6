"""The on-disk cache of package-derived data: reused while versions hold, never a failure."""

from auditor.disk_cache import cache_dir, cached


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
