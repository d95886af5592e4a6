"""Errors the CLI turns into one line on stderr, and the exit codes it uses."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class AuditorError(Exception):
    """A problem the user can fix. ``str()`` is the one-line message; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = str(self)
        return f"{text} ({self.hint})" if self.hint else text


class InputError(AuditorError):
    """An input file or directory is missing, malformed or of an unknown schema."""


class RuleError(AuditorError):
    """A rule file is malformed."""


class ConnectorError(AuditorError):
    """A connector could not collect from its source (credentials, permissions, network)."""
