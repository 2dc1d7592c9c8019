"""The manifest, file names and format version of a POD directory."""

from __future__ import annotations

import errno
import os
import re
import time
from typing import Any, Callable, Final

import orjson

from tastypy._faults import no_fault
from tastypy.errors import (
    CorruptFileError,
    FormatVersionError,
    LegacyFormatError,
    NotAPODError,
    StorageError,
)
from tastypy.storage import files, fsdetect

FORMAT_NAME: Final = "tastypy"
#: The newest format version this tastypy reads. Version 1 keeps a
#: generation's log in one journal file; version 2 (the shared store) keeps it
#: as one file per commit in a directory. A POD is written in version 1
#: unless it uses the shared store, so that older tastypy keeps reading it.
FORMAT_VERSION: Final = 2
JOURNAL_VERSION: Final = 1
COMMITS_VERSION: Final = 2
MANIFEST: Final = "manifest.json"
LOCK_FILE: Final = "tastypy.lock"
#: A tracker's stored settings (``max_tries``, ``lease``): beside the
#: manifest, not in it, since a compaction writes the manifest afresh.
SETTINGS: Final = "tracker.json"
SETTINGS_FORMAT: Final = "tastypy-tracker-settings"
#: Seconds a read of a file replaced by rename is tried again while a
#: shared filesystem's client answers ESTALE for it.
_STALE_WAIT: Final = 10.0

_LEGACY_SHARD = re.compile(r"^\d+\.json(\.gz)?$")
_DATA_FILE = re.compile(r"^(?:(?:snapshot|journal)-\d{6,}\.jsonl(?:\.gz)?|commits-\d{6,})$")
_COMMITS_DIR = re.compile(r"^commits-\d{6,}$")
_TEMP_FILE = re.compile(
    r"^(?:(?:snapshot|journal)-\d{6,}\.jsonl(?:\.gz)?|manifest\.json|tracker\.json)\.\d+\.tmp$"
)


def is_data_file(name: str) -> bool:
    """Whether ``name`` is a snapshot or journal file name of ours."""
    return _DATA_FILE.match(name) is not None


def is_own_file(name: str) -> bool:
    """A data file, or a temporary file left by an interrupted atomic write."""
    return _DATA_FILE.match(name) is not None or _TEMP_FILE.match(name) is not None


def snapshot_name(generation: int, gzipped: bool) -> str:
    return f"snapshot-{generation:06d}.jsonl" + (".gz" if gzipped else "")


def journal_name(generation: int, gzipped: bool) -> str:
    return f"journal-{generation:06d}.jsonl" + (".gz" if gzipped else "")


def commits_name(generation: int) -> str:
    return f"commits-{generation:06d}"


def is_commits_dir(name: str) -> bool:
    """Whether ``name`` is the log directory of a generation of the shared store."""
    return _COMMITS_DIR.match(name) is not None


def generation_of(name: str) -> int | None:
    """The generation in one of our data file or log directory names."""
    match = re.search(r"-(\d{6,})", name)
    return int(match.group(1)) if match and is_own_file(name) else None


def make_dirs(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)``, for directories several hosts
    create at once: ``exist_ok`` checks that the path is a directory after
    the create failed, and a client of a caching filesystem (GlusterFS)
    may still answer "no such directory" for one another client just made."""
    try:
        os.makedirs(path)
    except FileExistsError:
        pass


def make_dir(path: str) -> None:
    """:func:`make_dirs` of one directory whose parent must exist: a lock's
    work directory inside a POD directory that was deleted or moved must
    not bring the POD directory back (empty) by creating it. One found
    there must be a directory, not a link that would have files made
    elsewhere (files.NotRegularFile, an ``OSError``)."""
    try:
        os.mkdir(path)
    except FileExistsError:
        files.check_directory(path)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str, data: bytes, hook: Callable[[str], None] = no_fault, label: str = "file"
) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename.

    ``hook`` is the store's fault hook, called as ``{label}-temp-written``,
    ``-temp-fsynced``, ``-renamed`` and ``-dir-fsynced``.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        # A temporary file left by a dead process of the same pid goes first;
        # O_EXCL then never writes through a link planted in its place.
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            hook(f"{label}-temp-written")
            os.fsync(fd)
        finally:
            os.close(fd)
        hook(f"{label}-temp-fsynced")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    hook(f"{label}-renamed")
    fsync_dir(os.path.dirname(path) or ".")
    hook(f"{label}-dir-fsynced")


def new_manifest(
    kind: str, generation: int, gzipped: bool, snapshot_records: int, shared: bool = False
) -> dict:
    """A manifest; ``shared``: the generation's log is a directory of commits
    (the shared store, format version 2) instead of one journal file."""
    manifest = {
        "format": FORMAT_NAME,
        "version": COMMITS_VERSION if shared else JOURNAL_VERSION,
        "kind": kind,
        "generation": generation,
        "gzipped": gzipped,
        "snapshot": snapshot_name(generation, gzipped) if snapshot_records else None,
        "snapshot_records": snapshot_records,
        "journal": commits_name(generation) if shared else journal_name(generation, gzipped),
    }
    if shared:
        manifest["log"] = "commits"
    return manifest


def is_shared(manifest: dict) -> bool:
    """Whether the manifest is of the shared store (one file per commit)."""
    return manifest.get("log") == "commits"


def write_manifest(directory: str, manifest: dict, hook: Callable[[str], None] = no_fault) -> None:
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    write_atomic(os.path.join(directory, MANIFEST), data, hook, "manifest")


def read_manifest(directory: str) -> dict[str, Any] | None:
    """Return the manifest, or None when the directory has none."""
    path = os.path.join(directory, MANIFEST)
    manifest = _load_manifest(path, directory)
    if manifest is None:
        return None
    version = _manifest_version(manifest, path, directory)
    _check_manifest_names(manifest, version, path, directory)
    return manifest


def _load_manifest(path: str, directory: str) -> dict[str, Any] | None:
    """The manifest file as JSON, if it is a tastypy manifest of one store."""
    try:
        raw = files.read_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptFileError(
            f"{path} is not valid JSON ({exc}). Run `tastypy repair {directory}` to rebuild it "
            "from the journal and snapshot files.",
            path,
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CorruptFileError(
            f'{path} is not a tastypy manifest (no "format": "tastypy"). Run '
            f"`tastypy repair {directory}` to rebuild it.",
            path,
        )
    if manifest.get("layout") == "parts":
        raise NotAPODError(
            f"{directory} is a tracker split into parts (each a store of its own in "
            f"part-NNNNN/), not one store. Open it with tastypy.Tracker({directory!r}); "
            "tastypy check, repair and compact DIR handle each of its parts."
        )
    return manifest


def _manifest_version(manifest: dict[str, Any], path: str, directory: str) -> int:
    """The manifest's format version, if one this tastypy reads."""
    version = manifest.get("version")
    if type(version) is not int or version < 1:
        raise CorruptFileError(
            f"{path} has the format version {version!r}, which no tastypy writes. Run "
            f"`tastypy repair {directory}` to rebuild the manifest.",
            path,
        )
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path} has format version {version!r}, newer than the version {FORMAT_VERSION} "
            "this tastypy reads. Upgrade tastypy (pip install -U tastypy) to open it."
        )
    return version


def _check_manifest_names(
    manifest: dict[str, Any], version: int, path: str, directory: str
) -> None:
    """Raise unless the manifest has its fields and names only files of ours."""
    for field in ("generation", "journal", "kind"):
        if field not in manifest:
            raise CorruptFileError(
                f"{path} lacks the field {field!r}. Run `tastypy repair {directory}`.", path
            )
    # The names are joined to the directory and written to: only our own
    # plain names, so a manifest cannot point our writes anywhere else.
    generation = manifest["generation"]
    snapshot = manifest.get("snapshot")
    if (
        type(generation) is not int
        or generation < 0
        or not isinstance(manifest["journal"], str)
        or _DATA_FILE.match(manifest["journal"]) is None
        or is_commits_dir(manifest["journal"]) != (manifest.get("log") == "commits")
        or (manifest.get("log") == "commits") != (version >= COMMITS_VERSION)
        or not (snapshot is None or (isinstance(snapshot, str) and _DATA_FILE.match(snapshot)))
    ):
        raise CorruptFileError(
            f"{path} names files or a generation tastypy never writes (generation "
            f"{generation!r}, journal {manifest['journal']!r}, snapshot {snapshot!r}). "
            f"Run `tastypy repair {directory}` to rebuild it.",
            path,
        )


def write_settings(directory: str, settings: dict) -> None:
    """Write a tracker's stored settings (``tracker.json``) atomically."""
    body = {"format": SETTINGS_FORMAT, "version": 1, **settings}
    data = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    write_atomic(os.path.join(directory, SETTINGS), data, label="settings")


def read_settings(directory: str) -> dict[str, Any] | None:
    """A tracker's stored settings, or None when it has none (made by a
    tastypy that did not store them, or never given any).

    A file that cannot be read as settings is an error naming it: a tracker
    opened with wrong settings (no limit of tries, a lease of an hour) would
    hand out tasks its workers were told to give up.
    """
    path = os.path.join(directory, SETTINGS)
    raw = _read_renamed(path)
    if raw is None:
        return None
    try:
        settings = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        settings = exc
    if not isinstance(settings, dict) or settings.get("format") != SETTINGS_FORMAT:
        raise CorruptFileError(
            f"{path} is not a tastypy tracker's settings file. Delete it, then open the "
            "tracker once with its settings, e.g. Tracker(path, max_tries=3, lease=120), "
            "to write it again.",
            path,
        )
    return settings


def _read_renamed(path: str) -> bytes | None:
    """The bytes of a small file that other hosts replace by rename, or None
    if there is none. A client of a shared filesystem (GlusterFS, NFS) may
    answer ESTALE for a name another client renamed over, until it looks at
    the directory again: list it, and ask again, for a few seconds."""
    deadline = time.monotonic() + _STALE_WAIT
    pause = 0.01
    while True:
        try:
            return files.read_regular(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno != errno.ESTALE or time.monotonic() > deadline:
                raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
        try:
            os.listdir(os.path.dirname(path) or ".")  # makes some clients look again
        except OSError:
            pass


def not_writable(path: str, what: str) -> StorageError:
    """The error for a POD ``what`` (``"directory"``, ``"journal"``) at ``path``
    that this process may not write: a read-only filesystem is named as such,
    since no change of permissions would help there."""
    try:
        read_only = bool(os.statvfs(path).f_flag & getattr(os, "ST_RDONLY", 1))
    except (OSError, AttributeError):
        read_only = False
    if read_only:
        mount = fsdetect.find_mount(path)
        where = f"{mount.point}, a {mount.fstype} mount" if mount else "its filesystem"
        return StorageError(
            f"the POD {what} {path} is on a read-only filesystem ({where}, mounted read-only). "
            "tastypy writes to a POD on every sync and takes its lock file to read it; remount "
            "it read-write, or copy the POD somewhere writable (`tastypy check DIR` reads it "
            "where it is)."
        )
    return StorageError(
        f"the POD {what} {path} is not writable by you. tastypy writes to it on every sync; "
        "fix its permissions or copy the POD somewhere writable."
    )


def identity(directory: str) -> tuple[int, int]:
    """What tells the directory ``directory`` from another one given its name
    later (device and inode); :func:`check_identity` compares."""
    st = os.stat(directory)
    return st.st_dev, st.st_ino


def check_identity(directory: str, known: tuple[int, int]) -> None:
    """Refuse, before anything is written, when the POD directory opened as
    ``directory`` is gone or is no longer the one with that name (moved or
    renamed, and perhaps another made in its place): writing by the name
    would go to the wrong POD, without its lock."""
    try:
        now: tuple[int, int] | None = identity(directory)
    except (FileNotFoundError, NotADirectoryError):
        now = None
    except OSError as exc:
        raise StorageError(
            f"cannot look at the POD directory {directory}: {exc.strerror or exc}. Nothing was "
            "written."
        ) from exc
    if now == known:
        return
    if now is None:
        what = "has disappeared (deleted, moved or renamed while open)"
    else:
        what = (
            "is no longer the directory that was opened: that one was moved or renamed "
            "while open, and another now has its name"
        )
    raise StorageError(
        f"the POD directory {directory} {what}. Nothing was written; the data in memory is "
        "intact: save it elsewhere, e.g. with pod.to_dict(), or open the POD where it is now."
    )


def check_directory(directory: str) -> None:
    """Refuse a path that cannot be, or does not look like, a POD directory."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotAPODError(
            f"{directory} is a file, but a POD is a directory. Choose another path, "
            "or move the file away."
        )


def classify_foreign(directory: str) -> None:
    """Raise the right error for a directory that has files but no manifest.

    Returns quietly when the directory is new, or when a manifest has
    appeared since the caller looked: another process created the POD
    meanwhile (several workers opening one new tracker at once), and the
    caller reads the manifest again.
    """
    # A crash while the POD was being created may leave a temporary manifest:
    # the directory is still new.
    try:
        listed = os.listdir(directory)
    except FileNotFoundError:
        # Made by another client of a network filesystem a moment ago, and
        # not shown by this one yet (GlusterFS): new, as far as we know.
        return
    names = [n for n in listed if not n.startswith(LOCK_FILE) and _TEMP_FILE.match(n) is None]
    if not names or MANIFEST in names or os.path.lexists(os.path.join(directory, MANIFEST)):
        return
    data = sorted(n for n in names if is_data_file(n))
    if data:
        path = os.path.join(directory, MANIFEST)
        raise CorruptFileError(
            f"{path} is missing, but {directory} holds tastypy data files ({', '.join(data[:3])}). "
            f"Run `tastypy repair {directory}` to rebuild the manifest from them.",
            path,
        )
    if any(_LEGACY_SHARD.match(n) for n in names):
        raise LegacyFormatError(
            f"{directory} holds a POD written by the original tastypy 0.0.3 (files like "
            "0.json). Convert it with tastypy.import_legacy(old_path, new_path), "
            "or `tastypy import-legacy OLD NEW`."
        )
    shown = ", ".join(sorted(names)[:5])
    raise NotAPODError(
        f"{directory} is not empty and is not a tastypy POD (it holds {shown}). "
        "Give a new or empty directory."
    )


def os_error(action: str, path: str, exc: OSError) -> StorageError:
    """The error to raise when ``action`` on ``path`` failed with ``exc``: what
    failed, why, and what to do about it."""
    why = exc.strerror or str(exc)
    hint = ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        hint = " Free some space; the next sync retries and nothing synced is lost."
    elif exc.errno == errno.EROFS:
        hint = " The filesystem is mounted read-only; remount it read-write."
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = " Check the permissions of the POD directory."
    elif exc.errno == errno.ELOOP:
        hint = (
            " It is a symbolic link, and tastypy does not read or write through links in a "
            "POD directory; replace the link with the file it points to."
        )
    elif exc.errno == errno.EISDIR:
        hint = " A directory stands where tastypy keeps a file; move it out of the POD."
    err = StorageError(f"cannot {action} {path}: {why}.{hint}")
    err.errno = exc.errno
    return err
