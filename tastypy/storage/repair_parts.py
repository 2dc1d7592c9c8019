"""``tastypy check|repair|compact`` on a tracker split into parts.

Each part is an ordinary tracker store, so each tool runs on every part
that was ever written, in turn, and the reports are summed into one. What
belongs to the parted layout itself is looked at here: the top manifest,
part directories beyond the count it names, and summaries older than their
part's journal (harmless: counted again by ``stats(exact=True)``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Final

from tastypy.errors import NotAPODError, TastypyError
from tastypy.storage import parts as files
from tastypy.storage import repair as single
from tastypy.storage.repair import CheckReport, CompactReport, Problem, RepairReport

_PART_DIR: Final = re.compile(r"^part-(\d{5,})$")


def _manifest(directory: str) -> dict:
    manifest = files.read_manifest(directory)
    if manifest is None:  # pragma: no cover - callers look at the layout first
        raise NotAPODError(f"{directory} is not a tracker split into parts.")
    return manifest


def _written(directory: str, count: int) -> list[str]:
    """The directories of the parts ever written, in order."""
    paths = (files.part_path(directory, i) for i in range(count))
    return [p for p in paths if os.path.isdir(p)]


def _strays(directory: str, count: int) -> list[str]:
    """Part directories beyond the count the manifest names: no process reads them."""
    found = []
    for name in sorted(os.listdir(directory)):
        m = _PART_DIR.match(name)
        if m and int(m.group(1)) >= count:
            found.append(os.path.join(directory, name))
    return found


def check(directory: str, lock: str = "auto") -> CheckReport:
    """Check every part of the parted tracker at ``directory``; one report."""
    report = CheckReport(directory)
    try:
        count = _manifest(directory)["parts"]
    except TastypyError as exc:
        report.problems.append(Problem(os.path.join(directory, "manifest.json"), None, str(exc)))
        return report
    written = _written(directory, count)
    stale = 0
    for part in written:
        one = single.check(part, lock=lock)
        report.problems += one.problems
        report.notes += [f"{os.path.basename(part)}: {note}" for note in one.notes]
        report.keys += one.keys
        report.records += one.records
        summary = files.read_summary(directory, _index(part))
        stale += summary is None or summary.get("as_of") != files.journal_state(part)
    report.notes += [
        f"{stray} is beyond the {count} parts the manifest names: no process reads it"
        for stray in _strays(directory, count)
    ]
    report.notes.append(f"{count} parts, {len(written)} written")
    if stale:
        report.notes.append(
            f"{stale} part(s) changed since their summary (a writer was killed, or is at "
            f"work): `tastypy stats {directory} --exact` counts them again"
        )
    return report


def _index(part: str) -> int:
    m = _PART_DIR.match(os.path.basename(part))
    assert m is not None
    return int(m.group(1))


@dataclass
class PartsRepairReport:
    """What :func:`repair` did to each part of a parted tracker (``reports``,
    one :class:`~tastypy.storage.repair.RepairReport` per part written)."""

    path: str
    parts: int
    reports: list[RepairReport] = field(default_factory=list)
    #: Whether the top manifest was lost and written again.
    rebuilt: bool = False

    @property
    def repaired(self) -> bool:
        return self.rebuilt or any(r.repaired for r in self.reports)

    @property
    def keys(self) -> int:
        return sum(r.keys for r in self.reports)

    @property
    def lost(self) -> list[Problem]:
        return [p for r in self.reports for p in r.lost]

    def __str__(self) -> str:
        fixed = [r for r in self.reports if r.repaired]
        head = (
            [
                f"{self.path}: its manifest was missing; written again for {self.parts} parts, "
                "the count the parts' keys tell."
            ]  # fmt: skip
            if self.rebuilt
            else []
        )
        if not fixed:
            if head:
                return "\n".join(head + [f"{self.keys} keys in {self.parts} parts."])
            return f"{self.path}: nothing to repair ({self.keys} keys in {self.parts} parts)."
        names = ", ".join(os.path.basename(r.path) for r in fixed)
        lines = [f"{self.path}: repaired {len(fixed)} of {self.parts} parts ({names}); "
                 f"{self.keys} keys in all."]  # fmt: skip
        lines += [str(r) for r in fixed]
        return "\n".join(head + lines)


def lost_manifest(directory: str) -> bool:
    """Whether ``directory`` holds the parts of a tracker whose top manifest
    is gone (deleted by hand, or lost with a disk block)."""
    if os.path.lexists(os.path.join(directory, "manifest.json")):
        return False
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    return any(_PART_DIR.match(n) and files.exists(os.path.join(directory, n)) for n in names)


def _part_keys(part: str, most: int = 64) -> list:
    """Up to ``most`` keys a part holds, read without changing it."""
    from tastypy.storage.store import Store

    store = Store(part, kind="tracker")
    try:
        with store.locked():
            data = store.load()
    finally:
        store.close()
    return list(data)[:most]


def infer_parts(directory: str) -> int:
    """The part count of a parted tracker, from the keys its parts hold: each
    key lives in the part its hash names under the true count
    (``parts.part_of_hash``), and with a few keys in a few parts only one
    count puts every one of them where it is. Raises ``CorruptFileError``
    when the parts do not tell (too few keys, or keys in the wrong parts)."""
    import orjson

    from tastypy.errors import CorruptFileError

    written = [
        os.path.join(directory, n)
        for n in sorted(os.listdir(directory))
        if _PART_DIR.match(n) and files.exists(os.path.join(directory, n))
    ]
    samples = [
        (_index(part), files.key_hash(orjson.dumps(key)))
        for part in written
        for key in _part_keys(part)
    ]
    lowest = max(_index(part) for part in written) + 1
    fits = [
        count
        for count in range(lowest, files.MAX_PARTS + 1)
        if all(files.part_of_hash(h, count) == index for index, h in samples)
    ]
    path = os.path.join(directory, "manifest.json")
    if len(samples) < 8 or len(fits) != 1:
        raise CorruptFileError(
            f"{path} is missing and the parts do not tell how many there were "
            f"({len(samples)} keys read; {len(fits)} part counts fit them). Write it back "
            f'by hand: {{"format": "tastypy", "version": {files.PARTS_VERSION}, "kind": '
            f'"tracker", "layout": "parts", "parts": N, "hash": "{files.HASH_RULE}"}} with '
            "N the shards= the tracker was made with.",
            path,
        )
    return fits[0]


def repair(directory: str, lock: str) -> PartsRepairReport:
    """Repair every damaged part of the parted tracker at ``directory``; a
    lost top manifest is written again, with the part count the parts'
    keys tell (:func:`infer_parts`).

    A repaired part's summary is removed, so that its counts are taken
    afresh from what was salvaged the next time they are asked for.
    """
    rebuilt = None
    if lost_manifest(directory):
        rebuilt = infer_parts(directory)
        files.link_manifest(directory, rebuilt, "tracker")
        os.makedirs(os.path.join(directory, files.SUMMARIES), exist_ok=True)
    count = _manifest(directory)["parts"]
    report = PartsRepairReport(directory, count, rebuilt=rebuilt is not None)
    for part in _written(directory, count):
        one = single.repair(part, kind="tracker", lock=lock)
        report.reports.append(one)
        if one.repaired:
            files.drop_summary(directory, _index(part))
    return report


def compact(directory: str, lock: str, storage: str | None) -> CompactReport:
    """Compact every part of the parted tracker at ``directory`` in turn."""
    count = _manifest(directory)["parts"]
    total = CompactReport(directory, 0, 0, 0)
    for part in _written(directory, count):
        one = single.compact(part, lock=lock, storage=storage)
        total.keys += one.keys
        total.bytes_before += one.bytes_before
        total.bytes_after += one.bytes_after
    return total
