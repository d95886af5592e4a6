"""Reading input files safely (regular files only, bounded gzip, BOM/UTF-16), walking folders, splitting
JSON text into values, and the atomic writes moved here from snapshot_io."""

import gzip
import json
import os
import socket
import time
import tracemalloc
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditor import fileio
from auditor.errors import InputError

SHAPES = Path(__file__).parent / "data" / "real" / "shapes"
STRATUS = SHAPES / "cloudtrail" / "stratus-sts-federation-token-array.json"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def bomb(path: Path, size: int) -> Path:
    """A gzip file that inflates to ``size`` zero bytes (about 5 KB on disk per MB)."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 22)
    with open(path, "wb") as handle:
        for _ in range(size // len(chunk)):
            handle.write(deflate.compress(chunk))
        handle.write(deflate.flush())
    return path


# ----------------------------------------------------------------------------- read_input


def test_a_real_sample_reads_as_is():
    assert fileio.read_input(STRATUS) == STRATUS.read_bytes()


def test_gzip_is_recognised_by_its_magic_bytes_not_its_name(tmp_path):
    text = STRATUS.read_bytes()
    assert fileio.read_input(write(tmp_path / "export.json", gzip.compress(text))) == text
    assert fileio.read_input(write(tmp_path / "no-extension", gzip.compress(text))) == text


def test_every_member_of_a_multi_member_gzip_is_read(tmp_path):
    members = gzip.compress(b'{"a": 1}\n') + gzip.compress(b'{"b": 2}\n') + gzip.compress(b'{"c": 3}\n')
    assert fileio.read_input(write(tmp_path / "cat.json.gz", members)) == b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'


def test_thousands_of_gzip_members_read_in_linear_time(tmp_path):
    """Firehose writes each record as its own gzip member: a file of 5,000 members."""
    record = b'{"messageType": "DATA_MESSAGE", "logEvents": []}\n' * 10
    path = write(tmp_path / "firehose-batch", b"".join(gzip.compress(record) for _ in range(5000)))
    started = time.perf_counter()
    assert fileio.read_input(path) == record * 5000
    assert time.perf_counter() - started < 1


def test_zero_padding_after_gzip_is_ignored_but_other_trailing_data_is_not(tmp_path):
    padded = write(tmp_path / "padded.gz", gzip.compress(b"[]") + b"\0" * 512)
    assert fileio.read_input(padded) == b"[]"
    junk = write(tmp_path / "junk.gz", gzip.compress(b"[]") + b"PK\x03\x04")
    with pytest.raises(InputError, match="trailing data after the gzip stream"):
        fileio.read_input(junk)


def test_truncated_and_corrupt_gzip_are_one_line_errors_naming_the_file(tmp_path):
    whole = gzip.compress(STRATUS.read_bytes())
    truncated = write(tmp_path / "truncated.json.gz", whole[: len(whole) // 2])
    with pytest.raises(InputError, match="truncated gzip") as caught:
        fileio.read_input(truncated)
    assert str(truncated) in caught.value.one_line() and "\n" not in caught.value.one_line()
    corrupt = write(tmp_path / "corrupt.json.gz", whole[:20] + bytes(200) + whole[220:])
    with pytest.raises(InputError, match="corrupt gzip"):
        fileio.read_input(corrupt)


def test_a_gzip_bomb_stops_at_the_cap_without_inflating_past_it(tmp_path):
    path = bomb(tmp_path / "bomb.json.gz", 64 << 20)
    assert path.stat().st_size < 1 << 20  # a 200:1 bomb
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(fileio.InputTooLarge, match="more than 1,048,576 bytes") as caught:
            fileio.read_input(path, cap=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1
    assert peak < 4 << 20, peak
    assert str(path) in str(caught.value)


def test_a_plain_file_over_the_cap_is_refused_before_reading(tmp_path):
    path = write(tmp_path / "big.json", b" " * 5000)
    with pytest.raises(fileio.InputTooLarge):
        fileio.read_input(path, cap=4096)
    assert fileio.read_input(path, cap=5000) == b" " * 5000


def test_the_cap_counts_all_members_together(tmp_path):
    path = write(tmp_path / "two.gz", gzip.compress(b"x" * 3000) + gzip.compress(b"y" * 3000))
    with pytest.raises(fileio.InputTooLarge):
        fileio.read_input(path, cap=5000)


def test_a_utf8_bom_is_dropped(tmp_path):
    text = STRATUS.read_bytes()
    assert fileio.read_input(write(tmp_path / "bom.json", fileio.UTF8_BOM + text)) == text
    assert fileio.read_input(write(tmp_path / "bom.json.gz", gzip.compress(fileio.UTF8_BOM + text))) == text


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_a_bom_is_transcoded_to_utf8(tmp_path, encoding):
    text = STRATUS.read_text()
    data = text.encode(encoding)
    if encoding != "utf-16":  # PowerShell writes the BOM; the explicit codecs do not
        data = ("\ufeff" + text).encode(encoding)
    assert fileio.read_input(write(tmp_path / "ps.json", data)) == text.encode()


def test_broken_utf16_is_an_input_error(tmp_path):
    path = write(tmp_path / "broken.json", b"\xff\xfe" + "{}".encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(InputError, match="not valid UTF-16"):
        fileio.read_input(path)


def test_a_fifo_named_json_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "events.json"
    os.mkfifo(fifo)
    started = time.perf_counter()
    with pytest.raises(fileio.NotRegularFile, match="FIFO") as caught:
        fileio.read_input(fifo)
    assert time.perf_counter() - started < 1
    assert isinstance(caught.value, InputError) and str(fifo) in caught.value.one_line()
    with pytest.raises(fileio.NotRegularFile):
        fileio.read_head(fifo)


def test_a_symlink_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "CloudTrail.json.gz"
    link.symlink_to("/dev/zero")
    with pytest.raises(fileio.NotRegularFile, match="a device"):
        fileio.read_input(link)


def test_a_socket_and_a_directory_are_refused(tmp_path):
    path = tmp_path / "s.json"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        with pytest.raises(fileio.NotRegularFile, match="a socket"):
            fileio.read_input(path)
    finally:
        server.close()
    with pytest.raises(fileio.NotRegularFile, match="a directory"):
        fileio.read_input(tmp_path)


def test_missing_files_and_broken_symlinks_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        fileio.read_input(tmp_path / "nope.json")
    (tmp_path / "dangling.json").symlink_to(tmp_path / "gone")
    with pytest.raises(InputError, match="broken symlink"):
        fileio.read_input(tmp_path / "dangling.json")


# ----------------------------------------------------------------------------- read_head


def test_read_head_inflates_only_the_start_of_a_large_gzip(tmp_path):
    path = bomb(tmp_path / "zeros.gz", 32 << 20)
    tracemalloc.start()
    try:
        head = fileio.read_head(path, 1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert head == b"\0" * 1000 and peak < 4 << 20


def test_read_head_of_plain_bom_and_utf16_text(tmp_path):
    text = STRATUS.read_bytes()
    assert fileio.read_head(STRATUS, 100) == text[:100]
    assert fileio.read_head(write(tmp_path / "bom", fileio.UTF8_BOM + text), 100) == text[:97]
    assert fileio.read_head(write(tmp_path / "u16", STRATUS.read_text().encode("utf-16")), 100) == text[:49]
    assert fileio.read_head(write(tmp_path / "short.gz", gzip.compress(b"[1]")), 100) == b"[1]"


def test_read_head_of_a_corrupt_gzip_returns_what_inflated(tmp_path):
    whole = gzip.compress(STRATUS.read_bytes())
    assert fileio.read_head(write(tmp_path / "cut.gz", whole[:300]), 50000).startswith(b"[\n   {")


# ----------------------------------------------------------------------------- jsonio compatibility


def test_read_bytes_and_load_json_keep_their_jsonio_behaviour(tmp_path):
    path = write(tmp_path / "details.json.gz", gzip.compress(b'{"UserDetailList": []}'))
    assert fileio.read_bytes(path) == b'{"UserDetailList": []}'
    assert fileio.load_json(path, "authorization details") == {"UserDetailList": []}
    bad = write(tmp_path / "bad.json", b"{nope")
    with pytest.raises(InputError, match="invalid JSON") as caught:
        fileio.load_json(bad, "authorization details")
    assert caught.value.hint == "expected authorization details"
    with pytest.raises(InputError, match="file not found"):
        fileio.read_bytes(tmp_path / "missing.json")


def test_gunzip_keeps_its_signature_and_names_the_file():
    assert fileio.gunzip(gzip.compress(b"abc"), "x.gz") == b"abc"
    with pytest.raises(InputError, match=r"x\.gz: corrupt gzip"):
        fileio.gunzip(b"\x1f\x8b" + bytes(30), "x.gz")


# ----------------------------------------------------------------------------- walk_files


def test_walk_files_lists_regular_files_and_reports_what_it_cannot_read(tmp_path):
    root = tmp_path / "logs"
    write(root / "a" / "1.json", b"[]")
    write(root / "a" / "b" / "2", b"[]")
    write(root / ".sync" / "hidden.json", b"[]")
    write(root / ".dotfile.json", b"[]")
    (root / "dangling.json").symlink_to(root / "gone")
    os.mkfifo(root / "pipe.json")
    outside = write(tmp_path / "elsewhere" / "3.json", b"[]")
    (root / "linked").symlink_to(outside.parent, target_is_directory=True)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    (root / "same.json").symlink_to(root / "a" / "1.json")
    files, problems = fileio.walk_files([root])
    assert [p.relative_to(root) for p in files] == [  # folder by folder, each file once (same.json is a/1.json)
        Path(".dotfile.json"),
        Path("same.json"),
        Path("a/b/2"),
        Path("linked/3.json"),
    ]
    assert dict(problems) == {
        root / "dangling.json": "broken symlink",
        root / "pipe.json": "a FIFO (named pipe), not a regular file",
    }


def test_walk_files_returns_an_explicit_file_as_is_and_reports_missing_roots(tmp_path):
    hidden = write(tmp_path / ".hidden" / "export.log", b"[]")
    files, problems = fileio.walk_files([hidden, tmp_path / "missing"])
    assert files == [hidden]
    assert problems == [(tmp_path / "missing", "no such file or directory")]


def test_walk_files_survives_a_symlink_loop_between_files(tmp_path):
    (tmp_path / "x.json").symlink_to(tmp_path / "y.json")
    (tmp_path / "y.json").symlink_to(tmp_path / "x.json")
    files, problems = fileio.walk_files([tmp_path])
    assert files == []
    assert {p.name for p, _ in problems} == {"x.json", "y.json"}
    assert all("cannot read" in reason for _, reason in problems)


def test_walk_files_reports_an_unreadable_folder(tmp_path):
    locked = tmp_path / "locked"
    write(locked / "1.json", b"[]")
    write(tmp_path / "open" / "2.json", b"[]")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: chmod does not stop this process from reading")
        files, problems = fileio.walk_files([tmp_path])
    finally:
        locked.chmod(0o755)
    assert files == [tmp_path / "open" / "2.json"]
    assert problems == [(locked, "cannot list folder (Permission denied)")]


# ----------------------------------------------------------------------------- splitting JSON text

json_leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=8,
)
objects = st.dictionaries(st.text(max_size=5), json_values, max_size=4)


def _as_text(value, style: int) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2) if style == 2 else orjson.dumps(value)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(objects, st.integers(0, 2)), min_size=2, max_size=6), st.sampled_from([b"", b"\n", b" \r\n"]))
def test_json_values_finds_every_value_of_concatenated_or_newline_delimited_text(values, separator):
    text = separator.join(_as_text(value, style) for value, style in values)
    found = list(fileio.json_values(text))
    assert [orjson.loads(bytes(value)) for _, value, _ in found] == [value for value, _ in values]
    assert all(ended for _, _, ended in found)


@settings(max_examples=100, deadline=None)
@given(json_values, st.sampled_from([b"", b" ", b"\n\t"]))
def test_value_end_and_the_token_scanner_agree_on_where_a_value_ends(value, padding):
    text = orjson.dumps(value) + padding + b', "after"'
    end = fileio.value_end(text, 0)
    assert text[:end].strip() == orjson.dumps(value)
    assert fileio._scan_end(text, 0) == len(orjson.dumps(value))


def test_json_values_isolates_a_broken_line_among_newline_delimited_values():
    text = b'{"a": 1}\n{"b": [1, 2\n{"c": 3}\n'
    assert [(line, bytes(value).strip(), ended) for line, value, ended in fileio.json_values(text)] == [
        (1, b'{"a": 1}', True),
        (2, b'{"b": [1, 2', True),
        (3, b'{"c": 3}', True),
    ]


def test_json_values_returns_a_value_the_text_ends_inside_last():
    text = b'{"a": 1}\n{\n  "b": [1,\n'
    found = [(line, bytes(value), ended) for line, value, ended in fileio.json_values(text)]
    assert found == [(1, b'{"a": 1}', True), (2, b'{\n  "b": [1,\n', False)]


def test_array_items_reach_past_an_item_too_deep_to_decode_and_stop_at_truncation():
    deep = b'{"junk": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    text = b'[{"x": 1}, ' + deep + b', {"z": 3}, {"w": [4'
    items = [(index, None if item is None else bytes(item)) for index, item in fileio.array_items(text, 0)]
    assert items == [(0, b'{"x": 1}'), (1, deep), (2, b'{"z": 3}'), (3, None)]


def test_array_items_of_an_array_cut_after_a_comma_end_with_a_missing_item():
    assert [item for _, item in fileio.array_items(b"[1, 2, ", 0)][-1] is None
    assert [bytes(item) for _, item in fileio.array_items(b"[1, 2]", 0)] == [b"1", b"2"]
    assert list(fileio.array_items(b"[]", 0)) == []


def test_object_members_find_a_container_behind_a_value_too_deep_to_decode():
    text = b'{"junk": ' + b"[" * 5000 + b"]" * 5000 + b', "Records": [{"q": 1}, {"r": 2'
    members = dict(fileio.object_members(text, 0))
    assert list(members) == ["junk", "Records"]
    assert text[members["Records"]] == ord("[")


def test_lenient_json_accepts_raw_control_characters_only():
    assert orjson.loads(fileio.lenient_json(b'{"a": "x\ny"}')) == {"a": "x\ny"}
    assert fileio.lenient_json(b'{"a": ') is None


def test_first_byte_and_is_complete():
    assert fileio.first_byte(b" \n\t{") == ord("{") and fileio.first_byte(b"  ") == -1
    assert fileio.is_complete(b' {"a": [1]} ') and not fileio.is_complete(b'{"a": 1} {"b": 2}')
    assert not fileio.is_complete(b"[" * 10_000 + b"]" * 10_000)


# ----------------------------------------------------------------------------- writing


def test_write_json_is_atomic_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "snap" / "manifest.json"
    fileio.write_json(target, {"complete": True}, indent=True)
    assert json.loads(target.read_text()) == {"complete": True}
    with pytest.raises(RuntimeError), fileio.atomic_file(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"complete": True}
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]


def test_dumps_writes_datetimes_in_the_one_time_format():
    from datetime import UTC, datetime

    assert fileio.dumps({"at": datetime(2026, 11, 20, 10, 0, tzinfo=UTC)}) == b'{"at":"2026-11-20T10:00:00Z"}'
    with pytest.raises(TypeError):
        fileio.dumps({"x": object()})
