"""Atomic output: everything is written to a staging folder, then moved into place in one step each.

An interrupted run leaves the previous outputs (or none), never a half-written policy: files are
complete before they are renamed, and the ``policies/`` tree is swapped as a whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from auditor.errors import InputError

STAGING_PREFIX = ".auditor-staging-"


class OutputDir:
    """``with OutputDir(out) as staged: staged.write("report.md", text)`` — committed on success only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging: Path | None = None
        self.written: list[str] = []

    def __enter__(self) -> OutputDir:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(STAGING_PREFIX + "*"):  # left by a killed run
                shutil.rmtree(stale, ignore_errors=True)
            self.staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        except OSError as exc:
            raise InputError(f"{self.root}: cannot create output directory ({exc.strerror})") from None
        return self

    def write(self, relative: str, content: str | bytes) -> None:
        assert self.staging is not None
        path = self.staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        self.written.append(relative)

    def _commit(self) -> None:
        assert self.staging is not None
        trash = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + "old-", dir=self.root))
        for entry in sorted(self.staging.iterdir()):
            target = self.root / entry.name
            if target.is_dir() and not target.is_symlink():
                target.rename(trash / entry.name)
            entry.replace(target)  # files: atomic replace; directories: target moved aside above
        shutil.rmtree(trash, ignore_errors=True)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self._commit()
        finally:
            if self.staging is not None:
                shutil.rmtree(self.staging, ignore_errors=True)
