"""The slow path every record decoder shares: a text that is not one of the fast shapes is read
value by value (one record, several lines, a truncated or too-deep container), and problems met
before the text is known to hold records of the right kind are held back: a file of something
else is one unreadable file, not many bad records."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import msgspec

from auditor import fileio

R = TypeVar("R")
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class Sink(Protocol):
    def bad_record(self, origin: str, where: str, exc: Exception) -> None: ...


def at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def reason(exc: Exception) -> Exception:
    if isinstance(exc, RecursionError):
        return ValueError("JSON nested too deeply to decode")
    return exc


class RecordReader(Generic[R]):
    """Subclasses say what a batch of their records is (:meth:`batch`), how to read one value
    (:meth:`value`) and a container the text ends inside (:meth:`truncated`)."""

    kind = "records"  # shown in "not a <kind>"
    none_found = "no records found"
    #: Whether a file of nothing (or only white space) is an input problem: True where every export of
    #: the format writes something even when it holds no records (``[]``, a page without entries).
    empty_is_a_problem = False

    def __init__(self, origin: str, sink: Sink) -> None:
        self.origin = origin
        self.sink = sink
        self.records: list[R] = []
        self.recognized = False
        self.pending: list[tuple[str, Exception]] = []  # problems met before the file was known

    def bad(self, where: str, exc: Exception) -> None:
        if self.recognized:
            self.sink.bad_record(self.origin, where, reason(exc))
        else:
            self.pending.append((where, reason(exc)))

    def recognize(self) -> None:
        if not self.recognized:
            self.recognized = True
            for where, exc in self.pending:
                self.sink.bad_record(self.origin, where, exc)
            self.pending.clear()

    def add(self, records: list[R]) -> None:
        self.recognize()
        self.records += records

    def read(self, raw: bytes) -> list[R]:
        text = raw.removeprefix(fileio.UTF8_BOM)
        if fileio.first_byte(text) < 0:
            if self.empty_is_a_problem:  # said, not read as a quiet day: its usage would turn "unused"
                raise ValueError("an empty file (an export that failed or was cut off?)")
            return []
        if fileio.is_complete(text) or not self.lines(text):
            self.value(text, "", 0)
        if not self.recognized:
            where, exc = self.pending[0] if self.pending else ("", ValueError(self.none_found))
            raise ValueError(f"not a {self.kind} ({f'{where}: {exc}' if where else exc})")
        return self.records

    def lines(self, text: bytes) -> bool:
        """Reads a text of several values (False if it is one value, maybe truncated or too deep)."""
        try:
            records = self.batch(fileio.joined_lines(text))
        except DECODE_ERRORS:
            records = None
        if records is not None:
            self.add(records)
            return True
        values = list(fileio.json_values(text))
        if len(values) == 1:
            return False
        for line, value, ended in values:
            if ended:
                self.value(value, f"line {line}", 0)
            else:
                self.truncated(bytes(value), f"line {line}", ValueError("the text ends inside this value"))
        return True

    def batch(self, text: bytes) -> list[R] | None:
        """The records of a text that is a JSON array of them, or None."""
        raise NotImplementedError

    def value(self, text: Any, where: str, depth: int) -> None:
        raise NotImplementedError

    def truncated(self, text: bytes, where: str, exc: Exception) -> None:
        raise NotImplementedError
