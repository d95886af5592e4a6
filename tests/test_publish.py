"""OutputSet: one run at a time per --out, the whole set published in one step, user files kept, SIGKILL-safe."""

import builtins
import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditor.errors import InputError
from auditor.publish import MANIFEST, OutputSet, current_files

ROOT = Path(__file__).parents[1]
FIRST = ["report.md", "policies/aws/a.json", "first-only.csv"]
OLD = ["report.md", "blocklist.yaml", "policies/aws/a.json", "policies/aws/b.json", "old-only.csv"]
NEW = ["report.md", "blocklist.yaml", "policies/aws/a.json", "policies/gcp/c.json", "new-only.csv"]
USER = {"notes.md": "the user's notes", "policies/mine.json": "the user's own policy"}
SCRATCH = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@pytest.fixture
def scratch():
    """Where the tests running hundreds of publishes work: a tmpfs when there is one, ten times faster than a disk at
    creating files and folders; the system calls and their guarantees are the same."""
    with tempfile.TemporaryDirectory(dir=SCRATCH) as folder:
        yield Path(folder)


@pytest.fixture
def no_fsync(monkeypatch):
    """fsync only matters for power loss: a SIGKILLed process loses nothing of the page cache. Skipping it keeps the
    many-runs tests fast; test_files_are_fsynced_before_the_swap_and_the_folder_after checks the real calls."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def outputs(label: str, paths: list[str]) -> dict[str, str]:
    return {path: f"{label}:{path}" for path in paths}


def publish(out: Path, files: dict[str, str]) -> None:
    with OutputSet(out) as staged:
        for relative, content in files.items():
            staged.write(relative, content)


def visible(out: Path) -> dict[str, str] | None:
    """What a reader sees at ``out``, resolved once: path -> content; None when there is no ``out`` at all."""
    if not os.path.lexists(out):
        return None
    root = Path(os.path.realpath(out))
    return {relative: (root / relative).read_text() for relative in current_files(root)}


def state(out: Path) -> Path:
    return out.parent / f".{out.name}.auditor"


def runs(out: Path) -> list[str]:
    return sorted(folder.name for folder in (state(out) / "runs").iterdir())


def add_user_files(folder: Path) -> None:
    for relative, content in USER.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(content)


def assert_cleaned(out: Path) -> None:
    """No leftovers: no staging folder, no temporary symlink, no migration marker, only current and previous runs."""
    assert not list((state(out) / "staging").iterdir())
    assert sorted(p.name for p in state(out).iterdir()) == ["lock", "runs", "staging"]
    current = Path(os.path.realpath(out))
    previous = json.loads((current / MANIFEST).read_text())["previous"]
    assert runs(out) == sorted({current.name, *([previous] if previous else [])})


def one_line(error: pytest.ExceptionInfo) -> str:
    line = error.value.one_line()
    assert "\n" not in line and line
    return line


def managed(root: Path) -> Path:
    """An --out this module wrote twice, with user files added to the current set in between."""
    out = root / "out"
    publish(out, outputs("first", FIRST))
    add_user_files(out)
    publish(out, outputs("old", OLD))
    return out


def legacy(root: Path) -> Path:
    """An --out written by the older auditor: a real folder, its report.json listing its outputs, user files, and
    a staging folder of a killed run."""
    out = root / "out"
    files = {**outputs("old", OLD), "report.json": json.dumps({"outputs": [*OLD, "report.json"]})}
    for relative, content in files.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_text(content)
    add_user_files(out)
    (out / ".auditor-staging-x1" / "policies").mkdir(parents=True)
    (out / ".auditor-staging-x1" / "policies" / "half.json").write_text("half")
    return out


# --- one run at a time ----------------------------------------------------------------------------


def test_a_second_run_refuses_at_once_naming_the_first(tmp_path):
    out = tmp_path / "out"
    with OutputSet(out) as first:
        first.write("report.md", "first")
        started = time.monotonic()
        with pytest.raises(InputError) as refused, OutputSet(out):
            pass
        assert time.monotonic() - started < 1
        assert f"another auditor run (pid {os.getpid()})" in one_line(refused)
        assert "wait for it to finish" in one_line(refused)
    assert visible(out) == {"report.md": "first"}
    publish(out, {"report.md": "second"})  # the lock is free again
    assert visible(out) == {"report.md": "second"}


HOLDER = """
import sys
from pathlib import Path
from auditor.publish import OutputSet
with OutputSet(Path(sys.argv[1])) as staged:
    staged.write("report.md", "holder")
    print("ready", flush=True)
    sys.stdin.readline()
"""


def test_a_second_run_refuses_while_another_process_holds_the_folder(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline() == "ready\n"
        with pytest.raises(InputError) as refused, OutputSet(out):
            pass
        assert f"(pid {holder.pid})" in one_line(refused)
        assert not os.path.lexists(out)
    finally:
        holder.communicate("go\n", timeout=20)
    assert holder.returncode == 0
    assert visible(out) == {"report.md": "holder"}  # the refused run left the holder's staging folder alone


# --- the whole set in one step --------------------------------------------------------------------


def test_out_is_a_symlink_to_a_complete_versioned_run_folder(tmp_path):
    out = tmp_path / "out"
    publish(out, outputs("r1", NEW))
    target = os.readlink(out)
    assert target.startswith(".out.auditor/runs/") and out.is_symlink()
    assert visible(out) == outputs("r1", NEW)
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["written"]) == sorted(NEW) and manifest["previous"] is None


def test_an_exception_publishes_nothing(tmp_path):
    out = managed(tmp_path / "m")
    old_out = legacy(tmp_path / "l")
    for folder in (out, old_out):
        before, target = visible(folder), os.path.realpath(folder)
        with pytest.raises(RuntimeError), OutputSet(folder) as staged:
            staged.write("report.md", "new")
            raise RuntimeError("the audit failed")
        assert visible(folder) == before and os.path.realpath(folder) == target
        assert not list((state(folder) / "staging").iterdir())
    assert not old_out.is_symlink()  # the older auditor's folder is not even converted
    publish(out, {"report.md": "next"})  # the lock was released


def test_only_the_current_and_the_previous_run_remain(tmp_path, no_fsync):
    out = tmp_path / "out"
    for n in range(5):
        publish(out, outputs(f"r{n}", ["report.md", f"policies/only-{n}.json"]))
        assert_cleaned(out)
    assert len(runs(out)) == 2
    previous = json.loads((out / MANIFEST).read_text())["previous"]
    rollback = state(out) / "runs" / previous
    assert visible(rollback) == outputs("r3", ["report.md", "policies/only-3.json"])


def test_files_are_fsynced_before_the_swap_and_the_folder_after(tmp_path, monkeypatch):
    out = tmp_path / "out"
    publish(out, {"report.md": "old"})
    synced: list[tuple[int, str]] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, os.readlink(out)))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    publish(out, {"report.md": "new", "policies/aws/a.json": "new"})
    root, new = Path(os.path.realpath(out)), os.readlink(out)
    before = {inode for inode, target in synced if target != new}
    after = {inode for inode, target in synced if target == new}
    files = ["report.md", "policies/aws/a.json", MANIFEST]
    assert {os.stat(root / name).st_ino for name in files} <= before
    assert {os.stat(root / name).st_ino for name in ("", "policies", "policies/aws")} <= before
    assert os.stat(tmp_path).st_ino in after


def test_a_file_the_disk_fails_to_sync_publishes_nothing(tmp_path, monkeypatch):
    """Files are synced on threads while the next one is written; a sync that fails (EIO) fails the run
    with one line before the swap: the previous set stays, whole."""
    out = tmp_path / "out"
    publish(out, outputs("old", OLD))
    real = os.fsync

    def failing(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("blocklist.yaml"):
            raise OSError(errno.EIO, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(InputError, match=r"blocklist\.yaml: Input/output error"):
        publish(out, outputs("new", NEW))
    assert visible(out) == outputs("old", OLD)
    assert not any((tmp_path / ".out.auditor" / "staging").iterdir())


def test_a_reader_that_resolved_a_set_reads_it_whole_while_runs_publish(tmp_path, no_fsync):
    out = tmp_path / "out"
    sets = [outputs(f"r{n:02}", ["report.md", "blocklist.yaml", f"policies/{n % 3}.json"]) for n in range(25)]
    started = [0]
    publish(out, sets[0])
    stop, checked, wrong = threading.Event(), [], []

    def reader() -> None:
        while not stop.is_set():
            try:
                snapshot = visible(out)
            except FileNotFoundError:  # listed, then deleted: a set retired under the reader
                snapshot = {}
            label = int(snapshot["report.md"][1:3]) if "report.md" in snapshot else None
            if label is not None and started[0] < label + 2:  # the run retiring it has not started: must be whole
                checked.append(label)
                if snapshot != sets[label]:
                    wrong.append(snapshot)

    thread = threading.Thread(target=reader)
    thread.start()
    for n, files in enumerate(sets[1:], start=1):
        started[0] = n
        publish(out, files)
    stop.set()
    thread.join()
    assert len(set(checked)) > 5 and not wrong


# --- user files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hard_links", [True, False])
def test_user_files_survive_the_migration_and_many_runs(tmp_path, monkeypatch, no_fsync, hard_links):
    if not hard_links:  # e.g. protected_hardlinks, or a file system without them: copies instead

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(os, "link", refuse)
    out = legacy(tmp_path)
    publish(out, outputs("r1", NEW))
    assert out.is_symlink()
    assert visible(out) == {**outputs("r1", NEW), **USER}  # old outputs and the old staging folder are gone
    (out / "extra.csv").write_text("user extra")
    for n, paths in enumerate([FIRST, NEW, ["report.md"]], start=2):
        publish(out, outputs(f"r{n}", paths))
        assert visible(out) == {**outputs(f"r{n}", paths), **USER, "extra.csv": "user extra"}
        assert_cleaned(out)
    (out / "extra.csv").unlink()  # the user deletes one: it stays deleted, and no old run keeps it
    for n in range(5, 8):
        publish(out, outputs(f"r{n}", NEW))
        assert visible(out) == {**outputs(f"r{n}", NEW), **USER}
        assert_cleaned(out)


def test_an_output_at_a_user_files_path_wins_and_the_users_version_is_kept_aside(tmp_path, no_fsync):
    out = managed(tmp_path)
    (out / "new-only.csv").write_text("the user's csv")
    for n in range(3):
        publish(out, outputs(f"r{n}", NEW))
    assert visible(out) == {**outputs("r2", NEW), **USER}
    kept = [path for path in (state(out) / "runs").rglob("new-only.csv") if path.read_text() == "the user's csv"]
    assert len(kept) == 1


# --- input problems: one line, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("out", "problem"),
    [(".", "is the current folder"), ("..", "is the current folder"), ("/", "is the root folder")],
)
def test_out_must_be_a_dedicated_folder(tmp_path, monkeypatch, out, problem):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as refused, OutputSet(Path(out)):
        pass
    assert problem in one_line(refused) and "dedicated folder" in one_line(refused)
    assert sorted(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_a_foreign_symlink_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "link").symlink_to("elsewhere")
    for name, problem in [("file", "is a file"), ("link", "is a symlink auditor did not make (to elsewhere)")]:
        with pytest.raises(InputError) as refused, OutputSet(tmp_path / name):
            pass
        assert problem in one_line(refused)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "file", "link"]


def test_a_file_the_user_put_at_out_during_the_run_is_not_overwritten(tmp_path):
    out = managed(tmp_path)
    with pytest.raises(InputError) as refused, OutputSet(out) as staged:
        staged.write("report.md", "new")
        out.unlink()
        out.write_text("the user's file")
    assert "is a file" in one_line(refused) and out.read_text() == "the user's file"


@pytest.mark.parametrize(
    "relative", ["../escape.json", "policies/../../escape.json", "/etc/passwd", "", ".", MANIFEST, f"{MANIFEST}/x"]
)
def test_output_paths_must_stay_inside_the_set(tmp_path, relative):
    out = tmp_path / "out"
    with pytest.raises(InputError) as refused, OutputSet(out) as staged:
        staged.write(relative, "x")
    assert "is not inside the output folder" in one_line(refused)
    assert not os.path.lexists(out) and sorted(p.name for p in tmp_path.iterdir()) == [".out.auditor"]


@pytest.mark.parametrize("length", [250, 300])
def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path, monkeypatch, length):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as refused, OutputSet(Path("n" * length)):
        pass
    assert "File name too long" in one_line(refused) and "shorter --out name" in one_line(refused)


def test_a_full_disk_is_one_line_and_changes_nothing(tmp_path, monkeypatch):
    out = managed(tmp_path)
    before = visible(out)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InputError) as refused, OutputSet(out) as staged:
        staged.write("policies/aws/a.json", "new")
    assert f"cannot write {out / 'policies/aws/a.json'}: No space left on device" in one_line(refused)
    assert "free some disk space" in one_line(refused)
    monkeypatch.undo()
    assert visible(out) == before
    publish(out, {"report.md": "next"})


def as_unprivileged(action: Callable[[], object]) -> str:
    """The one-line error ``action`` raises, run as an ordinary user: root would write anywhere."""
    if os.geteuid() != 0:
        with pytest.raises(InputError) as refused:
            action()
        return one_line(refused)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
            action()
        except InputError as exc:
            os.write(write, exc.one_line().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as message:
        return message.read()


def test_an_unwritable_location_is_one_line(tmp_path):
    shared = Path(tempfile.mkdtemp())  # tmp_path is private to its owner: the unprivileged user cannot reach it
    try:
        shared.chmod(0o755)
        (shared / "ro").mkdir(mode=0o555)
        message = as_unprivileged(lambda: OutputSet(shared / "ro" / "out").__enter__())
        assert message == f"cannot write {shared / 'ro' / '.out.auditor'}: Permission denied " + (
            "(pass --out a folder you can write to)"
        )
    finally:
        (shared / "ro").chmod(0o755)
        shutil.rmtree(shared)


# --- SIGKILL at every step ------------------------------------------------------------------------

HOOKED = ("open", "mkdir", "rename", "replace", "link", "symlink", "unlink", "rmdir", "fsync", "ftruncate", "pwrite")


def killed_before_call(step: int, action: Callable[[], None]) -> bool:
    """Run ``action`` in a forked child that SIGKILLs itself just before its ``step``-th file system call (the calls
    that change something, or open); True when it was killed, False when it finished first."""
    pid = os.fork()
    if pid == 0:
        calls = itertools.count(1)

        def hook(function: Callable) -> Callable:
            def hooked(*args: object, **kwargs: object) -> object:
                if next(calls) == step:
                    os.kill(os.getpid(), signal.SIGKILL)
                return function(*args, **kwargs)

            return hooked

        code = 1
        try:
            for name in HOOKED:
                setattr(os, name, hook(getattr(os, name)))
            builtins.open = hook(builtins.open)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the run failed instead of being killed"
    return False


def kill_at_every_step(tmp_path: Path, prepare: Callable[[Path], Path]) -> list[str]:
    """Kill a run publishing NEW before each of its file system calls in turn. After each kill a reader sees exactly
    the old set or exactly the new one, and the next run succeeds and leaves nothing behind. Returns what was seen."""
    seen = []
    for step in itertools.count(1):
        out = prepare(tmp_path / str(step))
        old, new = visible(out), {**outputs("new", NEW), **USER}
        killed = killed_before_call(step, lambda out=out: publish(out, outputs("new", NEW)))
        after = visible(out)
        assert after in (old, new, None), (step, after)
        seen.append("old" if after == old else "new" if after == new else "none")
        publish(out, outputs("next", FIRST))
        assert visible(out) == {**outputs("next", FIRST), **USER}
        assert_cleaned(out)
        if not killed:
            return seen


def test_a_kill_at_any_step_leaves_the_old_set_or_the_new_one(scratch, no_fsync):
    seen = kill_at_every_step(scratch, managed)
    assert len(seen) > 40 and seen[-1] == "new" and "none" not in seen
    assert seen == sorted(seen, key=["old", "new"].index)  # old until the one swap, new after it


def test_a_kill_while_converting_an_older_auditors_folder(scratch, no_fsync):
    seen = kill_at_every_step(scratch, legacy)
    assert len(seen) > 40 and seen[-1] == "new"
    assert 1 <= seen.count("none") <= 3  # between moving the real folder aside and the symlink taking its place
    assert seen == sorted(seen, key=["old", "none", "new"].index)


# --- any sequence of runs -------------------------------------------------------------------------

AUDIT_PATHS = [f"{folder}{name}" for folder in ("", "policies/", "policies/aws/") for name in ("a.json", "report.md")]
USER_PATHS = ["u-notes.md", "policies/u-mine.json", "u-dir/u-data.csv"]
STEPS = st.one_of(
    st.tuples(st.just("run"), st.sets(st.sampled_from(AUDIT_PATHS)), st.booleans()),
    st.tuples(st.just("write"), st.sampled_from(USER_PATHS), st.text("xyz", max_size=3)),
    st.tuples(st.just("delete"), st.sampled_from(USER_PATHS), st.just("")),
)


def apply_run(out: Path, paths: set[str], fails: bool, label: str) -> dict[str, str] | None:
    """One audit run; a failing one raises inside the with block. Returns what it published."""
    files = outputs(label, sorted(paths))
    try:
        with OutputSet(out) as staged:
            for relative, content in files.items():
                staged.write(relative, content)
            if fails:
                raise RuntimeError
    except RuntimeError:
        return None
    return files


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(STEPS, max_size=8))
def test_the_current_set_is_the_last_runs_files_plus_the_users(no_fsync, steps):
    with tempfile.TemporaryDirectory(dir=SCRATCH) as root:
        out = Path(root) / "out"
        published: dict[str, str] = {}
        user: dict[str, str] = {}
        for n, (kind, what, extra) in enumerate(steps):
            if kind == "run":
                result = apply_run(out, what, extra, f"r{n}")
                published = published if result is None else result
            elif kind == "write":
                (out / what).parent.mkdir(parents=True, exist_ok=True)  # before any run: a real folder
                (out / what).write_text(extra)
                user[what] = extra
            elif what in user:
                (out / what).unlink()
                del user[what]
            assert (visible(out) or {}) == {**published, **user}
            if out.is_symlink():
                assert_cleaned(out)


def test_a_streamed_output_is_published_with_the_set_and_a_failing_writer_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    publish(out, outputs("old", OLD))

    def failing(handle) -> None:
        handle.write(b"half a table")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError, match="No space left"), OutputSet(out) as staged:
        staged.write("report.md", "new report")
        staged.write("permissions.csv", failing)
    assert visible(out) == outputs("old", OLD)

    with OutputSet(out) as staged:
        staged.write("report.md", "new report")
        staged.write("permissions.csv", lambda handle: handle.write(b"a,b\n1,2\n"))
    assert visible(out) == {"report.md": "new report", "permissions.csv": "a,b\n1,2\n"}


def test_background_writes_keep_their_place_and_a_failing_one_publishes_nothing(tmp_path):
    out = tmp_path / "out"
    publish(out, outputs("old", OLD))
    started, release = threading.Event(), threading.Event()

    def slow(path: Path) -> None:
        started.set()
        assert release.wait(10)
        path.write_bytes(b"a,b\n1,2\n")

    def failing(path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(InputError, match="No space left"), OutputSet(out) as staged:
        staged.write_in_background("permissions.parquet", failing)
        staged.write("report.md", "new report")
    assert visible(out) == outputs("old", OLD)

    with OutputSet(out) as staged:
        staged.write_in_background("permissions.csv", slow)
        assert started.wait(10)
        staged.write("report.md", "new report")
        assert staged.written == ["permissions.csv", "report.md"]
        assert visible(out) == outputs("old", OLD)  # nothing is published while a write is running
        release.set()
    assert visible(out) == {"report.md": "new report", "permissions.csv": "a,b\n1,2\n"}


@pytest.mark.parametrize("table", ["csv", "parquet"])
def test_a_full_disk_under_polars_own_writer_is_one_line_with_the_fix(tmp_path, table):
    """polars reports a full disk as OSError without errno (CSV) or as ComputeError (parquet): both are
    the output location's problem, one line naming the file and the fix, and nothing is published."""
    out = tmp_path / "out"
    publish(out, outputs("old", OLD))
    frame = pl.DataFrame({"action": [f"s3:Action{i}" for i in range(50_000)]})

    def onto_a_full_disk(path: Path) -> None:
        (frame.write_csv if table == "csv" else frame.write_parquet)("/dev/full")

    with pytest.raises(InputError) as refused, OutputSet(out) as staged:
        staged.write_in_background(f"permissions.{table}", onto_a_full_disk)
    assert f"cannot write {out / f'permissions.{table}'}: No space left on device" in one_line(refused)
    assert "free some disk space" in one_line(refused)
    assert visible(out) == outputs("old", OLD)


def test_a_native_writer_failing_for_another_reason_is_not_taken_for_a_disk_problem(tmp_path):
    def broken(path: Path) -> None:
        raise ValueError("a bug in the writer")

    with pytest.raises(ValueError, match="a bug"), OutputSet(tmp_path / "out") as staged:
        staged.write_in_background("permissions.csv", broken)
