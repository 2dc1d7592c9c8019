"""JSON-lines record files: append a batch, read back committed batches.

A file is a sequence of batches. A batch is record lines followed by one
commit line ``{"sync":N}`` where N counts the batch's records. A record is
``[key,value]`` (set) or ``[key]`` (delete). Anything after the last commit
line is a batch that never finished (a crash mid-write): it is ignored by
readers and cut off by the next writer before it appends.

With ``gzipped`` each batch is one gzip member, so appending stays cheap and
a torn member is recognised as the torn tail.
"""

from __future__ import annotations

import errno
import os
import zlib
from typing import Any, Callable, Final

import orjson

from tastypy._faults import no_fault
from tastypy.codec import key_from_json, suspect_lines, unwritable
from tastypy.errors import CorruptFileError
from tastypy.storage import files, layout

COMMIT_PREFIX: Final = b'{"sync":'

#: Stand-in value of a deleted key in a list of records.
DELETED: Final = object()


def commit_line(count: int) -> bytes:
    return b'{"sync":%d}\n' % count


def frame(body: bytes | bytearray, count: int, gzipped: bool) -> bytes:
    """The bytes of one batch: ``count`` record lines in ``body``, then the commit line."""
    data = bytes(body) + commit_line(count)
    if gzipped:
        return _gzip(data)
    return data


def _gzip(body: bytes) -> bytes:
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    return comp.compress(body) + comp.flush()


def gzip_member(body: bytes) -> bytes:
    """``body`` as one gzip member, as a gzipped POD's files hold it."""
    return _gzip(body)


def committed_part(chunk: bytes) -> int:
    """Length of the prefix of ``chunk`` that ends with a complete commit line."""
    end = len(chunk)
    while True:
        pos = chunk.rfind(b"\n" + COMMIT_PREFIX, 0, end)
        if pos < 0:
            if not chunk.startswith(COMMIT_PREFIX):
                return 0
            pos = -1
        eol = chunk.find(b"\n", pos + 1)
        if eol >= 0:
            return eol + 1
        if pos < 0:
            return 0
        # The last commit line was cut short (no newline yet): the batch it
        # would have closed is torn; the one before may be whole.
        end = pos


def unterminated(text: bytes) -> bool:
    """Whether ``text`` ends with a whole commit line that lacks only its
    newline: a complete batch, saved by an editor that drops the final
    newline (or cut by exactly that byte). It is kept: a torn write cannot
    end with a complete commit line counting a complete batch, and the
    batch's count is still checked."""
    if text[-1:] != b"}":
        return False
    last = text[text.rfind(b"\n") + 1 :]
    return last.startswith(COMMIT_PREFIX) and last[len(COMMIT_PREFIX) : -1].isdigit()


def member_text(text: bytes) -> bytes:
    """A gzip member's text, with the newline of its last commit line put
    back if it was saved without one (see :func:`unterminated`)."""
    return text + b"\n" if unterminated(text) else text


def gunzip_members(raw: bytes) -> tuple[bytes, int]:
    """Decompress whole gzip members; return the text and the bytes consumed."""
    out = []
    consumed = 0
    rest = raw
    while rest:
        d = zlib.decompressobj(31)
        try:
            text = member_text(d.decompress(rest))
        except zlib.error:
            break
        if not d.eof:
            break
        out.append(text)
        used = len(rest) - len(d.unused_data)
        consumed += used
        rest = d.unused_data
    return b"".join(out), consumed


def read_from(path: str, offset: int, gzipped: bool) -> tuple[bytes, int, int]:
    """Read ``path`` from ``offset``.

    Returns ``(text, consumed, size)``: the text of the committed batches, how
    many file bytes they take, and the file size seen.
    """
    raw = files.read_regular(path, offset)
    size = offset + len(raw)
    if gzipped:
        text, consumed = gunzip_members(raw)
        if consumed != len(raw):
            _check_gz_tail(raw[consumed:], path, offset + consumed)
        keep = committed_part(text)
        if keep != len(text):
            # A member that decompressed but lacks its commit line: only its
            # whole members before are trusted.
            text, consumed = _trim_gz(raw, keep)
        return text, consumed, size
    keep = committed_part(raw)
    if keep != len(raw):
        if unterminated(raw):
            # A complete last batch without its final newline: kept, with the
            # newline counted as read. The next writer writes it first
            # (:func:`append`); until then the file is one byte shorter than
            # what was read, which readers take for "nothing new".
            return raw + b"\n", len(raw) + 1, size
        _check_tail(raw, keep, path, offset)
    return raw[:keep], keep, size


GZIP_MAGIC: Final = b"\x1f\x8b\x08"


def _check_gz_tail(rest: bytes, path: str, at: int) -> None:
    """Refuse bytes after the last whole gzip member that are not a torn one.

    A member cut short (a crash mid-write) decompresses without error as far
    as it goes; zero-filled blocks (a power loss) do not. Anything else, and
    above all a later member after a damaged one, is damage that the next
    sync would otherwise cut off with every batch after it.
    """
    try:
        zlib.decompressobj(31).decompress(rest)
        return
    except zlib.error as exc:
        why = str(exc)
    if rest.find(GZIP_MAGIC, 1) < 0 and b"\0" * 16 in rest:
        return
    raise CorruptFileError(
        f"{path}: the compressed data is damaged at byte {at} ({why}), before the end of the "
        f"file. Run `tastypy repair {pod_directory(path)}` to salvage every readable batch "
        "(the damaged file is kept aside).",
        path,
    )


def _check_tail(raw: bytes, keep: int, path: str, offset: int) -> None:
    """Refuse a tail after the last commit line that is not a torn batch.

    A write cut short leaves whole record lines and at most one partial line
    (or, after a power loss, zero bytes): that is ignored, and cut off by the
    next sync. A whole line that is not a record means damage, such as a
    batch whose commit line was garbled; cutting it off would lose synced
    records without a word.
    """
    for number, line in enumerate(raw[keep:].split(b"\n")[:-1]):
        if b"\0" in line:
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            item = None
        if type(item) is list and len(item) in (1, 2):
            continue
        before = files.read_regular(path, 0, offset) if offset else b""
        line_no = before.count(b"\n") + raw.count(b"\n", 0, keep) + number + 1
        raise CorruptFileError(
            f"{path}, line {line_no} is neither a record nor a commit line, after the last "
            f"complete batch ({line[:80]!r}). Fix or delete that line by hand, or run "
            f"`tastypy repair {pod_directory(path)}` to salvage every readable record "
            "(the damaged file is kept aside).",
            path,
            line_no,
        )


def _trim_gz(raw: bytes, keep: int) -> tuple[bytes, int]:
    out = []
    consumed = 0
    total = 0
    rest = raw
    while rest and total < keep:
        d = zlib.decompressobj(31)
        text = member_text(d.decompress(rest))
        if total + len(text) > keep:
            break
        out.append(text)
        total += len(text)
        consumed += len(rest) - len(d.unused_data)
        rest = d.unused_data
    return b"".join(out), consumed


def pod_directory(path: str) -> str:
    """The POD directory of one of its files (a commit file is one level down)."""
    directory = os.path.dirname(path)
    if layout.is_commits_dir(os.path.basename(directory)):
        return os.path.dirname(directory)
    return directory


def _advice(path: str) -> str:
    return (
        f"Fix or delete that line by hand, or run `tastypy repair {pod_directory(path)}` "
        "to salvage every readable record (the damaged file is kept aside)."
    )


def refuse_unwritable(text: bytes, path: str, first_line: Callable[[], int] = lambda: 1) -> None:
    """Refuse ``text`` if a line of it holds what tastypy could not write back
    exactly: a value nested deeper than orjson writes, or an integer beyond
    64 bits, which orjson reads as a rounded float. Loaded, the first would
    make every later sync of the key fail, the second would be rounded for
    good by the next compaction; both come only from other tools."""
    for start, end in suspect_lines(text):
        why = unwritable(text[start:end])
        if why is not None:
            number = first_line() + text.count(b"\n", 0, start)
            raise CorruptFileError(f"{path}, line {number} {why}. {_advice(path)}", path, number)


def parse(text: bytes, path: str, first_line: Callable[[], int] = lambda: 1) -> list[Any]:
    """Decode the committed ``text`` into a flat list of JSON records.

    Commit lines are checked against the count of the records before them
    and dropped. A line that is not a valid record, or one holding what
    could not be written back (:func:`refuse_unwritable`), raises
    CorruptFileError naming the file and line.
    """
    if not text:
        return []
    refuse_unwritable(text, path, first_line)
    return _parse(text, path, first_line)


def _parse(text: bytes, path: str, first_line: Callable[[], int]) -> list[Any]:
    try:
        items = orjson.loads(b"[" + text[:-1].replace(b"\n", b",") + b"]")
    except orjson.JSONDecodeError:
        items = None
    if items is not None:
        out = []
        append = out.append
        count = 0
        for item in items:
            if type(item) is list:
                append(item)
                count += 1
            else:
                if type(item) is not dict or item.get("sync") != count:
                    return _parse_slow(text, path, first_line)
                count = 0
        for item in out:
            n = len(item)
            if n != 2 and n != 1:
                return _parse_slow(text, path, first_line)
            key = item[0]
            if type(key) is not str and type(key) is not int and not is_key(key):
                return _parse_slow(text, path, first_line)
        return out
    return _parse_slow(text, path, first_line)


def is_key(obj: Any) -> bool:
    """Whether a decoded JSON value is a key: a str, an int or a list of keys."""
    t = type(obj)
    if t is str or t is int:
        return True
    return t is list and all(is_key(part) for part in obj)


def _parse_slow(text: bytes, path: str, first_line: Callable[[], int]) -> list[Any]:
    out = []
    count = 0
    advice = _advice(path)
    for number, line in enumerate(text.split(b"\n")[:-1], first_line()):
        where = f"{path}, line {number}"
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CorruptFileError(
                f"{where} is not valid JSON ({exc.msg}, at column {exc.colno}). {advice}",
                path,
                number,
            ) from None
        if type(item) is list and len(item) in (1, 2):
            if not is_key(item[0]):
                raise CorruptFileError(
                    f"{where} has the key {item[0]!r}, which is not a str, an int or a list "
                    f"of those. {advice}",
                    path,
                    number,
                )
            out.append(item)
            count += 1
        elif type(item) is dict and "sync" in item:
            if item["sync"] != count:
                raise CorruptFileError(
                    f"{where}: the commit line counts {item['sync']} records but the batch "
                    f"before it has {count}; lines were lost or duplicated. {advice}",
                    path,
                    number,
                )
            count = 0
        else:
            raise CorruptFileError(
                f"{where} is not a record: expected [key, value], [key] or "
                f'{{"sync": N}}, got {line[:80]!r}. {advice}',
                path,
                number,
            )
    return out


def load_into(text: bytes, data: dict, path: str, first_line: Callable[[], int] = lambda: 1) -> int:
    """Replay the committed ``text`` into ``data``; return how many records.

    Each batch is first fed straight from orjson into ``dict.update`` (no
    per-record Python code: loading runs at the speed of parsing). A batch
    that holds deletions or tuple keys, or anything odd, is replayed again
    record by record, which is harmless: replaying a set twice changes
    nothing, and that path checks every line and names a bad one. What
    could not be written back is refused first (:func:`refuse_unwritable`).
    """
    refuse_unwritable(text, path, first_line)
    total = 0
    start = 0
    end = len(text)
    find = text.find
    loads = orjson.loads
    update = data.update
    while start < end:
        commit = find(COMMIT_PREFIX, start)
        while commit > 0 and text[commit - 1] != 10:  # not at a line start
            commit = find(COMMIT_PREFIX, commit + 1)
        if commit < 0:
            break
        eol = find(b"\n", commit)
        try:
            count = int(text[commit + len(COMMIT_PREFIX) : eol - 1])
        except ValueError:
            count = -1
        body = text[start:commit]
        n = body.count(b"\n")
        fast = n == count and (n == 0 or (body[:1] == b"[" and body.count(b"\n[") == n - 1))
        if fast and n:
            try:
                update(map(loads, body.split(b"\n", n - 1)))
            except (ValueError, TypeError):
                fast = False
        if not fast:
            records = _parse(text[start : eol + 1], path, _shifted(text, start, first_line))
            apply(records, data)
        total += n
        start = eol + 1
    return total


def _shifted(text: bytes, start: int, first_line: Callable[[], int]) -> Callable[[], int]:
    return lambda: first_line() + text.count(b"\n", 0, start)


def apply(records: list[Any], data: dict) -> None:
    """Replay ``records`` into ``data`` (the fast path of a full load)."""
    pop = data.pop
    for rec in records:
        key = rec[0]
        if type(key) is list:
            key = key_from_json(key)
        if len(rec) == 2:
            data[key] = rec[1]
        else:
            pop(key, None)


def as_changes(records: list[Any]) -> list[tuple[Any, Any]]:
    """``records`` as ``(key, value)`` pairs, ``DELETED`` for deletions."""
    out = []
    for rec in records:
        key = rec[0]
        if type(key) is list:
            key = key_from_json(key)
        out.append((key, rec[1] if len(rec) == 2 else DELETED))
    return out


def append(
    path: str,
    committed_size: int,
    batch: bytes,
    hook: Callable[[str], None],
    durable: bool = True,
) -> int:
    """Append ``batch`` at ``committed_size``, cutting any torn tail first.

    Returns the new committed size. The caller holds the lock.
    """
    # A journal that is a symbolic link (or a FIFO, a device...) is refused,
    # so a POD directory cannot redirect our writes to a file outside it.
    fd = files.open_regular(path, os.O_RDWR | os.O_CREAT)
    try:
        size = os.fstat(fd).st_size
        if size == committed_size - 1 and _lacks_newline(fd, size, batch):
            # Its last batch was read without its final newline (read_from).
            batch = b"\n" + bytes(batch)
            committed_size = size
        elif size != committed_size:
            _check_cuttable(fd, path, committed_size, size)
            hook("before-truncate")
            os.ftruncate(fd, committed_size)
            os.fsync(fd)
            hook("after-truncate")
        os.lseek(fd, committed_size, os.SEEK_SET)
        view = memoryview(batch)
        hook("before-write")
        try:
            if hook is not no_fault and len(view) > 1:
                # Only an armed hook splits the write, so a crash can land
                # inside a batch; unarmed, a sync stays one write call.
                _write_all(fd, view[: len(view) // 2])
                hook("mid-write")
                view = view[len(view) // 2 :]
            _write_all(fd, view)
            hook("after-write")
            if durable:
                os.fsync(fd)
        except OSError:
            # The sync is reported as failed, so take its batch back before
            # the lock is released: no other process may read it as committed.
            try:
                os.ftruncate(fd, committed_size)
            except OSError:
                pass
            raise
        if durable:
            hook("after-fsync")
    finally:
        os.close(fd)
    return committed_size + len(batch)


def _ends_unterminated(fd: int, size: int) -> bool:
    """Whether the plain journal open as ``fd`` ends as :func:`unterminated`
    says (a commit line is short: its last 64 bytes tell)."""
    n = min(size, 64)
    tail = os.pread(fd, n, size - n)
    return (n == size or b"\n" in tail) and unterminated(tail)


def _lacks_newline(fd: int, size: int, batch: bytes | bytearray) -> bool:
    """Whether a plain journal of ``size`` bytes ends with a commit line
    without its newline (a gzipped one is never read so)."""
    return size > 0 and batch[:3] != GZIP_MAGIC and os.pread(fd, 1, size - 1) == b"}"


#: What :func:`seal` appends: a torn batch (a partial line; for a gzipped
#: journal, the header of a gzip member cut short), which readers ignore and
#: the next writer cuts off.
SEAL: Final = b'{"sealed":"this journal is being replaced"}'
GZIP_SEAL: Final = _gzip(b"")[:10]


def seal(path: str, gzipped: bool) -> int | None:
    """Mark the journal ``path`` as no longer to be appended to, before a
    compaction or a repair replaces it (under the lock).

    A process that keeps the journal open appends only while the file ends
    where that process last read it (:mod:`tastypy.storage.tail`): the seal
    makes the file longer, so that process looks again, finds a torn batch,
    and takes the ordinary path, which reads the manifest. Were the
    replacement to die before the manifest names the new files, the seal is
    an ordinary torn batch: ignored, then cut off. No fsync: only running
    processes need to see it. A journal not created yet needs no seal.

    Returns the size of the journal before the seal (None if there is no
    journal), for :func:`unseal` when the replacement fails.
    """
    try:
        fd = files.open_regular(path, os.O_RDWR | os.O_APPEND)
    except FileNotFoundError:
        return None
    try:
        size = os.fstat(fd).st_size
        seal = GZIP_SEAL if gzipped else SEAL
        if not gzipped and _ends_unterminated(fd, size):
            # The last batch lacks its final newline (see unterminated): the
            # seal must not make it look torn, were the compaction to die.
            seal = b"\n" + seal
        _write_all(fd, memoryview(seal))
    finally:
        os.close(fd)
    return size


def unseal(path: str, size: int | None) -> None:
    """Take back the seal of a journal that stays live (the replacement
    failed): cut it off, if it is still the last thing in the file."""
    if size is None:
        return
    try:
        fd = files.open_regular(path, os.O_RDWR)
    except OSError:
        return
    try:
        end = os.fstat(fd).st_size
        if end - size in (len(SEAL), len(SEAL) + 1, len(GZIP_SEAL)) and os.pread(
            fd, end - size, size
        ) in (SEAL, b"\n" + SEAL, GZIP_SEAL):
            os.ftruncate(fd, size)
    except OSError:
        pass  # a seal left is a torn batch: the next writer cuts it
    finally:
        os.close(fd)


def _check_cuttable(fd: int, path: str, committed_size: int, size: int) -> None:
    """Refuse to cut anything but a torn batch off the end of the journal.

    The caller read the journal up to ``committed_size`` under the lock, so
    past it there can only be a batch a dead writer left unfinished. If
    there is more (a stale size from a network filesystem's attribute
    cache, or a writer that did not take the same lock), cutting would
    destroy other processes' synced batches: stop instead, and let the sync
    be retried after reading them.
    """
    if size > committed_size:
        tail = os.pread(fd, size - committed_size, committed_size)
        whole = gunzip_members(tail)[1] if tail[:3] == b"\x1f\x8b\x08" else committed_part(tail)
        if not whole:
            return
    raise OSError(
        errno.ESTALE,
        f"the journal holds {size} bytes where {committed_size} were expected under the "
        "lock: another process wrote to it without the same lock, or the filesystem reported "
        "a stale size. Nothing was cut; sync again. If this repeats, open every handle with "
        "the same lock= (see docs/locks.md)",
    )


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        written = os.write(fd, view)
        view = view[written:]
