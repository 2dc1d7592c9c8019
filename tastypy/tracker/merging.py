"""Taking in what other processes wrote: their records replace ours, with
the counters kept, except where this process changed a record too; then
the two are merged (:func:`tastypy.records.merge`, the one rule). Records
added here and not yet written give way to theirs.
"""

from __future__ import annotations

from typing import Any

from tastypy import records
from tastypy._identity import holder_gone
from tastypy.errors import CorruptFileError
from tastypy.pod import _CHANGED, _MISSING
from tastypy.storage import DELETED
from tastypy.tracker import _common
from tastypy.tracker._common import _NOT_OURS
from tastypy.tracker.counters import _contrib


class MergingMixin:
    """Others' changes taken in, and merged with ours where both changed a record."""

    # -- taking in others' changes ----------------------------------------------

    def _take_in(self, changes: list, ours: set) -> None:
        """The POD's, for records: other processes' changes, with the
        counters kept; a record this process changed too is merged with
        theirs (:meth:`_take_in_ours`). With many processes, each takes in
        everything the others write, so this is written out for speed."""
        self._absorbed += 1
        if self._added:
            self._yield_adds(changes, ours)
        data = self._data
        dirty = self._dirty
        lent = self._lent
        index = self._lease_index
        get = data.get
        done = tried = aborted = 0
        slow = []
        for key, value in changes:
            if (
                key in ours
                or value is DELETED
                or (dirty and key in dirty)
                or (lent and key in lent)
                or type(value) is not dict  # from disk: a plain dict
            ):
                slow.append((key, value))
                continue
            old = get(key)
            data[key] = value
            try:
                if old is not None:
                    if old["_done"]:
                        done -= 1
                    if old["_tries"] > 0:
                        tried -= 1
                    if old["_aborted"]:
                        aborted -= 1
                if value["_done"]:
                    done += 1
                if value["_tries"] > 0:
                    tried += 1
                if value["_aborted"]:
                    aborted += 1
            except (KeyError, TypeError, IndexError):
                # Not a plain record (damaged by hand): count everything
                # again; the keys after this one add to that count.
                self._count_all()
                done = tried = aborted = 0
            if index is not None and "_lease_until" in value:
                index[key] = None
        self._n_done += done
        self._n_tried += tried
        self._n_aborted += aborted
        if slow:
            self._take_in_ours(slow, ours)

    def _reload_merging(self, claims: Any) -> None:
        """Load the disk afresh (another process compacted), keeping this
        process's unsynced changes, merged with the disk's records of their
        keys (see :meth:`_kept`).

        When this process had read the old journal to its end, it holds the
        new snapshot already, and only takes in the new journal (see
        :meth:`TailAppender.follow`): with many processes, each would
        otherwise parse the whole tracker again after every compaction."""
        tail = self._store.tail
        if tail.enabled:
            texts = tail.follow()
            if texts is not None:
                rest, more = texts
                try:
                    if rest:
                        self._take_in_bytes(rest, claims)  # the old journal's, not counted
                    if more:
                        self._store.journal_records += self._take_in_bytes(more, claims)
                    return
                except CorruptFileError:
                    pass  # loading afresh names the damaged line
        ours = set(self._pending_keys)
        ours.update(self._dirty)
        self._reload(ours)

    def _reload(self, ours: set) -> None:
        # The files were replaced since we last looked. Records added here
        # and not yet written: as added, they yield to the disk's record of
        # their key; changed since, they win; either way they are kept
        # where the disk has none.
        added = self._added
        adds = [(k, rec) for k, rec in added.items() if self._d.get(k) is rec]
        pending = set(self._pending_keys) if adds else set()
        for key, _ in adds:
            ours.discard(key)  # the POD's reload keeps ours over the disk's
        super()._reload(ours)
        data = self._d
        for key, rec in adds:
            old = data.get(key, _MISSING)
            if old is rec:
                continue
            if old is not _MISSING and records.as_added(rec, key in pending):
                del added[key]  # yields
                self._dirty.pop(key, None)
                continue
            data[key] = rec
            self._shift(0 if old is _MISSING else _contrib(old), _contrib(rec))

    def _absorb(self, changes: list, claims: Any) -> None:
        """Take in other processes' changes (under the lock); a record this
        process changed too is merged with theirs (see :meth:`_take_in`).
        (``claims``: the keys being claimed, whose records are taken in
        now rather than filed; see :meth:`_take_in_text`.)"""
        if self._added:
            self._yield_adds(changes)
        ours = set(self._pending_keys)
        ours.update(self._dirty)
        self._take_in(changes, ours)

    def _take_in_ours(self, changes: list, ours: set) -> None:
        """Others' changes of keys this process read or changed (``ours``, or
        marked dirty), of keys lent, deletions, and values that are not
        plain records. A record read here and not changed since takes
        theirs, as any other key does; one changed here is merged with
        theirs (:meth:`_merge_in`). Where either side deleted the key, ours
        wins as before: a record changed here is written again, a deletion
        here is written."""
        data = self._d
        dirty = self._dirty
        pending = set(self._pending_keys)
        rest = []
        for key, value in changes:
            local = data.get(key, _MISSING)
            marker = dirty.get(key)
            if (
                marker is not None
                and key not in pending
                and local is not _MISSING
                and self._read_unchanged(key, local, marker)
            ):
                del dirty[key]  # read here, not changed
                marker = None
            if marker is None and key not in ours:
                rest.append((key, value))
            elif records.is_record(local) and records.is_record(value):
                self._merge_in(key, local, value, pending)
        if rest:
            super()._take_in(rest, _NOT_OURS)

    def _merge_in(self, key: Any, local: dict, theirs: dict, pending: Any) -> None:
        """Another process wrote ``theirs`` for ``key``, which this process
        changed too (``local``, not yet written): ``local`` becomes the
        merge of the two (:func:`records.merge`, the one rule), written
        unless it is theirs (then nothing of ours is left to write:
        ``pending``, the keys whose lines wait to be written, still are)."""
        if key in self._lent:
            self._settle_key(key, local)
        merged = records.merge(local, theirs, _common._me, self._clock(), holder_gone)
        c_old = _contrib(local)
        local.clear()
        dict.update(local, merged)  # checked already (a Record's update checks again)
        self._shift(c_old, _contrib(local))
        if merged == theirs and key not in pending:
            self._dirty.pop(key, None)
            if self._added.get(key) is local:
                del self._added[key]
        else:
            self._dirty[key] = _CHANGED
        if "_lease_until" in local and self._lease_index is not None:
            self._lease_index[key] = None

    def _kept(self, key: Any, local: Any, disk: Any) -> Any:
        # A reload (another process replaced the files): as a take-in.
        if records.is_record(local) and records.is_record(disk):
            self._merge_in(key, local, disk, self._pending_keys)
        return local

    # -- records added here give way -------------------------------------------

    def _yield_adds(self, changes: list, ours: set | None = None) -> None:
        """Other processes' ``changes``, about to be taken in: a record added
        here and not yet written, still as added (read maybe, not changed),
        gives way to theirs. (Not one deleted here before it was added: the
        deletion is written too.)"""
        added = self._added
        data = self._d
        dirty = self._dirty
        pending = set(self._pending_keys)
        for key, _ in changes:
            rec = added.get(key)
            if rec is not None and data.get(key) is rec and records.as_added(rec, key in pending):
                del added[key]
                dirty.pop(key, None)  # a read's mark
                if ours and key in ours:
                    ours.discard(key)

    def _settle_adds(self) -> None:
        """Before writing records added here, under the lock, after reading
        what others wrote: take in the backlog, so that others' records of
        those keys win over the adds (see :meth:`_yield_adds`)."""
        if self._backlog:
            self._flush_backlog()
