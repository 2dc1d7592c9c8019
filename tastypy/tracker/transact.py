"""Writing: every change of a tracker reaches the files through one
transaction (:meth:`Store.transaction`): take the lock, take in what others
appended since this handle last looked, decide, append, release. A try, a
claim, a release, a renewal, an attempt's end, a sync, a close: each is a
decision run inside it. Done marks and other changes made between two
transactions ride with the next one's append.

Also the lease clock, measured against the filesystem's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Final

from tastypy import _exit
from tastypy.codec import LINE_OPTIONS, STR_LINE_OPTIONS, _has_nonfinite, key_from_json, loads
from tastypy.codec import dumps as _dumps
from tastypy.errors import InvalidValueError
from tastypy.pod import _CHANGED, _MISSING
from tastypy.storage.tail import file_time
from tastypy.tracker._common import _nothing, _time, log
from tastypy.tracker.counters import _contrib

#: Seconds between two measures of how far this host's clock is from the
#: filesystem's (on filesystems shared by hosts), and the offset above which
#: a warning says so.
_CLOCK_EVERY: Final = 30.0
_CLOCK_WARN: Final = 5.0
_CLOCK_SAMPLES: Final = 5


#: Looks for ``null`` in a batch (a regular expression: twice as fast as
#: ``b"null" in batch`` for a batch of a few records).
_null: Final = re.compile(b"null").search

#: A writer's batch before its decision: nothing written, nothing bad.
_NO_BATCH: Final = (b"", 0, 0, 0, [], [])


class _Writer:
    """One transaction of a tracker, as the store asks it (:class:`Writer`):
    ``decide`` run on what every process wrote, and every unsynced change
    of this handle written with what it decided."""

    __slots__ = ("tracker", "decide_fn", "args", "claims", "result", "batch", "grants")

    def __init__(self, tracker: Any):
        self.tracker = tracker
        self.decide_fn: Callable[..., Any] | None = None
        self.args: tuple = ()
        # The keys ``decide`` may lease (``_ANY``: any): others' records of
        # them are taken in at once, not filed (see BacklogMixin).
        self.claims: Any = ()
        self.result: Any = None
        self.batch: tuple = _NO_BATCH
        self.grants: list = []

    def take_in(self, new: tuple | None) -> None:
        tracker = self.tracker
        if new is None:
            tracker._reload_merging(self.claims)
        else:
            tracker._take_in_text(new, self.claims)

    def decide(self) -> tuple:
        tracker = self.tracker
        if tracker._added:
            tracker._settle_adds()
        grants = tracker._undo = self.grants
        try:
            self.result = self.decide_fn(*self.args)  # type: ignore[misc]
            batch = self.batch = tracker._collect()
        except BaseException:
            tracker._undo = None
            tracker._rollback(grants)
            raise
        tracker._undo = None
        return batch

    def undo(self) -> None:
        self.tracker._rollback(self.grants)

    def written(self) -> None:
        """Written: forget what the batch covered (changes made meanwhile by
        other threads stay for the next write). (Others' records of the keys
        written were taken out of the backlog before the write, by
        _collect.)"""
        if self.grants:
            self.grants.clear()
        tracker = self.tracker
        _, _, n_bytes, n_keys, handled, _ = self.batch
        dirty = tracker._dirty
        for key, marker in handled:
            if dirty.get(key, _MISSING) is marker:
                del dirty[key]
        if tracker._added:
            tracker._prune_added(handled)
        if n_bytes:
            del tracker._pending[:n_bytes]
            del tracker._pending_keys[:n_keys]

    def live_count(self) -> int:
        return self.tracker._live_count()

    def as_on_disk(self) -> dict | None:
        return self.tracker._as_on_disk(self.batch[5])


class TransactMixin:
    """One transaction for every change: take in, decide, append, under the lock."""

    def _init_transact(self) -> None:
        """Start with nothing written yet, the lease clock as this host's."""
        # Grants made by the decision running now, to take back if its write fails.
        self._undo: list | None = None
        # This host's clock + offset = the filesystem's clock (see _clock).
        self._clock_offset = 0.0
        self._clock_samples: list = []
        self._clock_next = 0.0
        # Transactions written without fsync since the last durable one.
        self._since_durable = 0
        # Given the handle running each transaction, and let go after it
        # (the handles of one state share it: see tastypy/clones.py).
        self._writer = _Writer(None)

    # -- the lease clock --------------------------------------------------------

    def _clock(self) -> float:
        """Seconds since the epoch on the clock leases are judged by: this
        host's clock, corrected on shared filesystems by the offset to the
        filesystem's own clock (see ``docs/leases.md``)."""
        return _time() + self._clock_offset

    def _measure_clock(self) -> None:
        """After an append to a filesystem hosts may share, every
        ``_CLOCK_EVERY`` seconds: compare the journal's modification time,
        just set by the filesystem's server, with this host's clock."""
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

    # -- the transaction --------------------------------------------------------

    def _transact(
        self,
        decide: Callable[[], Any],
        claims: Any = (),
        durable: bool | None = None,
        compact: bool = False,
        write: bool = False,
        args: tuple = (),
    ):
        """Run ``decide()`` in one transaction: under the directory lock,
        after taking in what other processes wrote, then write every
        unsynced change (the decision's too) before the lock is released.
        Returns what ``decide(*args)`` returned.

        ``claims``: the keys ``decide`` may lease (``_ANY``: any). Without
        fsync, except with ``durable=True``, and every ``sync_at``
        transactions in the background; ``compact``: then fold the journal
        into a new snapshot. Inside :meth:`hold`, decides on what this process knows
        and writes nothing, unless ``write`` (a sync).
        """
        if self._closed:
            self._refuse_closed()
        if self._held and not write:
            return decide(*args)
        # A SIGTERM handler (it syncs) and a Ctrl-C wait until the locks
        # are released and what was written is noted (see tastypy._exit).
        main = _exit.enter()
        try:
            # The sync lock from the first look at what others wrote to the
            # write: a thread must not decide on what it knew before another
            # thread took in another process's claim.
            with self._sync_lock:
                # One writer per tracker, reused: transactions of one tracker
                # never nest (the sync lock is held throughout, and nothing in
                # a decision starts another).
                writer = self._writer
                writer.tracker = self
                writer.decide_fn = decide
                writer.args = args
                writer.claims = claims
                if durable is None:
                    # Every sync_at transactions, a durable point: fsynced
                    # in the background (see tastypy.storage.flusher).
                    since = self._since_durable = self._since_durable + 1
                    durable = later = since >= self.sync_at
                else:
                    later = False
                self._store.transaction(writer, durable, compact, later)
                if durable:
                    self._since_durable = 0
                batch = writer.batch
                result = writer.result
                writer.batch = _NO_BATCH
                writer.result = writer.decide_fn = writer.tracker = None
        finally:
            if main:
                _exit.leave()
        store = self._store
        if batch[1] and (store.shared or not store.tail.usable):
            # Only where hosts may share the files: a local file's time is
            # this host's clock, but coarser (it runs milliseconds behind).
            self._measure_clock()
        if batch[5]:
            self._refuse_bad(batch[5])
        return result

    def _collect(self) -> tuple:
        """The unsynced changes as one batch body: ``(body, count, n_bytes,
        n_keys, handled, bad)``. ``handled``: the dirty marks the batch
        covers; a value JSON cannot hold is left out and listed in ``bad``
        (a record read but whose line did not change is not written again).
        The records added here and not yet written go first, each marked by
        its record (which no hash equals, so it is written; and which
        :meth:`_prune_added` recognises after the write)."""
        if self._backlog:
            self._take_ours()
        added = self._added
        marks = [*added.items(), *self._dirty.items()] if added else [*self._dirty.items()]
        data = self._d
        lines: list = []
        bad = None
        for key, marker in marks:
            value = data.get(key, _MISSING)
            if value is _MISSING:
                continue  # a deletion's line is in _pending
            try:
                line = _dumps((key, value), option=STR_LINE_OPTIONS)
            except TypeError:
                try:
                    line = _dumps((key, value), option=LINE_OPTIONS)
                except (TypeError, ValueError) as exc:
                    if bad is None:
                        bad = []
                    bad.append((key, exc))
                    continue
            if marker is _CHANGED or hash(line) != marker:
                lines.append(line)
        joined = b"".join(lines)
        if _null(joined):
            # NaN and infinity are dumped as null: refuse them (one search
            # for the whole batch; most batches hold no null at all).
            bad, joined, count = self._nonfinite(lines, bad)
        else:
            count = len(lines)
        pending = self._pending
        if pending:
            n_bytes = len(pending)
            n_keys = len(self._pending_keys)
            body = pending[:n_bytes]
            body += joined
            count = body.count(b"\n")
        else:
            n_bytes = n_keys = 0
            body = joined
        if bad is None:
            return body, count, n_bytes, n_keys, marks, ()
        failed = {key for key, _ in bad}
        marks = [(key, marker) for key, marker in marks if key not in failed]
        return body, count, n_bytes, n_keys, marks, bad

    def _nonfinite(self, lines: list, bad: list | None) -> tuple:
        """``(bad, body, count)``: the ``lines`` of a batch without those
        whose value holds NaN or infinity, which are listed in ``bad``
        (each line's key read back from it: a rare path)."""
        get = self._d.get
        keep: list = []
        for line in lines:
            if b"null" in line:
                key = key_from_json(loads(line)[0])
                if _has_nonfinite(get(key)):
                    if bad is None:
                        bad = []
                    bad.append((key, ValueError("it holds NaN or infinity")))
                    continue
            keep.append(line)
        return bad, b"".join(keep), len(keep)

    def _refuse_bad(self, bad: list) -> None:
        key, exc = bad[0]
        raise InvalidValueError(
            f"could not sync key {key!r}: {exc}. Its value was changed in place into "
            f"something JSON cannot hold; set tracker[{key!r}] to a JSON value. Every other "
            "key was synced."
        )

    def _prune_added(self, handled: list) -> None:
        """After a write: forget the adds it covered (added again since: kept)."""
        added = self._added
        for key, marker in handled:
            if added.get(key) is marker:
                del added[key]

    def _rollback(self, undo: list) -> None:
        """Take back the grants of a decision whose write failed."""
        data = self._d
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
                dict.update(rec, saved)
                self._shift(c_now, _contrib(rec))
            if marker is _MISSING:
                dirty.pop(key, None)
            else:
                dirty[key] = marker
        del undo[:]

    def flush(self) -> None:
        """Write every change not written yet to the journal now, without
        fsync, as :meth:`try_it` does before it returns True: the changes
        then survive this process's death (not a power loss; :meth:`sync`
        fsyncs)."""
        if self._unsynced():
            self._transact(_nothing)
