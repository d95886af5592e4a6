"""The command line: :func:`main` runs the ``auditor`` command in process; :func:`entry` is the
console script, which also ends the process."""

from auditor.cli.app import app, entry, main

__all__ = ["app", "entry", "main"]
