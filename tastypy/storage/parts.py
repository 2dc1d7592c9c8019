"""The files of a tracker split into parts: the top manifest, part directories, summaries.

A parted tracker is a directory holding ``manifest.json`` (format version 2,
``"layout": "parts"``), one subdirectory per part (``part-00000`` ...), each
an ordinary tracker store, and ``summaries/`` with one small JSON file per
part that says how many of its tasks are done, tried, aborted... as of a
given length of that part's journal. See ``docs/format.md``.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any, Final

import orjson

from tastypy.errors import CorruptFileError, FormatVersionError, InvalidArgumentError, StorageError
from tastypy.storage import commits, files, layout

#: The version a parted manifest has. Version 1 readers (tastypy before
#: parts) refuse it with "newer than the version this tastypy reads".
PARTS_VERSION: Final = 2
LAYOUT: Final = "parts"
#: How a key's part is found; written into the manifest so that a reader
#: that does not know the rule refuses instead of looking in the wrong part.
HASH_RULE: Final = "crc32(json(key)) * parts >> 32"
SUMMARIES: Final = "summaries"
#: A summary's ``tries`` maps numbers of tries (ints) to counts.
_SUMMARY_OPTIONS: Final = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
#: More parts than this would be more directories than any job benefits from.
MAX_PARTS: Final = 65_536


def key_hash(encoded_key: bytes) -> int:
    """The 32-bit hash of a key's canonical JSON bytes (stable across processes
    and Python versions, unlike ``hash()``)."""
    return zlib.crc32(encoded_key)


def part_of_hash(h: int, parts: int) -> int:
    """The part holding a key of hash ``h``: parts are equal ranges of hashes,
    so a range of consecutive parts is a range of hashes (see ``Slice``)."""
    return (h * parts) >> 32


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def part_path(directory: str, index: int) -> str:
    return os.path.join(directory, part_name(index))


def part_dir(directory: str, index: int) -> str:
    """:func:`part_path`, to be opened as a store: refused if it is a link (or
    anything but a directory), which would send the part's reads and writes
    to another tracker's files."""
    path = part_path(directory, index)
    try:
        files.check_directory(path)
    except FileNotFoundError:
        pass  # a part not written yet: the store makes it
    except OSError as exc:
        raise StorageError(f"cannot open the part {path}: {exc.strerror or exc}.") from exc
    return path


def _summary_path(directory: str, index: int) -> str:
    return os.path.join(directory, SUMMARIES, part_name(index) + ".json")


#: How many tasks a part holds when ``shards="auto"`` picks the count: a
#: part of 4,000 fresh tasks is ~250 KB and loads in ~4 ms.
TASKS_PER_PART: Final = 4000


def check_parts(shards: Any) -> int:
    """Refuse a ``shards=`` argument that is not a count of parts."""
    if type(shards) is not int or not 1 <= shards <= MAX_PARTS:
        raise InvalidArgumentError(
            f"shards must be an int from 1 to {MAX_PARTS} (how many parts the tracker's "
            f"tasks are split into, fixed when it is created) or 'auto' (fixed by the "
            f"first add_many), got {shards!r}."
        )
    return shards


def auto_parts(tasks: int) -> int:
    """The part count ``shards="auto"`` picks for a first batch of ``tasks`` tasks."""
    return min(MAX_PARTS, tasks // TASKS_PER_PART + 1)


def _raw_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, layout.MANIFEST)
    try:
        raw = files.read_regular(path)
    except (FileNotFoundError, NotADirectoryError, files.NotRegularFile):
        return None  # (a link, a FIFO...: the store refuses it, naming it)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # not ours to judge: the store reports a damaged manifest
    return manifest if isinstance(manifest, dict) else None


def holds_single_store(directory: str) -> bool:
    """Whether ``directory`` holds a store's manifest (a tracker or POD in one store)."""
    manifest = _raw_manifest(directory)
    return manifest is not None and manifest.get("layout") != LAYOUT


def is_parted(directory: str) -> bool:
    """Whether ``directory`` holds a parted tracker (cheap: one small read)."""
    manifest = _raw_manifest(directory)
    return manifest is not None and manifest.get("layout") == LAYOUT


def read_manifest(directory: str) -> dict | None:
    """The parted manifest of ``directory``, or None when it holds no parted tracker."""
    manifest = _raw_manifest(directory)
    if manifest is None or manifest.get("layout") != LAYOUT:
        return None
    path = os.path.join(directory, layout.MANIFEST)
    version = manifest.get("version")
    if type(version) is int and version > PARTS_VERSION:
        raise FormatVersionError(
            f"{path} has format version {version}, newer than the version {PARTS_VERSION} "
            "this tastypy reads. Upgrade tastypy (pip install -U tastypy) to open it."
        )
    parts = manifest.get("parts")
    if (
        manifest.get("format") != layout.FORMAT_NAME
        or version != PARTS_VERSION
        or type(parts) is not int
        or not 1 <= parts <= MAX_PARTS
        or manifest.get("hash") != HASH_RULE
    ):
        raise CorruptFileError(
            f"{path} says the tracker is split into parts but its fields are not ones "
            f"tastypy writes (version {version!r}, parts {parts!r}, hash "
            f"{manifest.get('hash')!r}). Restore it from a backup: it must name the "
            "number of part-NNNNN directories beside it.",
            path,
        )
    return manifest


def create(directory: str, parts: int, kind: str) -> dict:
    """Create the parted manifest, or return the one another process made first.

    The manifest is linked into place, which fails if the name exists: of
    several workers creating one tracker at once, one wins and the others
    read what it wrote (and check that they asked for the same count).
    """
    layout.check_directory(directory)
    if _raw_manifest(directory) is not None and not is_parted(directory):
        raise layout_taken(directory)
    if os.path.isdir(directory):
        layout.classify_foreign(directory)
    layout.make_dirs(directory)
    link_manifest(directory, parts, kind)
    # Made after the manifest: a directory holding only it would look foreign.
    layout.make_dirs(os.path.join(directory, SUMMARIES))
    return _created(directory)


def link_manifest(directory: str, parts: int, kind: str) -> None:
    """Write the parted manifest under a temporary name and link it into
    place, unless a manifest is there already (another process's: it wins)."""
    manifest = {
        "format": layout.FORMAT_NAME,
        "version": PARTS_VERSION,
        "kind": kind,
        "layout": LAYOUT,
        "parts": parts,
        "hash": HASH_RULE,
    }
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    final = os.path.join(directory, layout.MANIFEST)
    # Named as layout's temporary files are, so that another worker creating
    # the tracker at this moment takes the directory for a new one.
    tmp = os.path.join(directory, f"{layout.MANIFEST}.{os.getpid()}.tmp")
    try:
        os.unlink(tmp)  # left by a dead process of the same pid
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, final)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    layout.fsync_dir(directory)


#: How long a process that lost the race to create a tracker waits to read
#: the winner's manifest: a client of a caching mount (GlusterFS, FUSE) may
#: answer "no such file" or an empty file for a while after another client
#: linked it in (seen on the GlusterFS rig).
_VISIBLE_WITHIN: Final = 10.0


def _created(directory: str) -> dict:
    """The manifest just created, by this process or the one that won."""
    deadline = time.monotonic() + _VISIBLE_WITHIN
    while True:
        raw = _raw_manifest(directory)
        if raw is not None:
            found = read_manifest(directory)
            if found is None:
                raise layout_taken(directory)  # a tracker in one store was made there first
            return found
        if time.monotonic() > deadline:
            raise StorageError(
                f"{os.path.join(directory, layout.MANIFEST)} exists (another process created "
                f"it) but could not be read as JSON for {_VISIBLE_WITHIN:.0f} s. Check it, "
                f"or run `tastypy check {directory}`."
            )
        time.sleep(0.05)


def layout_taken(directory: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{directory} already holds a tracker in one store, so it cannot be split into parts "
        "by opening it with shards=. Open it without shards=, or copy its tasks into a new "
        "parted tracker with tastypy.parts.split(old, new, shards)."
    )


def exists(part_dir: str) -> bool:
    """Whether a part was ever written (opened for writing by someone)."""
    return os.path.exists(os.path.join(part_dir, layout.MANIFEST))


def journal_state(part_dir: str) -> list | None:
    """Where a part's data ends now: ``[journal name, size]`` (None: no part yet).

    A summary written at one state is exact while the state is unchanged;
    every change appends to the journal or replaces it (compaction).
    """
    try:
        files.check_directory(part_dir)
        manifest = layout.read_manifest(part_dir)
    except (NotADirectoryError, FileNotFoundError):
        return None
    except files.NotRegularFile:
        # A link (or a file) in the part's place: no summary matches this,
        # so the part is opened, which refuses it, naming it.
        return ["(not a directory)", -1]
    if manifest is None:
        return None
    log = os.path.join(part_dir, manifest["journal"])
    if layout.is_shared(manifest):
        # One file per commit: how many there are (a directory's size does
        # not change with every file added).
        return [manifest["journal"], commits.count(log, bool(manifest.get("gzipped")))]
    try:
        size = os.stat(log).st_size
    except FileNotFoundError:
        size = 0
    return [manifest["journal"], size]


def read_summary(directory: str, index: int) -> dict | None:
    """The last summary written for a part, or None if none is (readably) there."""
    try:
        summary = orjson.loads(files.read_regular(_summary_path(directory, index)))
    except (OSError, orjson.JSONDecodeError):
        return None  # a FIFO, a link... in its place too: counted afresh
    if not isinstance(summary, dict) or not isinstance(summary.get("stats"), dict):
        return None
    return summary


def write_summary(directory: str, index: int, summary: dict) -> None:
    """Replace a part's summary (temporary file and rename, without fsync:
    a summary lost in a power cut is only stale, and is written again by the
    next process that changes the part, or counted afresh)."""
    path = _summary_path(directory, index)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        try:
            os.unlink(tmp)  # left by a dead process of the same pid, or planted
        except FileNotFoundError:
            pass
        # Created afresh (O_EXCL): never written through a link planted in
        # its place, nor into a summaries directory that is a link.
        files.check_directory(os.path.dirname(path))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, orjson.dumps(summary, option=_SUMMARY_OPTIONS))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except FileNotFoundError:
        layout.make_dirs(os.path.dirname(path))
        write_summary(directory, index, summary)
    except OSError as exc:
        raise StorageError(f"cannot write the part summary {path}: {exc.strerror or exc}") from exc


def drop_summary(directory: str, index: int) -> None:
    """Remove a part's summary (its counts are then taken afresh when asked for)."""
    try:
        os.unlink(_summary_path(directory, index))
    except FileNotFoundError:
        pass
