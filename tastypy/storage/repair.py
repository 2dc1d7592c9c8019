"""Check, repair and compact a POD directory: ``tastypy check|repair|compact PATH``.

:func:`check` reads every file of a POD and reports each problem with its
file and line, changing nothing. :func:`repair` salvages every readable
record into a new, consistent generation, moves every file it replaces into
a ``repair-<time>`` subdirectory (it never deletes anything), and reports
what could not be saved. :func:`compact` folds the journal into a snapshot.

Example::

    >>> import tastypy
    >>> pod = tastypy.POD(tmp_path / "jobs.pod")
    >>> pod["a"] = 1
    >>> pod.close()
    >>> report = tastypy.check(tmp_path / "jobs.pod")
    >>> report.ok, report.keys
    (True, 1)
"""

from __future__ import annotations

import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import orjson

from tastypy._args import check_path
from tastypy.codec import DUMP_OPTIONS, dumps, key_from_json
from tastypy.errors import (
    FormatVersionError,
    InvalidArgumentError,
    LegacyFormatError,
    NotAPODError,
    StorageError,
    TastypyError,
)
from tastypy.storage import commits, files, journal, layout, parts, taskfiles
from tastypy.storage.locks import DirectoryLock
from tastypy.storage.scan import Problem, Scan, scan_file

if TYPE_CHECKING:
    from tastypy.storage.repair_parts import PartsRepairReport

__all__ = ["CheckReport", "CompactReport", "Problem", "RepairReport", "check", "compact", "repair"]

_GENERATION: Final = re.compile(r"^(snapshot|journal|commits)-(\d+)(\.jsonl(?:\.gz)?)?$")


def _generation_match(name: str) -> re.Match | None:
    """A snapshot or journal file name, or a commits directory name, of ours."""
    m = _GENERATION.match(name)
    if m is None or (m.group(1) == "commits") == (m.group(3) is not None):
        return None
    return m


_ASIDE_PREFIX: Final = "repair-"
_LEGACY_SHARD: Final = re.compile(r"^\d+\.json(\.gz)?$")


@dataclass
class CheckReport:
    """What :func:`check` found. ``ok`` is true when there is no problem;
    ``notes`` are harmless findings (an unfinished batch the next sync cuts
    off, stray files that are ignored)."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    keys: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"{self.path}: {self.keys} keys in {self.records} records"]
        lines += [f"problem: {p}" for p in self.problems]
        lines += [f"note: {n}" for n in self.notes]
        if self.problems:
            lines.append(
                f"{len(self.problems)} problem(s). `tastypy repair {self.path}` salvages every "
                "readable record and keeps the damaged files aside."
            )
        else:
            lines.append("OK")
        return "\n".join(lines)


@dataclass
class RepairReport:
    """What :func:`repair` did. ``lost`` lists what could not be salvaged;
    ``aside`` is the subdirectory holding every file the repair replaced."""

    path: str
    repaired: bool
    keys: int = 0
    lost: list[Problem] = field(default_factory=list)
    aside: str | None = None
    moved: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.repaired:
            return f"{self.path}: nothing to repair ({self.keys} keys)."
        lines = [f"{self.path}: repaired; {self.keys} keys salvaged."]
        lines += [f"lost: {p}" for p in self.lost]
        if not self.lost:
            lines.append("Nothing was lost.")
        lines += [f"note: {n}" for n in self.notes]
        if self.moved:
            lines.append(f"Kept aside in {self.aside}: {', '.join(self.moved)}")
        return "\n".join(lines)


@dataclass
class CompactReport:
    """What :func:`compact` did."""

    path: str
    keys: int
    bytes_before: int
    bytes_after: int

    def __str__(self) -> str:
        return (
            f"{self.path}: compacted {self.keys} keys, "
            f"{self.bytes_before} bytes -> {self.bytes_after} bytes."
        )


# -- which files hold the POD ------------------------------------------------------


def _generations(names: list[str]) -> dict[int, dict[str, str]]:
    gens: dict[int, dict[str, str]] = {}
    for name in names:
        m = _generation_match(name)
        if m:
            # A commits directory is the log of its generation, as a journal is.
            kind = "journal" if m.group(1) == "commits" else m.group(1)
            gens.setdefault(int(m.group(2)), {})[kind] = name
    return gens


def _choose_without_manifest(
    directory: str, names: list[str]
) -> tuple[int, str | None, str | None]:
    """Guess the live generation when the manifest is lost.

    The newest generation with a journal is live. A newer snapshot without a
    journal is live too, unless the journal before it was written after it:
    then it comes from a compaction that never finished.
    """
    gens = _generations(names)
    if not gens:
        return -1, None, None
    top = max(gens)
    files = gens[top]
    if "journal" in files or top == 0:
        return top, files.get("snapshot"), files.get("journal")
    below = gens.get(top - 1, {})
    if "journal" in below:

        def mtime(name: str) -> float:
            return os.lstat(os.path.join(directory, name)).st_mtime

        if mtime(below["journal"]) > mtime(files["snapshot"]):
            return top - 1, below.get("snapshot"), below["journal"]
    return top, files.get("snapshot"), None


@dataclass
class _State:
    """Everything read from one POD directory."""

    report: CheckReport
    manifest: dict | None = None
    manifest_error: TastypyError | None = None
    generation: int = -1
    snapshot: str | None = None
    journal: str | None = None
    gzipped: bool = False
    scans: list[Scan] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    names: list[str] = field(default_factory=list)


def _read(directory: str) -> _State:
    """Read every file of the POD in ``directory``, keeping every problem."""
    state = _State(CheckReport(directory))
    state.names = sorted(os.listdir(directory))
    _choose_files(directory, state)
    if state.snapshot is not None:
        _scan_snapshot(directory, state)
    if state.journal is not None and layout.is_commits_dir(state.journal):
        _scan_commits(os.path.join(directory, state.journal), state)
    elif state.journal is not None:
        _scan_journal(directory, state)
    _replay(state)
    _note_other_files(directory, state)
    return state


def _choose_files(directory: str, state: _State) -> None:
    """Take the live generation's files from the manifest, or guess them
    when the manifest is lost or unreadable."""
    manifest_path = os.path.join(directory, layout.MANIFEST)
    try:
        state.manifest = layout.read_manifest(directory)
    except TastypyError as exc:
        state.manifest_error = exc
        state.report.problems.append(Problem(manifest_path, None, str(exc)))
    manifest = state.manifest
    if manifest is not None:
        state.generation = manifest["generation"]
        state.snapshot = manifest.get("snapshot")
        state.journal = manifest["journal"]
        state.gzipped = bool(manifest.get("gzipped", False))
        return
    state.generation, state.snapshot, state.journal = _choose_without_manifest(
        directory, state.names
    )
    state.gzipped = any(n.endswith(".gz") for n in (state.snapshot, state.journal) if n is not None)
    if state.manifest_error is None:
        state.report.problems.append(_no_manifest(directory, state))


def _no_manifest(directory: str, state: _State) -> Problem:
    """The problem of a directory without a manifest: what it holds instead."""
    if state.generation >= 0:
        return Problem(
            os.path.join(directory, layout.MANIFEST),
            None,
            "is missing, but the directory holds tastypy data files",
        )
    if any(_LEGACY_SHARD.match(n) for n in state.names):
        return Problem(
            directory,
            None,
            "holds a POD written by the original tastypy 0.0.3; convert it with "
            "`tastypy import-legacy OLD NEW`",
        )
    return Problem(directory, None, "is not a tastypy POD (it has no manifest.json)")


def _scan_snapshot(directory: str, state: _State) -> None:
    """Scan the live snapshot, and check it holds as many records as the manifest says."""
    path = os.path.join(directory, str(state.snapshot))
    scan = scan_file(path, state.gzipped, snapshot=True)
    state.scans.append(scan)
    if scan.missing:
        state.report.problems.append(Problem(path, None, "is listed in the manifest but missing"))
    expected = (state.manifest or {}).get("snapshot_records")
    if (
        not scan.missing
        and not scan.problems
        and isinstance(expected, int)
        and len(scan.records) != expected
    ):
        state.report.problems.append(
            Problem(
                path,
                None,
                f"holds {len(scan.records)} records but the manifest says {expected}",
            )
        )


def _scan_journal(directory: str, state: _State) -> None:
    """Scan the live journal file, noting an unfinished batch at its end."""
    path = os.path.join(directory, str(state.journal))
    scan = scan_file(path, state.gzipped, snapshot=False)
    state.scans.append(scan)
    if scan.torn_records or scan.torn_bytes:
        state.report.notes.append(
            f"{path} ends with an unfinished batch ({scan.torn_records} records, "
            f"{scan.torn_bytes} bytes): a sync that never completed. Readers ignore it and "
            "the next sync cuts it off."
        )


def _replay(state: _State) -> None:
    """Apply the records of every scan in order, and report what each scan found."""
    report = state.report
    for scan in state.scans:
        if scan.unterminated:
            report.notes.append(
                f"{scan.path} ends without a newline after its last commit line (saved by an "
                "editor?); its last batch is whole, and is read (a sync adds the newline)."
            )
        report.problems.extend(scan.problems)
        report.records += len(scan.records)
        for rec in scan.records:
            key = key_from_json(rec[0])
            if len(rec) == 2:
                state.data[key] = rec[1]
            else:
                state.data.pop(key, None)
    report.keys = len(state.data)


def _note_other_files(directory: str, state: _State) -> None:
    """Note each file beside the live ones, and why it is ignored."""
    live = {layout.MANIFEST, layout.LOCK_FILE, layout.SETTINGS, state.snapshot, state.journal}
    # The tasks' own files (tracker.storage, captured logs): not the store's.
    live.add(taskfiles.TASKS_DIR)
    for name in state.names:
        if name in live or name.startswith(layout.LOCK_FILE):
            continue
        m = _generation_match(name)
        full = os.path.join(directory, name)
        if m and int(m.group(2)) < state.generation:
            why = "a file of an older generation; the next compaction deletes it"
        elif m:
            why = "written by a compaction that did not finish; ignored"
        elif layout.is_own_file(name):
            why = "a temporary file left by an interrupted write; ignored"
        elif name.startswith(_ASIDE_PREFIX) and os.path.isdir(full):
            why = "files kept aside by an earlier `tastypy repair`"
        else:
            why = "not a tastypy file; ignored"
        state.report.notes.append(f"{full}: {why}.")


def _scan_commits(log: str, state: _State) -> None:
    """Scan the commits of a shared store's log, in order, up to the first
    number missing or the seal that ends the log."""
    try:
        files.check_directory(log)
    except FileNotFoundError:
        return  # no commit yet
    except OSError as exc:
        state.report.problems.append(Problem(log, None, f"cannot be read: {exc.strerror or exc}"))
        return
    number = 0
    while True:
        path = os.path.join(log, commits.commit_name(number, state.gzipped))
        try:
            head = files.read_regular(path, 0, 64)
        except FileNotFoundError:
            break
        except OSError:
            head = b""
        text = journal.gunzip_members(head)[0] if state.gzipped and head else head
        if text.startswith(commits.SEAL_PREFIX):
            state.report.notes.append(
                f"{path} seals this log: a compaction moved the POD on to a newer generation, "
                "but the manifest was not updated; the next compaction or repair updates it."
            )
            break
        scan = scan_file(path, state.gzipped, snapshot=False)
        if scan.torn_records or scan.torn_bytes or not (scan.records or scan.problems):
            # Written whole before it was named: anything short of one
            # whole batch is damage, not a write cut short.
            scan.problems.append(
                Problem(path, None, "is not one whole batch (its commit line is missing)")
            )
        state.scans.append(scan)
        number += 1
    try:
        names = os.listdir(log)
    except OSError:
        names = []
    for name in sorted(names):
        n = commits.number_of(name)
        if n is not None and n > number:
            state.report.notes.append(
                f"{os.path.join(log, name)}: a commit after the gap at number {number}; "
                "readers stop at the gap, so it is ignored."
            )


def _lock(directory: str, mode: str, create: bool) -> DirectoryLock | None:
    path = os.path.join(directory, layout.LOCK_FILE)
    if not create and not os.path.exists(path):
        return None
    try:
        return DirectoryLock(path, mode)
    except StorageError:
        if create:
            raise
        return None


def _directory(path: str | os.PathLike[str]) -> str:
    directory = os.path.abspath(check_path(path))
    if not os.path.isdir(directory):
        what = "does not exist" if not os.path.exists(directory) else "is a file"
        raise NotAPODError(f"{directory} {what}; a POD is a directory. Check the path.")
    return directory


# -- the public functions ----------------------------------------------------------


def check(path: str | os.PathLike[str], *, lock: str = "auto") -> CheckReport:
    """Read every file of the POD at ``path`` and report what is wrong (of a
    tracker split into parts: of each part, summed into one report).

    Nothing on disk is changed. The report's ``problems`` name the file and
    line of each; ``ok`` is true when there are none. The files are read
    under ``lock``, the lock mode the POD's writers use (``auto``: the one
    they pick there), so a write is never read half done.
    """
    try:
        directory = _directory(path)
    except NotAPODError as exc:
        report = CheckReport(os.path.abspath(os.fspath(path)))
        report.problems.append(Problem(report.path, None, str(exc)))
        return report
    from tastypy.storage import repair_parts  # it calls back in here for each part

    if parts.is_parted(directory):
        return repair_parts.check(directory, lock)
    if repair_parts.lost_manifest(directory):
        report = CheckReport(directory)
        report.problems.append(
            Problem(
                os.path.join(directory, layout.MANIFEST),
                None,
                "missing, beside the part-NNNNN directories of a tracker split into parts. "
                f"Run `tastypy repair {directory}` to write it again (the part count is read "
                "from the keys the parts hold).",
            )
        )
        return report
    held = _lock(directory, lock, create=False)
    try:
        if held is None:
            return _read(directory).report
        with held.held():
            return _read(directory).report
    finally:
        if held is not None:
            held.close()


def repair(
    path: str | os.PathLike[str], *, kind: str | None = None, lock: str = "auto"
) -> RepairReport | PartsRepairReport:
    """Salvage every readable record of the POD at ``path`` into a consistent POD
    (of a tracker split into parts: of each part, in one report).

    Every file the repair replaces is moved into a ``repair-<time>``
    subdirectory of ``path``; nothing is deleted. ``kind`` ("pod" or
    "tracker") is needed only when the manifest is lost and the records do
    not tell. The report lists what could not be salvaged.
    """
    directory = _directory(path)
    from tastypy.storage import repair_parts

    if parts.is_parted(directory) or repair_parts.lost_manifest(directory):
        return repair_parts.repair(directory, lock)
    dlock = _lock(directory, lock, create=True)
    assert dlock is not None
    try:
        with dlock.held():
            return _repair(directory, kind)
    finally:
        dlock.close()


def _repair(directory: str, kind: str | None) -> RepairReport:
    """Salvage what :func:`_read` finds into a new generation, unless nothing is wrong."""
    state = _read(directory)
    report = state.report
    _refuse_unrepairable(directory, state)
    if report.ok:
        return RepairReport(directory, False, report.keys, notes=report.notes)
    manifest = state.manifest
    if manifest is not None:
        kind = manifest["kind"]
    elif kind is None:
        kind = _guess_kind(state.data)
    lost = [*report.problems, *_unmerged(directory, state)]
    generations = [int(m.group(2)) for m in map(_generation_match, state.names) if m]
    generation = max([*generations, state.generation]) + 1
    count = len(state.data)
    shared = state.journal is not None and layout.is_commits_dir(state.journal)
    new = layout.new_manifest(kind, generation, state.gzipped, count, shared)
    aside = _aside_directory(directory)
    moved = _replace_generation(directory, state, new, aside)
    return RepairReport(directory, True, count, lost, aside, moved, report.notes)


def _refuse_unrepairable(directory: str, state: _State) -> None:
    """Raise when there is nothing to repair: a newer format, or no tastypy files."""
    if isinstance(state.manifest_error, FormatVersionError):
        raise state.manifest_error
    if state.manifest is None and state.generation < 0:
        if any(_LEGACY_SHARD.match(n) for n in state.names):
            raise LegacyFormatError(
                f"{directory} holds a POD written by the original tastypy 0.0.3. Convert it "
                "with `tastypy import-legacy OLD NEW` instead."
            )
        raise NotAPODError(
            f"{directory} holds no tastypy files (no manifest, snapshot or journal); "
            "there is nothing to repair."
        )


def _unmerged(directory: str, state: _State) -> list[Problem]:
    """The files of a newer generation than the live one, left out of the repair."""
    used = {state.snapshot, state.journal} - {None}
    lost = []
    for name in state.names:
        m = _generation_match(name)
        if m and name not in used and int(m.group(2)) > state.generation:
            lost.append(
                Problem(
                    os.path.join(directory, name),
                    None,
                    "not merged: it comes from a compaction that did not finish, and the "
                    "journal was written after it",
                )
            )
    return lost


def _replace_generation(directory: str, state: _State, new: dict, aside: str) -> list[str]:
    """Write the salvaged records as the generation ``new`` describes and
    move every file it replaces into ``aside``; return the names moved."""
    moved: list[str] = []
    manifest_path = os.path.join(directory, layout.MANIFEST)
    live_journal = None
    sealed = None
    switched = False
    try:
        if os.path.lexists(manifest_path):
            moved.append(_manifest_aside(manifest_path, aside))
        _write_snapshot(directory, state, new)
        if layout.is_shared(new):
            _seal_commits(directory, state, new)
        elif state.journal is not None and _is_regular(os.path.join(directory, state.journal)):
            # A process that keeps the live journal open must look again
            # before it appends: it is copied aside as it is, then sealed
            # (journal.seal) before the manifest moves on. Only a regular
            # file is copied (read without following a link); anything else
            # in its place is moved aside below, unread.
            live_journal = state.journal
            raw = files.read_regular(os.path.join(directory, live_journal))
            layout.write_atomic(os.path.join(aside, live_journal), raw)
            sealed = journal.seal(os.path.join(directory, live_journal), state.gzipped)
        layout.write_manifest(directory, new)
        switched = True
        moved += _move_replaced(directory, state.names, new, live_journal, aside)
        layout.fsync_dir(aside)
        layout.fsync_dir(directory)
    except OSError as exc:
        if live_journal is not None and not switched:
            journal.unseal(os.path.join(directory, live_journal), sealed)
        raise StorageError(
            f"cannot repair {directory}: {exc.strerror or exc} ({getattr(exc, 'filename', '')}). "
            f"Nothing was deleted; files moved so far are in {aside}."
        ) from exc
    return moved


def _write_snapshot(directory: str, state: _State, new: dict) -> None:
    """Write the salvaged records as the snapshot ``new`` names (none when there are none)."""
    body = bytearray()
    for item in state.data.items():
        body += dumps(item, option=DUMP_OPTIONS | orjson.OPT_APPEND_NEWLINE)
    count = len(state.data)
    if count:
        layout.write_atomic(
            os.path.join(directory, new["snapshot"]),
            journal.frame(body, count, state.gzipped),
        )


def _move_replaced(
    directory: str, names: list[str], new: dict, live_journal: str | None, aside: str
) -> list[str]:
    """Move every file of ours but the new snapshot into ``aside`` (the live
    journal, already copied there, is unlinked); return the names moved."""
    moved = []
    for name in names:
        if layout.is_own_file(name) and name != new["snapshot"]:
            if name == live_journal:
                os.unlink(os.path.join(directory, name))
            else:
                os.replace(os.path.join(directory, name), os.path.join(aside, name))
            moved.append(name)
    return moved


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _manifest_aside(path: str, aside: str) -> str:
    """Keep the old manifest in ``aside``: a copy of a regular file (the new
    one is written over it next), or, for anything else in its place (a
    link, a FIFO...), the name itself, moved without being read."""
    target = os.path.join(aside, layout.MANIFEST)
    if _is_regular(path):
        try:
            layout.write_atomic(target, files.read_regular(path))
            return layout.MANIFEST + " (a copy)"
        except files.NotRegularFile:
            pass  # swapped for something else meanwhile: moved below
    os.replace(path, target)
    return layout.MANIFEST


def _seal_commits(directory: str, state: _State, new: dict) -> None:
    """End the live log of a shared store with a seal naming the repaired
    generation, so that a reader with an old copy of the manifest moves on."""
    log = os.path.join(directory, str(state.journal))
    try:
        if not stat.S_ISDIR(os.lstat(log).st_mode):
            return  # not a log of ours (a link...): moved aside unread, with the other files
    except FileNotFoundError:
        pass  # no commit yet: the seal is the first
    number = commits.count(log, state.gzipped)
    sealed = commits.Sealed(new["generation"], new["snapshot"], new["snapshot_records"])
    line = commits.seal_line(sealed)
    data = journal.gzip_member(line) if state.gzipped else line
    commits.write(log, number, data, state.gzipped, True, lambda point: None)


def _guess_kind(data: dict) -> str:
    values = list(data.values())
    if values and all(type(v) is dict and "_done" in v and "_tries" in v for v in values):
        return "tracker"
    return "pod"


def _aside_directory(directory: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        name = f"{_ASIDE_PREFIX}{stamp}" + (f"-{n}" if n else "")
        path = os.path.join(directory, name)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise StorageError(f"cannot create a {_ASIDE_PREFIX}* directory in {directory}")


def compact(
    path: str | os.PathLike[str], *, lock: str = "auto", storage: str | None = None
) -> CompactReport:
    """Fold the journal of the POD at ``path`` into a new snapshot now (of a
    tracker split into parts: of each part in turn).

    Other processes may keep the POD open: they reload it at their next sync.
    ``storage="shared"`` converts a POD of the local store (one journal) to
    the shared store (one file per commit), for a filesystem whose clients
    cache file sizes; run it while no job uses the POD.
    """
    if storage not in (None, "shared"):
        raise InvalidArgumentError(
            f"storage must be 'shared' (to convert a POD to the shared store) or left out, "
            f"got {storage!r}."
        )
    from tastypy.storage import Store

    directory = _directory(path)
    if parts.is_parted(directory):
        from tastypy.storage import repair_parts

        return repair_parts.compact(directory, lock, storage)
    manifest = layout.read_manifest(directory)
    if manifest is None:
        layout.classify_foreign(directory)
        manifest = layout.read_manifest(directory)
    if manifest is None:
        raise NotAPODError(f"{directory} is not a tastypy POD (it has no manifest.json).")
    store = Store(
        directory,
        kind=manifest["kind"],
        gzipped=bool(manifest.get("gzipped")),
        lock=lock,
        convert=storage == "shared",
    )
    try:
        with store.locked():
            before = _data_bytes(directory)
            data = store.load()
            store.compact(shared=True if storage == "shared" else None)
            after = _data_bytes(directory)
    finally:
        store._lock.close()
    return CompactReport(directory, len(data), before, after)


def _data_bytes(directory: str) -> int:
    total = 0
    for name in os.listdir(directory):
        if layout.is_commits_dir(name):
            log = os.path.join(directory, name)
            total += sum(
                os.lstat(os.path.join(log, n)).st_size
                for n in os.listdir(log)
                if commits.number_of(n) is not None
            )
        elif layout.is_data_file(name):
            total += os.lstat(os.path.join(directory, name)).st_size
    return total
