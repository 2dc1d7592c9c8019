"""Import a POD or tracker written by the original tastypy 0.0.3.

tastypy 0.0.3 kept a POD as a directory of ``0.json``, ``1.json``, ...
(``0.json.gz``, ... when gzipped), ``file_size`` entries per file in
insertion order, each line ``<json key>\\t<json value>``, with backslashes in
the key doubled. There was no manifest. :func:`import_legacy` reads such a
directory and writes its items, in order, into a new POD; the old directory
is only read, never changed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from typing import Any

from tastypy._args import check_flag, check_path
from tastypy.codec import key_from_json
from tastypy.errors import CorruptFileError, NotAPODError, StorageError, TastypyError
from tastypy.pod import POD
from tastypy.storage import files

__all__ = ["import_legacy", "read_legacy"]

_SHARD = re.compile(r"^(\d+)\.json(\.gz)?$")
# 0.0.3 wrote a tab in a key as backslash-t, and doubled every backslash.
_UNESCAPE_TAB = re.compile(r"(?P<prefix>^|[^\\])\\t")


def _shards(directory: str) -> list[tuple[int, str]]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise NotAPODError(
            f"{directory} does not exist; give the directory of the old POD."
        ) from None
    except NotADirectoryError:
        raise NotAPODError(f"{directory} is a file; give the directory of the old POD.") from None
    found = []
    kinds = set()
    for name in names:
        match = _SHARD.match(name)
        if match:
            found.append((int(match.group(1)), name))
            kinds.add(bool(match.group(2)))
    if not found:
        raise NotAPODError(
            f"{directory} holds no 0.json (or 0.json.gz): it is not a POD of tastypy 0.0.3."
        )
    if len(kinds) > 1:
        raise CorruptFileError(
            f"{directory} holds both .json and .json.gz shard files; tastypy 0.0.3 wrote only "
            "one kind. Move the stale kind away and import again.",
            directory,
        )
    found.sort()
    for expected, (number, name) in enumerate(found):
        if number != expected:
            missing = os.path.join(
                directory, f"{expected}.json" + (".gz" if kinds == {True} else "")
            )
            raise CorruptFileError(
                f"{missing} is missing (the shards go up to {name}): part of the old POD "
                "is lost. Restore the file, or rename the later shards to close the gap "
                "to import what is left.",
                missing,
            )
    return found


def _decode_key(text: str) -> Any:
    text = _UNESCAPE_TAB.sub("\\g<prefix>\t", text)
    text = text.replace("\\\\", "\\")
    return key_from_json(json.loads(text))


def _text_of(path: str) -> io.TextIOWrapper:
    """The text of a shard file, read as every file in a POD directory is
    (never through a link, never a FIFO or a device: files.read_regular)."""
    try:
        raw = files.read_regular(path)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    if path.endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise CorruptFileError(
                f"{path} is not a whole gzip file ({exc}). Restore it from a backup, or "
                "decompress what is readable (zcat) into the .json file it stood for.",
                path,
            ) from None
    return io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8")


def read_legacy(directory: str | os.PathLike[str]) -> list[tuple[Any, Any]]:
    """The ``(key, value)`` items of a tastypy 0.0.3 POD directory, in order.

    Raises :class:`~tastypy.errors.CorruptFileError` naming the file and line
    of anything that cannot be read.
    """
    directory = check_path(directory, "the old POD's path")
    items: list[tuple[Any, Any]] = []
    for _, name in _shards(directory):
        path = os.path.join(directory, name)
        with _text_of(path) as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\n")
                if not line:
                    continue
                try:
                    key_text, value_text = line.split("\t", 1)
                    key = _decode_key(key_text)
                    value = json.loads(value_text)
                except ValueError as exc:
                    raise CorruptFileError(
                        f"{path}, line {number} is not a tastypy 0.0.3 entry "
                        f"(<json key>TAB<json value>): {exc}. Fix or delete that line by hand "
                        "and import again.",
                        path,
                        number,
                    ) from None
                items.append((key, value))
    return items


def _looks_like_tracker(items: list[tuple[Any, Any]]) -> bool:
    return bool(items) and all(type(v) is dict and "_done" in v and "_tries" in v for _, v in items)


def import_legacy(
    old: str | os.PathLike[str],
    new: str | os.PathLike[str],
    *,
    cls: type | None = None,
    gzipped: bool = False,
) -> int:
    """Copy the POD (or tracker) that tastypy 0.0.3 kept in ``old`` into a new
    POD at ``new``, keeping the order of the keys; return how many items.

    ``old`` is only read. ``new`` must not hold anything yet. ``cls`` is the
    class of the new store; by default a ``ProgressTracker`` when every value
    is a task record (a dict with ``_done`` and ``_tries``) and that class is
    available, else a ``POD``.

    Example::

        >>> import tastypy
        >>> tastypy.import_legacy("old/my.pod", "my.pod")  # doctest: +SKIP
        1520
    """
    items = read_legacy(old)
    new = check_path(new, "the new POD's path")
    check_flag(gzipped, "gzipped")
    if os.path.isdir(new) and os.listdir(new):
        raise NotAPODError(
            f"{new} is not empty; import_legacy writes a new POD. Give a path that does "
            "not exist yet (or an empty directory)."
        )
    if cls is None:
        cls = POD
        if _looks_like_tracker(items):
            import tastypy

            cls = getattr(tastypy, "ProgressTracker", POD)
    store = cls(new, gzipped=gzipped)
    try:
        with store.holding():
            for key, value in items:
                try:
                    store[key] = value
                except TastypyError as exc:
                    raise type(exc)(
                        f"{exc} (importing {os.fspath(old)}; the new POD at {new} is "
                        "incomplete: delete it, fix the old entry and import again)"
                    ) from None
    finally:
        store.close()
    return len(items)
