"""The command line: :func:`main` is the ``auditor`` entry point."""

from auditor.cli.app import app, main

__all__ = ["app", "main"]
