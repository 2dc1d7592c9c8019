"""Reading a snapshot or journal file line by line, keeping every problem.

:func:`scan_file` is how ``tastypy check`` and ``tastypy repair`` read a
file: every readable record is kept, and each damaged line becomes a
:class:`Problem` naming the file and the line, where loading the POD would
stop at the first.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from tastypy.codec import suspect_lines, unwritable
from tastypy.storage import files, journal

__all__ = ["Problem", "Scan", "scan_file"]


@dataclass(frozen=True)
class Problem:
    """Something wrong in one file, at one line when it has one."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}, line {self.line}"
        return f"{where}: {self.message}"


@dataclass
class Scan:
    """What :func:`scan_file` read of one file: its records and its problems."""

    path: str
    records: list = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    torn_records: int = 0
    torn_bytes: int = 0
    missing: bool = False
    unterminated: bool = False


def _valid_key(obj: Any) -> bool:
    t = type(obj)
    if t is str or t is int:
        return True
    return t is list and all(_valid_key(part) for part in obj)


def _classify(line: bytes) -> tuple[str, Any]:
    """``("record", rec)``, ``("commit", n)`` or ``("bad", message)``."""
    try:
        item = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return "bad", (
                f"is not valid UTF-8 (byte {line[bad.start]:#04x} at column {bad.start + 1})"
            )
        return "bad", f"is not valid JSON ({exc.msg}, at column {exc.colno})"
    if type(item) is list:
        if len(item) not in (1, 2):
            return "bad", (
                f"is a record of {len(item)} elements; a record is [key, value] or [key]"
            )
        if not _valid_key(item[0]):
            return "bad", (
                f"has the key {item[0]!r}, which is not a str, an int or a list of those"
            )
        return "record", item
    if type(item) is dict and list(item) == ["sync"] and type(item["sync"]) is int:
        return "commit", item["sync"]
    return (
        "bad",
        f'is not a record: expected [key, value], [key] or {{"sync": N}}, got {line[:60]!r}',
    )


_GZIP_MAGIC: Final = journal.GZIP_MAGIC


def _decompress(raw: bytes, scan: Scan, snapshot: bool) -> bytes:
    """The text of every whole gzip member (one per batch). Past a damaged
    member, reading resumes at the next member header."""
    out = []
    view = memoryview(raw)
    pos = 0
    bad = -1  # where unreadable bytes began, while skipping them

    def unreadable(end: int) -> None:
        scan.problems.append(
            Problem(
                scan.path,
                None,
                f"compressed data damaged: bytes {bad} to {end} (of {len(raw)}) are unreadable",
            )
        )

    while pos < len(raw):
        d = zlib.decompressobj(31)
        try:
            text = d.decompress(view[pos:])
        except zlib.error:
            text = None
        if text is not None and d.eof:
            if bad >= 0:
                unreadable(pos)
                bad = -1
            out.append(journal.member_text(text))
            pos = len(raw) - len(d.unused_data)
            continue
        if text is not None and bad < 0:
            # A member cut short by the end of the file: a torn batch.
            if snapshot:
                bad = pos
                break
            scan.torn_bytes = len(raw) - pos
            break
        if bad < 0:
            if not snapshot and raw.find(_GZIP_MAGIC, pos + 1) < 0 and b"\0" * 16 in raw[pos:]:
                # Zero-filled blocks after a power loss: a torn batch, as
                # the loader sees it.
                scan.torn_bytes = len(raw) - pos
                break
            bad = pos
        pos = raw.find(_GZIP_MAGIC, pos + 1)
        if pos < 0:
            break
    if bad >= 0:
        unreadable(len(raw))
    return b"".join(out)


def scan_file(path: str, gzipped: bool, snapshot: bool) -> Scan:
    """Read one snapshot or journal file, keeping every readable record."""
    scan = Scan(path)
    raw = _read_raw(scan)
    if raw is None:
        return scan
    text = _decompress(raw, scan, snapshot) if gzipped else raw
    if journal.unterminated(text):
        text += b"\n"  # a whole last batch saved without its final newline: kept
        scan.unterminated = True
    rest = _scan_batches(text, scan)
    if rest.records or rest.problems or rest.partial:
        _settle_rest(scan, rest, snapshot, None if gzipped else len(raw))
    return scan


def _read_raw(scan: Scan) -> bytes | None:
    """The bytes of the scanned file, or None when it is missing or cannot be read."""
    try:
        return files.read_regular(scan.path)
    except FileNotFoundError:
        scan.missing = True
    except OSError as exc:
        scan.problems.append(Problem(scan.path, None, f"cannot be read: {exc.strerror or exc}"))
    return None


@dataclass
class _Rest:
    """What follows the last commit line of a file."""

    records: list
    problems: list[Problem]
    nul_lines: int  # damaged lines holding a NUL byte, as a power loss leaves
    last: int  # the number of the last commit line
    end: int  # the offset just after it
    partial: bytes  # a last line without its newline


def _scan_batches(text: bytes, scan: Scan) -> _Rest:
    """Keep the records and problems of every batch its commit line ends;
    return what follows the last commit line."""
    suspects = {start for start, _ in suspect_lines(text)}
    lines = text.split(b"\n")
    partial = lines.pop()
    pending: list = []
    pending_bad: list[Problem] = []
    nul_lines = 0
    last = 0
    end = 0
    pos = 0
    for number, line in enumerate(lines, 1):
        why = unwritable(line) if pos in suspects else None
        kind, value = ("bad", why) if why is not None else _classify(line)
        pos += len(line) + 1
        if kind == "record":
            pending.append(value)
        elif kind == "commit":
            if value != len(pending) and not pending_bad:
                scan.problems.append(
                    Problem(
                        scan.path,
                        number,
                        f"the commit line counts {value} records but its batch has "
                        f"{len(pending)}: lines were lost or duplicated",
                    )
                )
            scan.problems.extend(pending_bad)
            scan.records.extend(pending)
            pending, pending_bad, nul_lines = [], [], 0
            last, end = number, pos
        else:
            if b"\0" in line:
                nul_lines += 1
            pending_bad.append(Problem(scan.path, number, value))
    return _Rest(pending, pending_bad, nul_lines, last, end, partial)


def _settle_rest(scan: Scan, rest: _Rest, snapshot: bool, size: int | None) -> None:
    """Keep or drop what follows the last commit line: a snapshot cut short,
    damage, or a torn batch (``size``: of the file, when not gzipped)."""
    if snapshot:
        scan.problems.extend(rest.problems)
        scan.problems.append(
            Problem(
                scan.path,
                rest.last + 1,
                "the snapshot ends without its commit line: it was cut short "
                f"({len(rest.records)} readable records after line {rest.last})",
            )
        )
        scan.records.extend(rest.records)
    elif len(rest.problems) > rest.nul_lines:
        # Not a write cut short (whole lines are valid there): damage, such
        # as a garbled commit line. Keep what is readable.
        scan.problems.extend(rest.problems)
        scan.records.extend(rest.records)
    else:
        scan.torn_records = len(rest.records)
        if size is not None:
            scan.torn_bytes = size - rest.end
