"""Publish one audit's outputs as a whole: a reader of ``--out`` sees the previous set or the new one, never a mix.

On disk, for ``--out <parent>/<name>``::

    <parent>/<name>                          symlink -> .<name>.auditor/runs/<run-id>, the current set
    <parent>/.<name>.auditor/lock            flock(2)ed by the run writing this output; holds its pid
    <parent>/.<name>.auditor/staging/<id>/   the set being written, never visible at <out>
    <parent>/.<name>.auditor/runs/<id>/      complete sets: the current one and the previous one
    <parent>/.<name>.auditor/runs/<id>/.auditor-run.json
                                             manifest: the run it replaced, the files the audit wrote there and
                                             the user's files it carried over (path -> inode: of the file
                                             written; of the file it was brought from)

One run: take the lock (a second run refuses at once, naming the first); finish what a killed run left (below); write
every output in ``staging/<id>`` (each file fsync'ed); bring over the user's files of the current set, those its
manifest does not list as written (a hard link, a copy where links fail; an output of this run at the same path wins);
write the manifest; fsync the folders; rename the folder into ``runs/``; rename a fresh symlink over ``<out>`` (one
atomic step); fsync ``<parent>``; retire every run but the new one and the one it replaced (kept for rollback: point
``<out>`` at it with ``ln -sfn .<name>.auditor/runs/<id> <name>``). An exception inside the ``with`` block publishes
nothing and removes the staging folder.

Ownership: the audit deletes only what it made in a retired run: the files its manifest lists as written (same path
and inode), and user files that live on in a kept set (same inode or same bytes) or were carried into one (the user
may have deleted them there since). Anything else stays, so a retired folder keeping only such files is left in place.

A reader should resolve ``<out>`` once (``os.path.realpath``) and read from there: that set stays intact while the
next run publishes, and until the one after it does.

Migration: a real ``<out>`` folder (an older auditor's, maybe holding user files) stays untouched until this run's set
is complete. The files its ``report.json`` lists under ``outputs`` (and ``.auditor-staging-*`` leftovers) are taken for
the audit's, everything else for the user's and carried over. Then, in one go: a marker recording what the audit owns
there is written, the folder is renamed to ``runs/<id>`` (``<out>`` does not exist until the next rename, a few system
calls later: a reader may briefly see no ``<out>``, never a mix), the new symlink is renamed over ``<out>``, and the
old folder becomes the previous set. A run killed in between leaves the marker: the next run puts the old folder back
at ``<out>`` as the current set, then goes on as usual.

After a SIGKILL at any point ``<out>`` shows the old set or the new one; the next run removes the leftovers: staging
folders (of dead runs only: the lock proves no other run is live), the temporary symlink, unpublished run folders.
"""

from __future__ import annotations

import errno
import fcntl
import filecmp
import json
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from secrets import token_hex
from types import TracebackType
from typing import BinaryIO

from auditor.errors import InputError

#: Writes one output into the open file.
Writer = Callable[[BinaryIO], None]
#: Writes one output file itself, at the path it is given.
FileWriter = Callable[[Path], None]

MANIFEST = ".auditor-run.json"
MIGRATING = "migrating.json"
STATE_SUFFIX = ".auditor"
LEGACY_STAGING = ".auditor-staging-"  # what the older auditor's OutputDir left behind when killed
FOLDER_HINT = "pass --out a dedicated folder: a new one, or one auditor wrote before"
HINTS = {
    errno.EACCES: "pass --out a folder you can write to",
    errno.EPERM: "pass --out a folder you can write to",
    errno.EROFS: "pass --out a folder on a writable file system",
    errno.ENOSPC: "free some disk space, or pass --out a folder on another file system",
    errno.EDQUOT: "free some disk space, or pass --out a folder on another file system",
    errno.ENAMETOOLONG: "pass a shorter --out name",
    errno.EXDEV: "pass --out a folder that is not a mount point",
    errno.EBUSY: "pass --out a folder that is not a mount point",
}


@dataclass
class Manifest:
    """What the audit made in one run folder, path -> inode: the inode tells a file the user replaced from ours."""

    run: str
    previous: str | None = None
    written: dict[str, int] = field(default_factory=dict)
    carried: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        try:
            data = json.loads(path.read_bytes())
            return cls(str(data["run"]), data["previous"], dict(data["written"]), dict(data["carried"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def dump(self) -> bytes:
        fields = {"run": self.run, "previous": self.previous, "written": self.written, "carried": self.carried}
        return json.dumps(fields, indent=1).encode() + b"\n"


class OutputSet:
    """``with OutputSet(out) as staged: staged.write("report.md", text)`` — published as a whole on success only."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = Path(os.path.abspath(out))  # not resolved: <out> itself is our symlink
        self.state = self.path.parent / f".{self.path.name}{STATE_SUFFIX}"
        self.run = _run_id()
        self.staging = self.state / "staging" / self.run
        self._written: dict[str, int] = {}
        self._pending: dict[str, Future[int]] = {}
        self._syncs: list[Future[None]] = []
        self._threads: ThreadPoolExecutor | None = None
        self._lock: int | None = None

    @property
    def written(self) -> list[str]:
        """The relative paths written so far, in order."""
        return list(self._written)

    def __enter__(self) -> OutputSet:
        with self._guard(self.path):
            self._check_out()
        with self._guard(self.state):
            (self.state / "staging").mkdir(parents=True, exist_ok=True)
            (self.state / "runs").mkdir(exist_ok=True)
            self._lock = self._acquire()
        try:
            with self._guard(self.state):
                self._recover()
                self.staging.mkdir()
        except BaseException:
            self._release()
            raise
        return self

    def write(self, relative: str, content: str | bytes | Writer) -> None:
        """Write one output of this run, complete and fsync'ed; visible at ``<out>`` once the whole set is.
        ``content`` may be a function that writes into the open file (a large output streamed, never
        held in memory whole)."""
        rel, target = self._target(relative)
        with self._guard(self.out / rel):
            data = content.encode("utf-8") if isinstance(content, str) else content
            self._written[rel] = _write_file(target, data, sync=False)
        # fsync(2) waits for the disk, not for Python: done on a thread while the next output renders.
        self._syncs.append(self._pool().submit(self._sync, rel, target))

    def write_in_background(self, relative: str, write: FileWriter) -> None:
        """Like :meth:`write`, for an output a native writer (polars') writes itself at the path it is
        given, on a thread while the caller goes on: through the path it needs the GIL for no chunk,
        as it would through a Python file object. The set is published once every one has finished."""
        rel, target = self._target(relative)
        self._written[rel] = 0  # its place in the order; the inode once written
        self._pending[rel] = self._pool().submit(self._write_by, rel, target, write)

    def _target(self, relative: str) -> tuple[str, Path]:
        if self._lock is None:
            raise RuntimeError("OutputSet.write() outside its with block")
        rel = _inside(relative)
        target = self.staging / rel
        with self._guard(self.out / rel):
            target.parent.mkdir(parents=True, exist_ok=True)
        return rel, target

    def _pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(4, thread_name_prefix="auditor-output")
        return self._threads

    def _write_by(self, rel: str, target: Path, write: FileWriter) -> int:
        with self._guard(self.out / rel):
            try:
                write(target)
            except Exception as exc:
                error = _os_error_of(exc)
                if error is None:
                    raise
                raise error from exc
            return _fsync(target)

    def _sync(self, rel: str, target: Path) -> None:
        with self._guard(self.out / rel):
            _fsync(target)

    def _settle(self) -> None:
        """Wait for the background writes and the fsyncs of the others; the first failure is raised."""
        pending, self._pending = self._pending, {}
        syncs, self._syncs = self._syncs, []
        wait([*pending.values(), *syncs])
        for rel, future in pending.items():
            self._written[rel] = future.result()
        for sync in syncs:
            sync.result()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self._settle()
                with self._guard(self.path):
                    self._publish()
        finally:
            if self._threads is not None:
                self._threads.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(self.staging, ignore_errors=True)
            self._release()

    @contextmanager
    def _guard(self, path: Path) -> Iterator[None]:
        """An OSError here is the output location's fault (unwritable, full, name too long): one line with the fix."""
        try:
            yield
        except OSError as exc:
            hint = HINTS.get(exc.errno or 0, FOLDER_HINT)
            raise InputError(f"cannot write {path}: {exc.strerror or exc}", hint) from None

    def _check_out(self) -> None:
        """Refuse an ``--out`` that cannot be a dedicated folder, before anything is written."""
        if self.path.parent == self.path:
            problem = "is the root folder"
        elif _holds_cwd(self.path):
            problem = "is the current folder or one of its parents"
        elif any(_is_state(part) for part in (*Path(os.path.realpath(self.path.parent)).parts, self.path.name)):
            problem = "is inside auditor's bookkeeping folder (.<name>.auditor)"
        elif self.path.is_symlink():
            problem = (
                None if self._current_run() else f"is a symlink auditor did not make (to {os.readlink(self.path)})"
            )
        else:
            problem = "is a file" if self.path.exists() and not self.path.is_dir() else None
        if problem:
            raise InputError(f"--out {self.out} {problem}", FOLDER_HINT)

    def _acquire(self) -> int:
        """flock the lock file or refuse at once, naming the holder; the kernel drops the lock when its holder dies."""
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if not _try_lock(fd):
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise InputError(
                    f"--out {self.out} is being written by another auditor run (pid {holder})",
                    "wait for it to finish, or pass a different --out",
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # drops the flock
            self._lock = None

    def _recover(self) -> None:
        """Undo what a killed run left; its unpublished run folder goes with the next retirement."""
        self._finish_migration()
        _remove(self.state / "swap")
        for stale in (self.state / "staging").iterdir():
            shutil.rmtree(stale, ignore_errors=True)

    def _current_run(self) -> str | None:
        """The run ``<out>`` points at, when ``<out>`` is a symlink made here."""
        try:
            parts = PurePosixPath(os.readlink(self.path)).parts
        except OSError:  # missing, or not a symlink
            return None
        return parts[2] if parts[:2] == (self.state.name, "runs") and len(parts) == 3 and parts[2] != ".." else None

    def _current(self) -> tuple[Path, Manifest] | None:
        """What a reader sees at ``<out>``: its folder and what the audit owns there."""
        run = self._current_run()
        if run is not None:
            folder = self.state / "runs" / run
            return (folder, _manifest_of(folder)) if folder.is_dir() else None
        if self.path.is_dir() and not self.path.is_symlink():
            return self.path, _legacy_manifest(self.path, f"{_run_id()}-migrated")
        return None

    def _publish(self) -> None:
        self._check_out()  # again: the user may have put something at <out> meanwhile
        current = self._current()
        carried = self._carry(*current) if current else {}
        previous = current[1].run if current else None
        _write_file(self.staging / MANIFEST, Manifest(self.run, previous, self._written, carried).dump())
        for folder, _, _ in os.walk(self.staging):
            _fsync(Path(folder))
        os.rename(self.staging, self.state / "runs" / self.run)
        _fsync(self.state / "runs")
        if current and current[0] == self.path:
            self._move_legacy(current[1])
        self._point_at(self.run)
        self._finish_migration()
        self._retire([self.run, *([previous] if previous else [])])

    def _carry(self, folder: Path, owned: Manifest) -> dict[str, int]:
        """Bring the user's files of the current set into the new one; path -> inode of the file brought over."""
        carried: dict[str, int] = {}
        for rel, ino in _inodes(folder).items():
            if rel != MANIFEST and owned.written.get(rel) != ino:
                brought = _bring(folder / rel, self.staging / rel)
                if brought is not None:
                    carried[rel] = brought
        return carried

    def _move_legacy(self, legacy: Manifest) -> None:
        """Move an older auditor's real ``<out>`` folder aside as the previous set (see the module docstring)."""
        _write_file(self.state / MIGRATING, legacy.dump())
        _fsync(self.state)
        _remove(self.path / MANIFEST)  # copied in from some other set: the marker replaces it
        os.rename(self.path, self.state / "runs" / legacy.run)

    def _finish_migration(self) -> None:
        """If the run moving an older auditor's folder aside died before the swap, put the folder back at ``<out>``;
        then the marker becomes the moved folder's manifest."""
        marker = self.state / MIGRATING
        legacy = Manifest.read(marker)
        moved = self.state / "runs" / legacy.run if legacy else None
        if moved is not None and moved.is_dir():
            if not os.path.lexists(self.path):
                self._point_at(moved.name)
            os.replace(marker, moved / MANIFEST)
            _fsync(moved)
        _remove(marker)

    def _point_at(self, run: str) -> None:
        """Swap ``<out>`` to ``runs/<run>`` with one rename(2): a reader resolves the old target or the new one."""
        swap = self.state / "swap"
        _remove(swap)
        os.symlink(f"{self.state.name}/runs/{run}", swap)  # relative: moving <parent> keeps it working
        os.replace(swap, self.path)
        _fsync(self.path.parent)

    def _retire(self, keep: list[str]) -> None:
        """Empty every run folder but ``keep`` of what the audit made there; best effort, the next run tries again."""
        runs = self.state / "runs"
        kept = [(runs / name, _manifest_of(runs / name)) for name in keep]
        for folder in runs.iterdir():
            if folder.name not in keep:
                with suppress(OSError):
                    _retire_run(folder, kept, self._pool())


def current_files(out: Path) -> list[str]:
    """The files a reader sees at ``out`` now, relative and sorted, the manifest left out."""
    root = Path(os.path.realpath(out))
    return sorted(rel for rel in _leaves(root) if rel != MANIFEST) if root.is_dir() else []


def _run_id() -> str:
    """Sortable by start time (for a human picking a rollback), unique by pid and a random part."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{os.getpid()}-{token_hex(2)}"


def _inside(relative: str) -> str:
    """``relative`` as a clean path inside the set; absolute paths, ``..`` and the manifest's name are refused."""
    path = PurePosixPath(relative)
    if "\0" in relative or path.is_absolute() or ".." in path.parts or path.parts[:1] in ((), (MANIFEST,)):
        raise InputError(f"output path {relative!r} is not inside the output folder", "use a relative path without ..")
    return str(path)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _holds_cwd(path: Path) -> bool:
    here = Path(os.path.realpath(os.getcwd()))
    real = path if path.is_symlink() else Path(os.path.realpath(path))  # a symlink is replaced, its target stays
    return real == here or real in here.parents


def _is_state(name: str) -> bool:
    return name.startswith(".") and name.endswith(STATE_SUFFIX) and len(name) > len(STATE_SUFFIX) + 1


_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_error_of(exc: Exception) -> OSError | None:
    """The system error a native writer's exception reports: Rust's I/O errors end ``(os error N)``,
    wrapped in whatever the library raises (polars: ``ComputeError`` for parquet)."""
    found = _RUST_OS_ERROR.search(str(exc))
    if found is not None:
        code = int(found.group(1))
        return OSError(code, os.strerror(code))
    return exc if isinstance(exc, OSError) else None


def _write_file(path: Path, data: bytes | Writer, sync: bool = True) -> int:
    """Write ``data`` (or what the writer writes), durably unless ``sync`` is off (the caller then
    calls :func:`_fsync`); returns the file's inode."""
    with open(path, "wb") as handle:
        if isinstance(data, bytes):
            handle.write(data)
        else:
            data(handle)
        handle.flush()
        if sync:
            os.fsync(handle.fileno())
        return os.fstat(handle.fileno()).st_ino


def _fsync(path: Path) -> int:
    """fsync(2) a file or folder through a new descriptor (the kernel flushes it, whichever descriptor
    wrote it); returns its inode."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)


def _leaves(root: Path, prefix: str = "") -> Iterator[str]:
    """Relative paths of everything under ``root`` that is not a folder; symlinks are not followed."""
    with os.scandir(root / prefix) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from _leaves(root, f"{prefix}{entry.name}/")
            else:
                yield f"{prefix}{entry.name}"


def _inodes(root: Path) -> dict[str, int]:
    return {rel: os.lstat(root / rel).st_ino for rel in list(_leaves(root))}


def _manifest_of(folder: Path) -> Manifest:
    """A run folder's manifest, named after the folder; an empty one (the audit owns nothing) when unreadable."""
    found = Manifest.read(folder / MANIFEST)
    return replace(found, run=folder.name) if found else Manifest(folder.name)


def _legacy_manifest(folder: Path, run: str) -> Manifest:
    """What an older auditor owns in its real ``--out`` folder: the outputs its report.json lists, and its staging
    leftovers. Without a readable report.json everything there is taken for the user's, and kept."""
    try:
        listed = set(json.loads((folder / "report.json").read_bytes())["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        listed = set()
    inodes = _inodes(folder)
    return Manifest(
        run, written={rel: ino for rel, ino in inodes.items() if rel in listed or rel.startswith(LEGACY_STAGING)}
    )


def _bring(source: Path, target: Path) -> int | None:
    """Put a user's file at ``target``: a hard link, else a copy; returns the source's inode. None when this run's
    outputs occupy the path, or the file is gone or cannot be copied (fifos, sockets): it stays in the older set."""
    try:
        found = os.lstat(source)
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileNotFoundError, FileExistsError, NotADirectoryError):  # gone; one of its folders is an output file
        return None
    if os.path.lexists(target):
        return None
    try:
        os.link(source, target, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError:  # no hard links here (file system, protected_hardlinks): copy
        if not _copy(source, target, found.st_mode):
            return None
    return found.st_ino


def _copy(source: Path, target: Path, mode: int) -> bool:
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return False
    try:
        shutil.copy2(source, target, follow_symlinks=False)
    except FileNotFoundError:  # the user deleted it meanwhile
        return False
    if stat.S_ISREG(mode):
        with open(target, "rb") as handle:
            os.fsync(handle.fileno())
    return True


def _retire_run(folder: Path, kept: list[tuple[Path, Manifest]], threads: ThreadPoolExecutor) -> None:
    """Delete what the audit made in a retired run folder, then the folders left empty, then the run folder.
    The files are unlinked on ``threads``: freeing a large table's blocks takes milliseconds, and the run
    waits for this last step."""
    own = _manifest_of(folder)
    disposable = [
        folder / rel
        for rel, ino in _inodes(folder).items()
        if rel != MANIFEST and _disposable(folder / rel, rel, ino, own, kept)
    ]
    for unlinked in [threads.submit(os.unlink, path) for path in disposable]:
        unlinked.result()
    for parent, names, _ in os.walk(folder, topdown=False):
        for name in names:
            with suppress(OSError):  # not empty: a user's file the audit did not make
                os.rmdir(os.path.join(parent, name))
    if set(os.listdir(folder)) <= {MANIFEST}:
        _remove(folder / MANIFEST)  # last: a retirement cut short keeps what it needs to go on
        os.rmdir(folder)


def _disposable(path: Path, rel: str, ino: int, own: Manifest, kept: list[tuple[Path, Manifest]]) -> bool:
    """Deleting ``path`` loses nothing: the audit wrote it, a kept set holds the same file, or it was carried into a
    kept set (the user may have deleted it there since)."""
    if own.written.get(rel) == ino:
        return True
    return any(manifest.carried.get(rel) == ino or _same(path, folder / rel) for folder, manifest in kept)


def _same(a: Path, b: Path) -> bool:
    """Whether ``b`` holds what ``a`` holds: the same inode, or a copy (same bytes, same symlink target)."""
    try:
        first, second = os.lstat(a), os.lstat(b)
    except OSError:  # b is missing, or one of its folders is a file there
        return False
    if (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino):
        return True
    if stat.S_ISLNK(first.st_mode) and stat.S_ISLNK(second.st_mode):
        return os.readlink(a) == os.readlink(b)
    regular = stat.S_ISREG(first.st_mode) and stat.S_ISREG(second.st_mode)
    return regular and first.st_size == second.st_size and filecmp.cmp(a, b, shallow=False)
