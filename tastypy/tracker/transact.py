"""Writing under the lock: every change goes through :meth:`_transact`,
which takes in what others wrote, decides and appends in one hold of the
directory lock, by the quick route (the tail appender) or the ordinary one
(the store), and takes a decision back if its write fails. Also the lease
clock, measured against the filesystem's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from tastypy import _exit
from tastypy.errors import InvalidValueError
from tastypy.pod import _MISSING
from tastypy.storage import journal
from tastypy.storage.store import RACE_RETRIES, CommitRaced, race_pause
from tastypy.storage.tail import TailAppender, file_time
from tastypy.tracker._common import _CONFIRM_AT, _nothing, _time, log
from tastypy.tracker.counters import _contrib

#: Seconds between two measures of how far this host's clock is from the
#: filesystem's (on filesystems shared by hosts), and the offset above which
#: a warning says so.
_CLOCK_EVERY: Final = 30.0
_CLOCK_WARN: Final = 5.0
_CLOCK_SAMPLES: Final = 5

#: The commit lines of small batches, made once.
_COMMITS: Final = tuple(journal.commit_line(n) for n in range(64))


def _framed(lines: list, count: int, gzipped: bool) -> bytes:
    """One batch for the appender: ``count`` record ``lines`` (the list is
    extended) and their commit line."""
    if gzipped:
        return journal.frame(b"".join(lines), count, True)
    lines.append(_COMMITS[count] if count < 64 else journal.commit_line(count))
    return b"".join(lines)


class TransactMixin:
    """One transaction for every change: take in, decide, append, under the lock."""

    def _init_transact(self) -> None:
        """Start with nothing written yet, the lease clock as this host's."""
        # Grants made by the decision running now, to take back if its write fails.
        self._undo: list | None = None
        # Whether others wrote at our last quick write: then claims take in
        # what is new before deciding, rather than deciding first.
        self._contended = False
        # This host's clock + offset = the filesystem's clock (see _clock).
        self._clock_offset = 0.0
        self._clock_samples: list = []
        self._clock_next = 0.0
        # Tries written without fsync since the last durable sync.
        self._since_durable = 0
        # Keys written by the quick path since the store last confirmed that
        # its journal is still the live one (see _reload).
        self._unconfirmed: list = []

    # -- the lease clock --------------------------------------------------------

    def _clock(self) -> float:
        """Seconds since the epoch on the clock leases are judged by: this
        host's clock, corrected on shared filesystems by the offset to the
        filesystem's own clock (see ``docs/leases.md``)."""
        return _time() + self._clock_offset

    def _measure_clock(self) -> None:
        """After an append through the ordinary path: compare the journal's
        modification time, just set by the filesystem, with this host's clock."""
        now = time.monotonic()
        if now < self._clock_next:
            return
        self._clock_next = now + _CLOCK_EVERY
        mtime = file_time(self._store.journal_path)
        if mtime is None:
            return
        samples = self._clock_samples
        samples.append(mtime - _time())
        del samples[:-_CLOCK_SAMPLES]
        offset = sorted(samples)[len(samples) // 2]
        if abs(offset) > _CLOCK_WARN and abs(self._clock_offset) <= _CLOCK_WARN:
            log.warning(
                "tastypy: the clock of this host is %+.1f s off the clock of the filesystem "
                "holding %s; leases are judged by the filesystem's clock.",
                -offset,
                self.path,
            )
        self._clock_offset = offset

    # -- writing under the lock -------------------------------------------------

    def _transact(self, decide: Callable[[], Any], claims: Any = (), durable: bool | None = None):
        """Run ``decide()`` under the directory lock, after taking in what
        other processes wrote, then write every unsynced change (the
        decision's too) before the lock is released. Returns what
        ``decide`` returned.

        ``claims``: the keys ``decide`` may lease (``_ANY``: any). Without
        fsync, except every ``sync_at`` writes (or with ``durable=True``).
        Inside :meth:`hold`, decides on what this process knows and writes
        nothing.
        """
        if self._closed:
            self._refuse_closed()
        if self._held:
            return decide()
        if durable is None:
            self._since_durable += 1
            durable = self._since_durable >= self.sync_at
        if not durable and len(self._unconfirmed) < _CONFIRM_AT:
            tail = self._tail
            if tail is not None and tail.enabled:
                done, result = self._transact_quick(tail, decide, claims)
                if done:
                    return result
        for attempt in range(RACE_RETRIES):
            try:
                return self._transact_ordinary(decide, claims, durable)
            except CommitRaced:
                # Another process committed first (the shared store): the
                # decision was taken back; take its commit in, decide again.
                if attempt == RACE_RETRIES - 1:
                    raise
                race_pause(attempt)
        raise AssertionError("the loop above returns or raises")

    def _transact_quick(self, tail: TailAppender, decide: Callable[[], Any], claims: Any):
        """The transaction through the tail appender; ``(False, None)``, with
        nothing decided, if the ordinary path must do it (see
        :mod:`tastypy.storage.tail`)."""
        with self._sync_lock:
            # A SIGTERM handler (it syncs) must wait until the lock file is
            # released again.
            main = _exit.enter()
            try:
                return self._session(tail, decide, claims)
            finally:
                if main:
                    _exit.leave()

    def _session(self, tail: TailAppender, decide: Callable[[], Any], claims: Any):
        """Take in what others wrote, then, under the lock, what came
        meanwhile; ``decide()`` and write. ``(True, what decide returned)``,
        or ``(False, None)`` with nothing decided or written when the
        ordinary path must do it. The caller holds ``_sync_lock``."""
        self._catch_up(claims)
        changes = tail.begin(lambda: self._catch_up(claims))
        if changes is None:
            return False, None
        undo = self._undo = []
        written = False
        try:
            if changes:
                self._absorb(changes, claims)
            else:
                self._contended = False
            if self._added:
                self._settle_adds()
            result = decide()
            written = self._write_session(tail)
        finally:
            self._undo = None
            tail.end()
            if not written:
                self._rollback(undo)
        if written:
            return True, result
        return False, None

    def _quick_write(self, tail: TailAppender, key: Any) -> bool | None:
        """Append every unsynced change, after what others wrote since the
        store last looked if none of it mentions ``key`` (the task being
        claimed) or another key written (ours would go over theirs
        unmerged), then file that (the appender takes and gives back the
        lock). True if written (or nothing to write); False, with nothing
        written, if that cannot be (a key mentioned, the journal changed,
        the lock stayed busy, the write failed); None if a value JSON cannot
        hold is waiting (the ordinary sync names it).

        The hot path of a try loop: :meth:`_batch` and :meth:`_written`
        written out in one."""
        data = self._d
        dirty = self._dirty
        pending = self._pending
        n_bytes = len(pending)
        if n_bytes:
            n_keys = len(self._pending_keys)
            lines = [bytes(pending[:n_bytes])]
            count = lines[0].count(b"\n")
        else:
            lines = []
            count = 0
        waiting = self._dirty_records(data)
        if waiting is None:
            return None
        more, written, handled = waiting
        lines += more
        count += len(more)
        if not count:
            return True
        if n_bytes:
            written += self._pending_keys[:n_keys]
        written.append(key)
        chunk = tail.append_after(_framed(lines, count, self._store.gzipped), count, written)
        if chunk is None:
            return False
        unconfirmed = self._unconfirmed
        if n_bytes:
            unconfirmed.extend(self._pending_keys[:n_keys])
            del pending[:n_bytes]
            del self._pending_keys[:n_keys]
        for other, marker in handled:
            unconfirmed.append(other)
            if dirty.get(other, _MISSING) is marker:
                del dirty[other]
        self._took_chunk(tail, chunk, written)
        return True

    def _batch(self) -> tuple | None:
        """Every unsynced change as one framed batch for the appender:
        ``(batch, count, n_bytes, n_keys, handled)``; None if a value JSON
        cannot hold is waiting."""
        data = self._data
        pending = self._pending
        n_bytes = len(pending)
        n_keys = len(self._pending_keys)
        body = pending[:n_bytes]
        records = self._dirty_records(data)
        if records is None:
            return None
        lines, _, handled = records
        count = body.count(b"\n") + len(lines)
        if count:
            return (
                _framed([body, *lines], count, self._store.gzipped),
                count,
                n_bytes,
                n_keys,
                handled,
            )
        return body, count, n_bytes, n_keys, handled

    def _written(self, n_bytes: int, n_keys: int, handled: list) -> None:
        """A quick write went through: forget what it covered (changes other
        threads made meanwhile stay), and remember its keys until the store
        confirms that the journal is still the live one."""
        unconfirmed = self._unconfirmed
        dirty = self._dirty
        if n_bytes:
            unconfirmed.extend(self._pending_keys[:n_keys])
            del self._pending[:n_bytes]
            del self._pending_keys[:n_keys]
        for key, marker in handled:
            unconfirmed.append(key)
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]
        if self._added:
            self._prune_added(handled)

    def _write_session(self, tail: TailAppender) -> bool | None:
        """Append every unsynced change inside the appender's session (the
        lock is held). True if written (or nothing to write); False, with
        nothing written, if the write failed; None if a value JSON cannot
        hold is waiting (the ordinary sync names it)."""
        batch = self._batch()
        if batch is None:
            return None
        body, count, n_bytes, n_keys, handled = batch
        if count and not tail.write(body, count):
            return False
        self._written(n_bytes, n_keys, handled)
        return True

    def _transact_ordinary(self, decide: Callable[[], Any], claims: Any, durable: bool):
        store = self._store
        bad: list = []
        if self._contended:
            with self._sync_lock:
                self._catch_up(claims)
        with self._locked():
            confirmed = len(self._unconfirmed)
            if self._tail is not None and self._tail.enabled:
                new = store.read_new_text()
                if new is None:
                    self._reload_merging(claims)
                elif new[0]:
                    self._take_in_text(new, claims)
                self._contended = new is None or bool(new[0])
            else:
                changes = store.read_new()
                if changes is None:
                    self._reload_merging(claims)
                elif changes:
                    self._absorb(changes, claims)
                self._contended = bool(changes)
            # Read under the lock, in our generation: earlier quick writes
            # went to the live journal.
            del self._unconfirmed[:confirmed]
            if self._added:
                self._settle_adds()
            undo = self._undo = []
            try:
                result = decide()
                batch = self._collect()
                count = batch[1]
                if count:
                    store.append(batch[0], count, durable)
            except BaseException:
                self._rollback(undo)
                raise
            finally:
                self._undo = None
            bad = batch[5]
            self._forget(batch)
            if durable:
                if not count and self._since_durable and self._tail is not None:
                    # Nothing appended, so no fsync happened: make the quick
                    # path's writes durable now.
                    self._tail.fsync()
                self._since_durable = 0
            if count and (self._tail is None or not self._tail.enabled):
                self._measure_clock()
            store.maybe_compact(self._live_count(), lambda: self._as_on_disk(bad))
        if bad:
            self._refuse_bad(bad)
        return result

    def _collect(self) -> tuple:
        """The unsynced changes as one batch body for the ordinary path:
        ``(body, count, n_bytes, n_keys, handled, bad, written)``. A value
        JSON cannot hold is left out and listed in ``bad``; ``written``: the
        keys of ``handled`` whose record is in the body."""
        data = self._d
        n_bytes = len(self._pending)
        n_keys = len(self._pending_keys)
        body = self._pending[:n_bytes]
        bad: list = []
        lines, written, handled = self._dirty_records(data, bad)
        body += b"".join(lines)
        return body, body.count(b"\n"), n_bytes, n_keys, handled, bad, written

    def _forget(self, batch: tuple) -> None:
        """Written: forget what the batch covered (changes made meanwhile by
        other threads stay for the next write)."""
        _, _, n_bytes, n_keys, handled, _, written = batch
        if self._backlog:
            # Others' records there came before ours in the journal: ours win.
            self._drop_written(written)
            self._drop_written(self._pending_keys[:n_keys])
        dirty = self._dirty
        for key, marker in handled:
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]
        if self._added:
            self._prune_added(handled)
        if n_bytes:
            del self._pending[:n_bytes]
            del self._pending_keys[:n_keys]

    def _refuse_bad(self, bad: list) -> None:
        key, exc = bad[0]
        raise InvalidValueError(
            f"could not sync key {key!r}: {exc}. Its value was changed in place into "
            f"something JSON cannot hold; set tracker[{key!r}] to a JSON value. Every other "
            "key was synced."
        )

    def _dirty_records(
        self, data: dict, bad: list | None = None, marks: Any = None
    ) -> tuple | None:
        if self._backlog:
            self._take_ours()
        # The records added here and not yet written go first, each marked
        # by its record (which no hash equals, so it is written; and which
        # _prune_added recognises after the write).
        added = self._added
        if added:
            marks = [*added.items(), *self._dirty.items()]
        return super()._dirty_records(data, bad, marks)

    def _prune_added(self, handled: list) -> None:
        """After a write: forget the adds it covered (added again since: kept)."""
        added = self._added
        for key, marker in handled:
            if added.get(key) is marker:
                del added[key]

    def _rollback(self, undo: list) -> None:
        """Take back the grants of a decision whose write failed."""
        data = self._data
        dirty = self._dirty
        granted = self._granted
        for key, rec, saved, marker, grant in reversed(undo):
            if grant is _MISSING:
                granted.pop(key, None)
            else:
                granted[key] = grant
            if saved is None:  # a record the grant created
                if data.get(key) is rec:
                    del data[key]
                self._shift(_contrib(rec), 0)
            else:
                c_now = _contrib(rec)
                rec.clear()
                rec.update(saved)
                self._shift(c_now, _contrib(rec))
            if marker is _MISSING:
                dirty.pop(key, None)
            else:
                dirty[key] = marker

    def flush(self) -> None:
        """Write every change not written yet to the journal now, without
        fsync, as :meth:`try_it` does before it returns True: the changes
        then survive this process's death (not a power loss; :meth:`sync`
        fsyncs)."""
        if self._unsynced():
            self._transact(_nothing)
