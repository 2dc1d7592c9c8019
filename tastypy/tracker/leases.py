"""Claims and leases: :meth:`claim` of many tasks in doloop's order (the
claim queue), and what ends or moves a lease: :meth:`release`,
:meth:`renew`, :meth:`bump`, an outcome recorded, this object's close.
:meth:`lease_info` reports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, NamedTuple

from tastypy import records
from tastypy._identity import holder_gone
from tastypy.errors import InvalidArgumentError
from tastypy.pod import _CHANGED
from tastypy.tracker import _common, heartbeat
from tastypy.tracker._common import _ANY, _check_span, _gone_memo, _until, log
from tastypy.tracker.counters import _contrib

#: The heartbeat renews this process's leases once less than this share of
#: the tracker's lease is left: every third of a lease, so two renewals in
#: a row may fail (a slow lock, a busy file server) before a lease runs out.
_RENEW_AT: Final = 2 / 3
#: A tracker with a short lease is looked at this many times per lease.
_LOOKS_PER_LEASE: Final = 6


def _key_list(keys: Any) -> list:
    """``keys`` as a list; one str or int key is accepted alone."""
    if type(keys) in (str, int):
        return [keys]
    try:
        return list(keys)
    except TypeError:
        raise InvalidArgumentError(
            f"expected a list of keys, got {type(keys).__name__} ({keys!r:.60})"
        ) from None


def _holder_match(holder: str | None) -> Callable[[Any], bool] | None:
    """A test of a record's ``_holder`` against ``"HOST"`` or ``"HOST:PID"``."""
    if holder is None:
        return None
    if type(holder) is not str or not holder:
        raise InvalidArgumentError(
            f"holder must be a host name or HOST:PID, as tastypy leases shows, got {holder!r}."
        )
    host, sep, pid = holder.partition(":")
    pid = pid.partition("/")[0]
    if sep and not pid.isdigit():
        raise InvalidArgumentError(
            f"holder {holder!r}: after the host's name and ':' comes a pid (digits)."
        )

    def match(value: Any) -> bool:
        if type(value) is not str:
            return False
        their_host, _, rest = value.rpartition(":")
        return their_host == host and (not sep or rest.partition("/")[0] == pid)

    return match


class LeaseInfo(NamedTuple):
    """Where one task stands, as :meth:`ProgressTracker.lease_info` reports it."""

    #: Whether the task is done.
    done: bool
    #: How many times it was tried.
    tries: int
    #: Who holds (or last held) its lease: ``"host:pid"``, or None.
    holder: str | None
    #: Seconds until its lease expires (negative: expired that long ago;
    #: None: no lease).
    lease_left: float | None


class LeasesMixin:
    """Claiming tasks in order, and ending, renewing, moving their leases."""

    def _init_leases(self) -> None:
        """Start with no lease index, no claim queue and no grant."""
        # Keys whose record may hold a lease or a bump (a superset, checked
        # when used); None until claim() first needs it.
        self._lease_index: dict | None = None
        # claim()'s order of tasks never tried, then tried before; consumed
        # from _queue_pos and built again when used up.
        self._queue: list = []
        self._queue_pos = 0
        # The leases this object granted and has not ended, by key: the
        # lease's end it wrote. At close and exit it ends those still in
        # the records as it wrote them, and no others: another tracker
        # object of this process runs its own tasks, under the same holder
        # name (a task one object took again carries the other's lease end).
        # The heartbeat renews these.
        self._granted: dict = {}
        # The tasks attempts() and attempt() handed out whose block has not
        # begun, by id: their tries are given back at close and exit.
        self._unstarted: dict = {}
        # Whether the heartbeat's last renewal failed (logged once a streak).
        self._beat_failed = False

    # -- claims and leases --------------------------------------------------------------

    def claim(self, n: int = 1, *, lease: float | None = None, peek: bool = False) -> list:
        """Lease up to ``n`` tasks to this process at once, and count a try of each.

        The keys come in doloop's order: first tasks whose lease expired or
        that were bumped (:meth:`bump`), earliest first; then tasks never
        tried, in insertion order; then tasks tried before, fewest tries
        first (among equals, the one whose last attempt ended longest ago);
        then, with :attr:`redo_after`, done tasks due again, least recently
        done (``_done_at``) first.
        Tasks that are done, aborted, out of tries or leased to another
        process (or already to this one) are not handed out. Decided under
        the directory lock after taking in what other processes wrote, so no
        two processes get the same key while its lease runs::

            while keys := tracker.claim(100, lease=600):
                for key in keys:
                    tracker[key]["result"] = work(key)
                    tracker.mark_done(key)

        An empty list means there is nothing to claim now (tasks leased to
        others may come back when their leases expire). Give back what you
        will not run with :meth:`release`.

        ``peek=True`` is a dry run (doloop's ``test=True``): the keys this
        claim would take now, after taking in what others wrote, taking
        nothing and writing nothing (another process may take them first).
        """
        if type(n) is not int or n < 0:
            raise InvalidArgumentError(f"n must be an int >= 0 (how many tasks), got {n!r}.")
        if type(peek) is not bool:
            raise InvalidArgumentError(f"peek must be True or False, got {peek!r}.")
        span = self._lease if lease is None else _check_span(lease, "lease")
        if not n:
            return []
        if peek:
            return self._peek_claim(n)
        return self._transact(lambda: self._decide_claim(n, span), _ANY)

    def _peek_claim(self, n: int) -> list:
        """:meth:`claim`'s choice, made on what is on disk now, granting
        nothing; the claim queue's place is left where it was."""
        if self._closed:
            self._refuse_closed()
        if not self._held:
            self.refresh()
        with self._sync_lock:
            queue, position = self._queue, self._queue_pos
            try:
                return self._decide_claim(n, 0.0, peek=True)
            finally:
                self._queue, self._queue_pos = queue, position

    def _decide_claim(self, n: int, span: float, peek: bool = False) -> list:
        data = self._data
        now = self._clock()
        until = _until(self._clock_offset, span)
        granted: list = []
        gone = _gone_memo()
        max_tries = self._max_tries
        redo = self._redo(now)
        seen: set = set()
        for key in self._candidates(now, gone, redo):
            rec = data.get(key)
            if not records.complete(rec):
                continue  # a damaged record: try_it(key) says what is wrong
            if key in self._lent:
                self._settle_key(key, rec)
            # Not a task this process runs already either (me=NOBODY).
            if not records.may_run(rec, max_tries, False, now, records.NOBODY, gone, redo):
                continue
            if peek:
                # Nothing is leased, so a key may come twice (index, queue).
                if key in seen:
                    continue
                seen.add(key)
            else:
                self._grant(key, rec, until, None, False)
            granted.append(key)
            if len(granted) >= n:
                break
        return granted

    def _candidates(
        self, now: float, gone: Callable[[Any], bool], redo: float | None = None
    ) -> Iterator:
        """Keys in claim order; each is checked again by the caller."""
        data = self._data
        index = self._lease_index
        if index is None:
            index = self._lease_index = {
                k: None for k, r in data.items() if records.is_record(r) and "_lease_until" in r
            }
        due = []
        for key in list(index):
            rec = data.get(key)
            until = rec.get("_lease_until") if records.is_record(rec) else None
            if until is None or (rec.get("_done") and redo is None):
                del index[key]  # a done task's bump counts only with redo_after
                continue
            if type(until) not in (int, float) or records.lease_runs(
                rec, records.NOBODY, now, gone
            ):
                continue
            due.append((until, key))
        due.sort(key=lambda item: item[0])
        for _, key in due:
            yield key
        rebuilt = False
        while True:
            queue = self._queue
            while self._queue_pos < len(queue):
                key = queue[self._queue_pos]
                self._queue_pos += 1
                yield key
            if rebuilt:
                return
            rebuilt = True
            self._queue = self._build_queue(redo)
            self._queue_pos = 0

    def _build_queue(self, redo: float | None = None) -> list:
        """Tasks never tried (in order), then tasks tried before (fewest tries,
        then longest ago), then done tasks due again (``redo``, see
        :func:`records.may_run`; least recently done first): what claim()
        hands out after bumped ones."""
        fresh = []
        tried = []
        again = []
        max_tries = self._max_tries
        may_run = records.may_run
        for position, (key, rec) in enumerate(self._data.items()):
            if not may_run(rec, max_tries, redo=redo) or "_lease_until" in rec:
                continue  # expired or bumped ones come first, from the index
            if rec.get("_done"):
                done_at = rec.get("_done_at")
                again.append((done_at if type(done_at) in (int, float) else 0, position, key))
                continue
            tries = rec.get("_tries", 0)
            if not tries:
                fresh.append(key)
            else:
                ended = rec.get("_ended")
                tried.append((tries, ended if type(ended) is str else "", position, key))
        tried.sort(key=lambda item: item[:3])
        fresh.extend(item[3] for item in tried)
        again.sort(key=lambda item: item[:2])
        fresh.extend(item[2] for item in again)
        return fresh

    def release(self, keys: Iterable, *, tried: bool = False) -> list:
        """End this process's leases of ``keys`` without marking them done.

        The tasks can be claimed again at once. Their try is given back,
        as if they had not been handed out (they were claimed but not run);
        with ``tried=True`` it stays counted (they ran and failed). Keys not
        leased to this process (done, released, never claimed here, or taken
        over by another process after the lease expired) are left alone.
        Returns the keys released. One str or int key may be given alone.
        """
        return self._release(_key_list(keys), tried, None)

    def _release(self, keys: list, tried: bool, grants: dict | None) -> list:
        """:meth:`release`; with ``grants`` (this object's, see ``_granted``),
        only the leases still as this object wrote them."""

        def decide() -> list:
            data = self._data
            released = []
            for key in keys:
                rec = data.get(key)
                if not records.is_record(rec) or rec.get("_holder") != _common._me:
                    continue
                if grants is not None and rec.get("_lease_until") != grants.get(key):
                    grants.pop(key, None)  # taken again since, by another object
                    continue
                if key in self._lent:
                    self._settle_key(key, rec)
                c_old = _contrib(rec)
                rec.pop("_lease_until", None)
                del rec["_holder"]
                self._granted.pop(key, None)
                tries = rec.get("_tries")
                if not tried and type(tries) is int and tries > 0:
                    rec["_tries"] = tries - 1
                self._shift(c_old, _contrib(rec))
                self._dirty[key] = _CHANGED
                released.append(key)
            self._requeue(released, at_head=not tried)
            return released

        return self._transact(decide)

    def renew(self, keys: Iterable, lease: float | None = None) -> list:
        """Extend this process's leases of ``keys``: they now end ``lease``
        seconds from now (default: the tracker's :attr:`lease`). For tasks
        that run longer than their lease. Returns the keys renewed; a key
        missing from it is no longer leased to this process (done,
        released, or taken over by another process after its lease
        expired). One str or int key may be given alone."""
        keys = _key_list(keys)
        span = self._lease if lease is None else _check_span(lease, "lease")

        lost: list = []

        def decide() -> list:
            data = self._data
            granted = self._granted
            until = _until(self._clock_offset, span)
            renewed = []
            lost.clear()
            for key in keys:
                rec = data.get(key)
                if (
                    not records.is_record(rec)
                    or rec.get("_holder") != _common._me
                    or rec.get("_done")
                ):
                    if key in granted:
                        # Not ours any more: done, deleted, or taken over.
                        del granted[key]
                        if records.is_record(rec) and not rec.get("_done"):
                            lost.append((key, rec.get("_holder")))
                    continue
                rec["_lease_until"] = until
                if key in granted:
                    granted[key] = until
                self._dirty[key] = _CHANGED
                renewed.append(key)
            return renewed

        renewed = self._transact(decide)
        for key, holder in lost:
            self._warn_lost(key, holder)
        return renewed

    def _warn_lost(self, key: Any, holder: Any) -> None:
        """Say that this process lost the lease of ``key`` to ``holder``."""
        if holder is None:
            how = "another process ended it (tastypy release, or bump)"
        else:
            how = f"it ran out and {holder} took the task over"
        log.warning(
            "tastypy: this process (%s) no longer holds the lease of %r in %s: %s. This "
            "process was stopped or could not write for longer than the lease; whatever it "
            "writes of the task now leaves the new holder's lease alone",
            _common._me,
            key,
            self.path,
            how,
        )

    def _requeue(self, keys: list, at_head: bool) -> None:
        """Put ``keys``, free again, back in claim()'s queue (when it is not
        built again anyway): at its head (never tried again) or at its end."""
        if keys and self._queue_pos < len(self._queue):
            if at_head:
                self._queue = keys + self._queue[self._queue_pos :]
                self._queue_pos = 0
            else:
                self._queue.extend(keys)

    def _heartbeat_round(self) -> float:
        """One round of the heartbeat (:mod:`~tastypy.tracker.heartbeat`):
        once the lease this object holds that ends first has less than
        two thirds of :attr:`lease` left, renew every lease it holds that
        renewing makes longer, in one :meth:`renew` (one transaction).
        Returns the seconds until the next round is due. Not under
        :meth:`hold`, which writes nothing (its leases are in memory only)."""
        span = self._lease
        look = min(heartbeat.LOOK_EVERY, span / _LOOKS_PER_LEASE)
        if not self._granted or self._closed or self._held:
            return look
        held = self._granted.copy()
        if not held:
            return look
        now = self._clock()
        due_in = min(held.values()) - now - span * _RENEW_AT
        if due_in > 0:
            return min(look, due_in)
        keys = [key for key, until in held.items() if until - now < span]
        try:
            self.renew(keys)
        except Exception as exc:
            if self._closed:
                return look
            if not self._beat_failed:
                log.warning(
                    "tastypy: could not renew the leases this process holds in %s (%s); "
                    "trying again every %.1f s",
                    self.path,
                    exc,
                    look,
                )
            self._beat_failed = True
        else:
            if self._beat_failed:
                log.warning("tastypy: renewing the leases in %s works again", self.path)
            self._beat_failed = False
        return look

    def bump(self, keys: Iterable, lease: float = 0) -> list:
        """Move tasks ahead, as doloop's ``bump``: each task's lease now ends
        ``lease`` seconds from now, if that is earlier than it did (a bump
        never pushes a lease later). Tasks whose lease has ended go first in
        :meth:`claim`, earliest first, so ``lease=0`` puts them at the head
        of the queue and a negative lease before those; a positive lease
        keeps them from being claimed until then, and then first. A bump
        also cuts a running lease short (e.g. ``bump(keys)`` hands the tasks
        of a worker known to be dead back at once). Done tasks stay done;
        with :attr:`redo_after`, a bumped done task is due again when the
        bump's time comes, whatever its ``_done_at`` (doloop's ``bump``
        of a thing to update soon).
        Returns the keys whose lease moved, as :meth:`release` and
        :meth:`renew` return theirs. Raises ``KeyError`` if a key is not in
        the tracker.
        """
        keys = _key_list(keys)
        span = _check_span(lease, "lease", negative=True)

        def decide() -> list:
            data = self._data
            for key in keys:
                if key not in data:
                    raise self._missing(key)
            until = _until(self._clock_offset, span)
            index = self._lease_index
            moved = []
            for key in keys:
                rec = data.get(key)
                if not records.is_record(rec):
                    continue  # deleted by another process meanwhile
                current = rec.get("_lease_until")
                if type(current) in (int, float) and current <= until:
                    continue
                rec["_lease_until"] = until
                self._dirty[key] = _CHANGED
                if index is not None:
                    index[key] = None
                moved.append(key)
            return moved

        return self._transact(decide)

    def end_leases(
        self, holder: str | None = None, *, expired: bool = False, keys: Iterable | None = None
    ) -> list:
        """End other processes' leases now, keeping their tries: to recover
        the tasks of a host that died (``tastypy release``).

        Which leases: those of ``holder`` (``"HOST"`` or ``"HOST:PID"``, as
        :meth:`lease_info` and ``tastypy leases`` show them); with
        ``expired=True``, those that ran out or whose holder is known dead;
        with neither, every lease (bumps too). ``keys`` narrows it to those
        tasks. The tasks can be claimed at once. Returns the keys whose lease
        ended. A live worker whose lease is ended goes on with its task and
        may then run it a second time beside the next one: end only leases
        of workers you know are gone. ::

            tracker.end_leases("node-17")          # that host died
            tracker.end_leases(expired=True)       # tidy up what ran out
        """
        match = _holder_match(holder)
        wanted = None if keys is None else _key_list(keys)

        def decide() -> list:
            data = self._data
            now = self._clock()
            gone = _gone_memo()
            ended = []
            for key in data if wanted is None else wanted:
                rec = data.get(key)
                if not records.is_record(rec) or "_lease_until" not in rec:
                    continue
                if match is not None and not match(rec.get("_holder")):
                    continue
                if expired and records.lease_runs(rec, records.NOBODY, now, gone):
                    continue
                rec.pop("_lease_until", None)
                rec.pop("_holder", None)
                self._granted.pop(key, None)
                self._dirty[key] = _CHANGED
                ended.append(key)
            self._requeue(ended, at_head=False)
            return ended

        return self._transact(decide)

    def lease_info(self, keys: Iterable | None = None) -> dict:
        """``{key: LeaseInfo(done, tries, holder, lease_left)}`` for ``keys``
        (default: every task that has a lease or a bump), after taking in
        what other processes wrote. ``lease_left`` is in seconds, negative
        once the lease has expired, None for a task without a lease.
        Raises ``KeyError`` for a key not in the tracker. (The manual's
        ``check(key)`` still answers whether one task is done.)"""
        if not self._closed:
            self.refresh()
        if keys is None:
            keys = [
                k
                for k, r in list(self._data.items())
                if records.is_record(r) and "_lease_until" in r
            ]
        else:
            keys = _key_list(keys)
        now = self._clock()
        out = {}
        for key, rec in self._records_of(keys):
            until = rec.get("_lease_until")
            left = round(until - now, 3) if type(until) in (int, float) else None
            tries = rec.get("_tries", 0)
            holder = rec.get("_holder")
            out[key] = LeaseInfo(
                bool(rec.get("_done")),
                tries if type(tries) is int else 0,
                holder if type(holder) is str else None,
                left,
            )
        return out

    def ages(self, keys: Iterable) -> dict:
        """``{key: (since_done, lease_left)}`` for ``keys``, as doloop's
        ``check``: seconds since the task was last done (its ``_done_at``;
        None if it never was, or was done before tastypy recorded when),
        and seconds until its lease ends (negative once it has; None for a
        task without a lease), after taking in what other processes wrote.
        One str or int key may be given alone. Raises ``KeyError`` for a
        key not in the tracker::

            >>> tracker.ages(["user-1", "user-2"])    # doctest: +SKIP
            {'user-1': (3541.2, None), 'user-2': (None, 87.5)}
        """
        keys = _key_list(keys)
        if not self._closed and not self._held:
            self.refresh()
        now = self._clock()
        out = {}
        for key, rec in self._records_of(keys):
            done_at = rec.get("_done_at")
            until = rec.get("_lease_until")
            out[key] = (
                # Not below 0: _done_at is rounded to the millisecond.
                max(0.0, round(now - done_at, 3)) if type(done_at) in (int, float) else None,
                round(until - now, 3) if type(until) in (int, float) else None,
            )
        return out

    def _records_of(self, keys: list) -> Iterator[tuple[Any, dict]]:
        """Each key with its record as this process knows it (``{}`` for a
        damaged one); ``KeyError`` for a key not in the tracker."""
        data = self._data
        for key in keys:
            rec = data.get(key)
            if rec is None:
                raise self._missing(key)
            yield key, rec if records.is_record(rec) else {}

    # -- leases ended by this object ---------------------------------------------

    def _end_lease(self, key: Any, rec: dict) -> bool:
        """End the lease in ``rec`` as the task's outcome is recorded; but not
        another live holder's (this one's ran out and the task was taken
        over): False then, with ``rec`` unchanged."""
        holder = rec.get("_holder")
        if (
            holder != _common._me
            and holder is not None
            and records.lease_runs(rec, _common._me, self._clock(), holder_gone)
        ):
            return False
        rec.pop("_lease_until", None)
        rec.pop("_holder", None)
        if holder == _common._me:
            self._granted.pop(key, None)
        return True

    def _release_held(self) -> None:
        """End the leases this object granted and still holds (at exit, close
        and garbage collection); their tries stay counted: the tasks were
        handed out. Not those of another tracker object of this process.
        The tries of attempts whose block never began are given back first."""
        try:
            if self._unstarted:
                self._give_back_unstarted()  # type: ignore[attr-defined]
            if self._granted:
                self._release(list(self._granted), True, self._granted)
        except Exception:
            log.exception("tastypy: could not release the leases held in %s", self.path)
