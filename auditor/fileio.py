"""Reading input files safely, splitting JSON text into records, and writing output files atomically.

Reading: only regular files are read (a FIFO, device or socket named ``*.json`` is refused, never
waited on); gzip is recognised by its magic bytes, every member of a multi-member file is inflated,
and inflating stops at a per-file cap so a gzip bomb cannot exhaust memory; a UTF-8 BOM is dropped
and UTF-16 text (what PowerShell's ``>`` writes) becomes UTF-8.

Splitting: :func:`json_values`, :func:`array_items` and :func:`object_members` find the values of a
JSON text that is not one well-formed document (newline-delimited, concatenated, truncated, or with
one value nested too deeply to decode), so a log reader can keep every readable record of it.
"""

from __future__ import annotations

import json
import os
import re
import stat
import uuid
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec
import orjson

try:  # Intel ISA-L inflates 2-3x faster than zlib; same format, same errors
    from isal import isal_zlib as _inflate
except ImportError:  # pragma: no cover - isal has wheels for the usual platforms
    _inflate = zlib  # type: ignore[assignment]

from auditor.errors import InputError
from auditor.timefmt import iso_utc

#: Default cap on the bytes one input file may hold once decompressed.
DEFAULT_CAP = 1 << 30
#: How much decompressed text :func:`read_head` returns by default.
HEAD_BYTES = 32 << 10
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_READ_CHUNK = 1 << 20
_GZIP_WBITS = 31  # 16 + 15: gzip header and trailer
_ZEROS = re.compile(rb"\x00*")


class NotRegularFile(InputError):
    """A path that is a FIFO, device, socket or directory where a file was expected."""


class InputTooLarge(InputError):
    """A file whose content, once decompressed, exceeds the per-file cap."""


# ----------------------------------------------------------------------------- reading files


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _open_regular(path: Path) -> tuple[int, int]:
    """A read-only descriptor of ``path`` and its size; refuses anything but a regular file without
    blocking (``O_NONBLOCK``: opening a FIFO does not wait for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        what = "broken symlink" if os.path.islink(path) else "file not found"
        raise InputError(f"{path}: {what}") from None
    except OSError as exc:  # e.g. a socket cannot be opened at all
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode) from None
        raise InputError(f"{path}: cannot open ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_regular(path, info.st_mode)
    return fd, info.st_size


def _not_regular(path: Path, mode: int) -> NotRegularFile:
    return NotRegularFile(f"{path}: {_kind(mode)}, not a regular file; not read", "pass log files only")


def _too_large(path: Path | str, cap: int) -> InputTooLarge:
    return InputTooLarge(
        f"{path}: more than {cap:,} bytes (the per-file cap) once decompressed; not read",
        "split the file, or raise the cap if it is genuine",
    )


def _read_fd(fd: int, path: Path, limit: int, expected: int = 0) -> bytes:
    """At most ``limit + 1`` bytes from ``fd`` (more than ``limit`` means too large); ``expected``
    (the size ``fstat`` gave) lets a regular file be read in one call."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        want = min(expected + 1 - total if total <= expected else _READ_CHUNK, limit + 1 - total)
        try:
            chunk = os.read(fd, want)
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_input(path: Path, cap: int = DEFAULT_CAP) -> bytes:
    """The text of a regular file: gunzipped (every member) when it starts with the gzip magic, its
    BOM dropped, UTF-16 transcoded to UTF-8; at most ``cap`` bytes, else :class:`InputTooLarge`."""
    fd, size = _open_regular(path)
    try:
        if size > cap:
            raise _too_large(path, cap)
        raw = _read_fd(fd, path, cap, size)
    finally:
        os.close(fd)
    if len(raw) > cap:
        raise _too_large(path, cap)
    if raw[:2] == GZIP_MAGIC:
        raw = gunzip(raw, path, cap)
    return as_utf8(raw, path)


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """Up to ``size`` bytes of the start of a file's text (decompressed, BOM dropped, UTF-16
    transcoded), reading only as much of the file as that takes; for recognising a file by content."""
    fd, _ = _open_regular(path)
    try:
        raw = _read_fd(fd, path, size - 1, size - 1)
        if raw[:2] == GZIP_MAGIC:
            raw = _inflate_head(fd, raw, size)
    finally:
        os.close(fd)
    if raw[:2] in _UTF16_BOMS:
        return raw.decode("utf-16", errors="ignore").encode()
    return raw.removeprefix(UTF8_BOM)


def _inflate_head(fd: int, compressed: bytes, size: int) -> bytes:
    """The first ``size`` inflated bytes of a gzip stream whose first bytes are ``compressed``."""
    inflater = _inflate.decompressobj(_GZIP_WBITS)
    out = b""
    try:
        while len(out) < size and compressed:
            out += inflater.decompress(compressed, size - len(out))
            compressed = inflater.unconsumed_tail or (b"" if inflater.eof else os.read(fd, _READ_CHUNK))
    except (zlib.error, _inflate.error, OSError):
        pass  # a corrupt stream: the head read so far is all there is
    return out


def gunzip(raw: bytes, path: Path | str, cap: int = DEFAULT_CAP) -> bytes:
    """Every member of a gzip file, concatenated, inflated in bounded steps: stops with
    :class:`InputTooLarge` past ``cap`` bytes, so memory never grows far beyond the cap."""
    parts: list[bytes] = []
    start = total = 0
    while True:
        start, total = _inflate_member(raw, start, path, cap, total, parts)
        start = _ZEROS.match(raw, start).end()  # type: ignore[union-attr]  # some writers pad with zeros
        if start >= len(raw):
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if raw[start : start + 2] != GZIP_MAGIC:
            raise InputError(f"{path}: trailing data after the gzip stream", "re-download the file")


def _inflate_member(
    raw: bytes, start: int, path: Path | str, cap: int, total: int, parts: list[bytes]
) -> tuple[int, int]:
    """Inflates the gzip member at ``raw[start:]`` onto ``parts``, feeding it bounded chunks (so a file
    of thousands of members is not copied once per member); returns where it ends and the new total."""
    view = memoryview(raw)
    inflater = _inflate.decompressobj(_GZIP_WBITS)
    pos, pending = start, b""
    try:
        while not inflater.eof:
            if not pending:
                if pos >= len(raw):
                    raise InputError(f"{path}: truncated gzip (the stream ends early)", "re-download the file")
                pending = view[pos : pos + _READ_CHUNK]
                pos += len(pending)
            part = inflater.decompress(pending, cap - total + 1)
            total += len(part)
            if total > cap:
                raise _too_large(path, cap)
            parts.append(part)
            pending = inflater.unconsumed_tail
    except (zlib.error, _inflate.error) as exc:
        raise InputError(f"{path}: corrupt gzip ({exc})", "re-download the file") from None
    return pos - len(inflater.unused_data), total


def as_utf8(raw: bytes, path: Path | str) -> bytes:
    """``raw`` without a UTF-8 BOM; UTF-16 text (with its BOM) transcoded to UTF-8."""
    if raw[:3] == UTF8_BOM:
        return raw[3:]
    if raw[:2] in _UTF16_BOMS:
        try:
            return raw.decode("utf-16").encode()
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not valid UTF-16 text ({exc.reason} at byte {exc.start})") from None
    return raw


def read_bytes(path: Path) -> bytes:
    """File contents, gunzipped and made UTF-8 (see :func:`read_input`)."""
    return read_input(path)


def load_json(path: Path, what: str) -> Any:
    """Parse a JSON file (optionally gzipped), naming ``what`` it should be in the error."""
    raw = read_bytes(path)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})", f"expected {what}") from None


# ----------------------------------------------------------------------------- finding files


def walk_files(roots: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every regular file below ``roots`` and the paths that could not be read, as ``(path, reason)``.

    Symlinked folders are followed, each folder once (by device and inode, so a symlink loop ends);
    hidden (dot) folders are skipped; unreadable folders, broken symlinks and FIFOs, sockets or devices
    are reported, not silently dropped. A root that is a regular file is returned as is."""
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen: set[tuple[int, int]] = set()
    for root in roots:
        try:
            info = root.stat()
        except OSError as exc:
            problems.append((root, _stat_problem(root, exc)))
            continue
        if stat.S_ISREG(info.st_mode):
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                files.append(root)
        elif stat.S_ISDIR(info.st_mode):
            _walk(root, info, files, problems, seen)
        else:
            problems.append((root, f"{_kind(info.st_mode)}, not a regular file"))
    return files, problems


def _stat_problem(path: Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "broken symlink" if path.is_symlink() else "no such file or directory"
    return f"cannot read ({exc.strerror})"


def _walk(
    root: Path, info: os.stat_result, files: list[Path], problems: list[tuple[Path, str]], seen: set[tuple[int, int]]
) -> None:
    """Depth first, each folder's entries by name; ``seen`` holds the folders and files already met."""
    stack = [(root, info)]
    while stack:
        folder, folder_info = stack.pop()
        if (folder_info.st_dev, folder_info.st_ino) in seen:
            continue
        seen.add((folder_info.st_dev, folder_info.st_ino))
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            problems.append((folder, f"cannot list folder ({exc.strerror})"))
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            try:
                entry_info = entry.stat()  # follows symlinks
            except OSError as exc:
                problems.append((path, _stat_problem(path, exc)))
                continue
            if stat.S_ISDIR(entry_info.st_mode):
                if not entry.name.startswith("."):
                    subfolders.append((path, entry_info))
            elif stat.S_ISREG(entry_info.st_mode):
                if (entry_info.st_dev, entry_info.st_ino) not in seen:
                    seen.add((entry_info.st_dev, entry_info.st_ino))
                    files.append(path)
            else:
                problems.append((path, f"{_kind(entry_info.st_mode)}, not a regular file"))
        stack.extend(reversed(subfolders))


# ----------------------------------------------------------------------------- splitting JSON text

_SPACE = re.compile(rb"[ \t\r\n]*")
_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]', re.DOTALL)
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_SCALAR = re.compile(rb"[^\s,\]}]+")
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_RAW = msgspec.json.Decoder(msgspec.Raw)


def _skip_space(text: bytes, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches the empty string


def first_byte(value: bytes | memoryview) -> int:
    """The first byte of ``value`` that is not JSON whitespace, or -1 when there is none."""
    pos = _SPACE.match(value).end()  # type: ignore[union-attr]  # matches the empty string
    return value[pos] if pos < len(value) else -1


def is_complete(value: bytes | memoryview) -> bool:
    """Whether ``value`` is exactly one well-formed JSON value (surrounding whitespace allowed)."""
    try:
        _RAW.decode(value)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def value_end(text: bytes, pos: int) -> int | None:
    """Where the JSON value starting at ``pos`` ends (brackets balanced, strings skipped), or None when
    the text ends first. The value itself may still be malformed inside."""
    try:  # fast: the decoder parses the value and stops at the first byte after it
        _RAW.decode(memoryview(text)[pos:])
        return len(text)
    except msgspec.DecodeError as exc:
        found = _TRAILING.search(str(exc))
        if found:
            return pos + int(found.group(1)) - 1
        if "truncated" in str(exc):
            return None
    except RecursionError:
        pass
    return _scan_end(text, pos)


def _scan_end(text: bytes, pos: int) -> int | None:
    """:func:`value_end` by scanning tokens, for values the decoder cannot parse."""
    first = text[pos : pos + 1]
    if first == b'"':
        match = _STRING.match(text, pos)
        return match.end() if match else None
    if first not in (b"{", b"["):
        match = _SCALAR.match(text, pos)
        return match.end() if match else pos + 1
    depth = 0
    for match in _TOKEN.finditer(text, pos):
        char = text[match.start()]
        if char == 0x22:  # a string
            continue
        depth += 1 if char in (0x5B, 0x7B) else -1
        if depth == 0:
            return match.end()
    return None


def joined_lines(text: bytes) -> bytes:
    """A newline-delimited text as one JSON array (valid only if every line holds one value): raw
    newlines cannot occur inside JSON strings, so one decode of this reads a well-formed file."""
    return b"[" + text.strip().replace(b"\n", b",") + b"]"


def json_values(text: bytes) -> Iterator[tuple[int, memoryview, bool]]:
    """The top-level values of a JSON text that is not one document: newline-delimited, concatenated
    (with or without newlines), pretty-printed one after another. Yields (line number, value, ended);
    a broken line of a newline-delimited text is yielded alone (and fails to decode), a value the text
    ends inside comes last with ``ended`` False."""
    view = memoryview(text)
    pos = _skip_space(text, 0)
    line, counted = 1, 0
    while pos < len(text):
        line += text.count(b"\n", counted, pos)
        counted = pos
        eol = text.find(b"\n", pos)
        eol = len(text) if eol < 0 else eol
        if is_complete(view[pos:eol]):
            yield line, view[pos:eol], True
            pos = _skip_space(text, eol)
            continue
        end = value_end(text, pos)
        if (end is None or end > eol) and _next_line_is_value(text, eol):
            end = eol  # a broken line among newline-delimited values
        if end is None:
            yield line, view[pos:], False
            return
        yield line, view[pos:end], True
        pos = _skip_space(text, end)


def _next_line_is_value(text: bytes, eol: int) -> bool:
    start = _skip_space(text, eol)
    if start >= len(text) or text[start] not in (0x5B, 0x7B):
        return False
    end = text.find(b"\n", start)
    return is_complete(memoryview(text)[start : len(text) if end < 0 else end])


def array_items(text: bytes, pos: int) -> Iterator[tuple[int, memoryview | None]]:
    """The items of the JSON array starting at ``pos``, as far as they can be found: an item the text
    ends inside, or a missing separator, is yielded as (index, None) and ends the iteration."""
    view = memoryview(text)
    pos, index = _skip_space(text, pos + 1), 0
    while pos < len(text) and text[pos] != 0x5D:
        end = value_end(text, pos)
        if end is None:
            yield index, None
            return
        yield index, view[pos:end]
        index += 1
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == 0x2C:
            pos = _skip_space(text, pos + 1)
        elif pos < len(text) and text[pos] != 0x5D:
            yield index, None
            return
    if pos >= len(text):  # the text ends before the array does
        yield index, None


def lenient_json(value: bytes | memoryview) -> bytes | None:
    """``value`` re-encoded as strict JSON when only a lenient parser accepts it (raw control
    characters such as a newline inside a string); None if it is not JSON even so."""
    try:
        return orjson.dumps(json.loads(bytes(value), strict=False))
    except (ValueError, RecursionError, TypeError, orjson.JSONEncodeError):
        return None


def object_members(text: bytes, pos: int) -> Iterator[tuple[str, int]]:
    """(key, where its value starts) for each member of the JSON object starting at ``pos``, as far
    as they can be found; ends at the first member whose value cannot be delimited."""
    pos = _skip_space(text, pos + 1)
    while pos < len(text) and text[pos] == 0x22:
        key = _STRING.match(text, pos)
        if key is None:
            return
        pos = _skip_space(text, key.end())
        if pos >= len(text) or text[pos] != 0x3A:
            return
        start = _skip_space(text, pos + 1)
        yield orjson.loads(key.group()), start
        end = value_end(text, start)
        if end is None:
            return
        pos = _skip_space(text, end)
        if pos < len(text) and text[pos] == 0x2C:
            pos = _skip_space(text, pos + 1)


# ----------------------------------------------------------------------------- writing files


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(data: Any, indent: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(data, default=_json_default, option=option | orjson.OPT_PASSTHROUGH_DATETIME)


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write ``path`` through a hidden temporary file renamed into place on success only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        with open(temporary, "wb") as handle:
            yield handle
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, data: Any, indent: bool = False) -> None:
    with atomic_file(path) as handle:
        handle.write(dumps(data, indent))
