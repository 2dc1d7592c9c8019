"""The manifest, file names and format version of a POD directory."""

from __future__ import annotations

import os
import re
from typing import Any, Final

import orjson

from tastypy.errors import (
    CorruptFileError,
    FormatVersionError,
    LegacyFormatError,
    NotAPODError,
    StorageError,
)

FORMAT_NAME: Final = "tastypy"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
LOCK_FILE: Final = "tastypy.lock"

_LEGACY_SHARD = re.compile(r"^\d+\.json(\.gz)?$")


def snapshot_name(generation: int, gzipped: bool) -> str:
    return f"snapshot-{generation:06d}.jsonl" + (".gz" if gzipped else "")


def journal_name(generation: int, gzipped: bool) -> str:
    return f"journal-{generation:06d}.jsonl" + (".gz" if gzipped else "")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


def new_manifest(kind: str, generation: int, gzipped: bool, snapshot_records: int) -> dict:
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "kind": kind,
        "generation": generation,
        "gzipped": gzipped,
        "snapshot": snapshot_name(generation, gzipped) if snapshot_records else None,
        "snapshot_records": snapshot_records,
        "journal": journal_name(generation, gzipped),
    }


def write_manifest(directory: str, manifest: dict) -> None:
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    write_atomic(os.path.join(directory, MANIFEST), data)


def read_manifest(directory: str) -> dict[str, Any] | None:
    """Return the manifest, or None when the directory has none."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
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
            f"{path} is not a tastypy manifest (no \"format\": \"tastypy\"). Run "
            f"`tastypy repair {directory}` to rebuild it.",
            path,
        )
    version = manifest.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FormatVersionError(
            f"{path} has format version {version!r}, newer than the version {FORMAT_VERSION} "
            "this tastypy reads. Upgrade tastypy (pip install -U tastypy) to open it."
        )
    for field in ("generation", "journal", "kind"):
        if field not in manifest:
            raise CorruptFileError(
                f"{path} lacks the field {field!r}. Run `tastypy repair {directory}`.", path
            )
    return manifest


def check_directory(directory: str) -> None:
    """Refuse a path that cannot be, or does not look like, a POD directory."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotAPODError(
            f"{directory} is a file, but a POD is a directory. Choose another path, "
            "or move the file away."
        )


def classify_foreign(directory: str) -> None:
    """Raise the right error for a directory that has files but no manifest."""
    names = [n for n in os.listdir(directory) if n != LOCK_FILE]
    if not names:
        return
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
