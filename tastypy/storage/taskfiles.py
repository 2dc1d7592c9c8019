"""A task's own files: its directory, named safely from its key, and its logs.

A tracker keeps each task's files (what the task stores, and the captured
log of each attempt) in ``<tracker>/tasks/<name>/``, where ``<name>`` is a
readable slug of the key and a hash of the key's JSON text
(:func:`dir_name`). The name is safe on any filesystem: only ASCII letters,
digits, ``.``, ``_`` and ``-``, never ``.`` or ``..``, never a reserved
Windows name (the hash comes last), at most 90 characters; two keys that
differ only in case or in characters the slug leaves out still differ in
the hash. The directory holds ``key.json``, the key it belongs to, written
before the directory gets its name; a directory whose ``key.json`` names
another key is refused, so two keys never share one. See
``docs/format.md``, "A task's own files".
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import unicodedata
from typing import Any, Final, TextIO

import orjson

from tastypy.codec import check_key, encode_key
from tastypy.errors import StorageError
from tastypy.storage import files

__all__ = ["TASKS_DIR", "dir_name", "ensure", "find", "logs", "new_log"]

#: The directory of a tracker that holds its tasks' directories.
TASKS_DIR: Final = "tasks"
#: In a task's directory: its key, the user's files, the captured logs.
KEY_FILE: Final = "key.json"
STORAGE_DIR: Final = "storage"
LOGS_DIR: Final = "logs"

#: The readable part of a name is cut to this many characters.
_SLUG_MAX: Final = 60
#: Hex digits of the SHA-256 of the key's JSON text (96 bits).
_HASH_DIGITS: Final = 24
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_LOG_NAME: Final = re.compile(r"attempt-(\d+)\.log")
_KEY_FORMAT: Final = "tastypy-task"


def _slug(key: Any) -> str:
    if type(key) is tuple:
        text = "_".join(_slug(part) for part in key)
    else:
        text = str(key)
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("_", ascii_text)


def dir_name(key: Any) -> str:
    """The name of ``key``'s directory: ``<slug>-<hash>``, e.g.
    ``job-7-3f2a...`` for ``"job-7"``. Raises ``InvalidKeyError`` for what
    cannot be a tracker key."""
    check_key(key)
    digest = hashlib.sha256(encode_key(key)).hexdigest()[:_HASH_DIGITS]
    slug = _slug(key).strip("._-")[:_SLUG_MAX].rstrip("._-") or "key"
    return f"{slug}-{digest}"


def find(root: str, key: Any) -> str:
    """The path of ``key``'s directory under the tracker directory ``root``
    (which may not exist yet)."""
    return os.path.join(root, TASKS_DIR, dir_name(key))


def _key_bytes(directory: str) -> bytes | None:
    """The key ``directory``'s ``key.json`` names, as JSON text; None if it has none."""
    try:
        stored = orjson.loads(files.read_regular(os.path.join(directory, KEY_FILE)))
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StorageError(
            f"cannot read {os.path.join(directory, KEY_FILE)}: {exc}. It names the task this "
            "directory belongs to; move the directory away to have it made again."
        ) from None
    if type(stored) is not dict or stored.get("format") != _KEY_FORMAT:
        return None
    return orjson.dumps(stored.get("key"))


def _check_owner(directory: str, key: Any) -> None:
    """Refuse ``directory`` unless it is a real directory whose ``key.json`` names ``key``."""
    files.check_directory(directory)
    found = _key_bytes(directory)
    if found != encode_key(key):
        what = "no key.json" if found is None else f"key.json naming {found.decode()!r}"
        raise StorageError(
            f"{directory} should hold the files of the task {key!r}, but it has {what}. "
            "Move it out of the tracker's tasks directory; it is made again on first use."
        )


def ensure(root: str, key: Any) -> str:
    """``key``'s directory under ``root``, made with its ``key.json``,
    ``storage/`` and ``logs/`` if it does not exist yet. Several processes
    may make it at once: the directory is built under a temporary name and
    renamed into place, so it appears whole, once."""
    tasks = os.path.join(root, TASKS_DIR)
    target = find(root, key)
    try:
        os.mkdir(tasks)
    except FileExistsError:
        files.check_directory(tasks)
    if os.path.lexists(target):
        _check_owner(target, key)
        return target
    temp = f"{target}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        os.mkdir(temp)
        os.mkdir(os.path.join(temp, STORAGE_DIR))
        os.mkdir(os.path.join(temp, LOGS_DIR))
        record = {"format": _KEY_FORMAT, "version": 1, "key": key}
        fd = files.open_regular(
            os.path.join(temp, KEY_FILE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666
        )
        try:
            os.write(fd, orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.rename(temp, target)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.EISDIR):
                raise
            # Made by another process meanwhile: use theirs.
    except OSError as exc:
        raise StorageError(
            f"cannot make the directory of the task {key!r}, {target}: {exc}"
        ) from None
    finally:
        if os.path.lexists(temp):
            shutil.rmtree(temp, ignore_errors=True)
    _check_owner(target, key)
    return target


def logs(directory: str) -> list[str]:
    """The captured logs in a task's directory, oldest attempt first."""
    try:
        names = os.listdir(os.path.join(directory, LOGS_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return []
    numbered = []
    for name in names:
        m = _LOG_NAME.fullmatch(name)
        if m:
            numbered.append((int(m.group(1)), name))
    return [os.path.join(directory, LOGS_DIR, name) for _, name in sorted(numbered)]


def new_log(directory: str) -> tuple[str, TextIO]:
    """A new log file for one attempt, ``logs/attempt-NNNN.log`` numbered
    after the last one there, created exclusively (two attempts never share
    one), opened for appending text, line-buffered."""
    log_dir = os.path.join(directory, LOGS_DIR)
    try:
        os.mkdir(log_dir)
    except FileExistsError:
        files.check_directory(log_dir)
    existing = logs(directory)
    number = int(_LOG_NAME.fullmatch(os.path.basename(existing[-1])).group(1)) if existing else 0
    while True:
        number += 1
        path = os.path.join(log_dir, f"attempt-{number:04d}.log")
        try:
            fd = files.open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        except FileExistsError:
            continue
        except OSError as exc:
            raise StorageError(f"cannot create the log file {path}: {exc}") from None
        stream = os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")
        return path, stream
