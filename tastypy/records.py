"""Task records: their fields, whether a task may run now, and the merge of two versions.

A tracker's value is a task record: a dict holding ``_done``, ``_tries`` and
``_aborted``, while a worker holds the task a lease (``_lease_until``,
``_holder``), and whatever the user attaches. Two rules about records are
written here once, and every route of the tracker asks them:

* :func:`may_run`: may this task run now (not done, or done but due again
  (``redo_after``), not aborted, tries left, and, when leases count, no
  lease of another live holder running).
* :func:`merge`: this process changed a record (not yet written) that
  another process wrote meanwhile: which version of each field is kept.

Nothing here touches files or a tracker's state; the tracker passes in who
it is (``me``), the time on the lease clock (``now``) and how to tell that
a holder is known dead (``gone``).

:class:`Record` is the dict type of a record handed out by ``tracker[key]``:
what is assigned into it is checked at that line by the codec's one check
(:func:`tastypy.codec.encode_value`), as ``task[field] = value`` and a
result returned to ``run()`` are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from tastypy.codec import encode_value
from tastypy.errors import InvalidValueError

__all__ = [
    "ABORTED",
    "DEFAULTS",
    "DONE",
    "DONE_AT",
    "HOLDER",
    "LEASE_FIELDS",
    "LEASE_UNTIL",
    "NOBODY",
    "PRISTINE",
    "Record",
    "TRIES",
    "as_added",
    "complete",
    "is_record",
    "lease_runs",
    "may_run",
    "merge",
]

DONE: Final = "_done"
TRIES: Final = "_tries"
ABORTED: Final = "_aborted"
#: When the task was last done: seconds since the epoch on the lease clock
#: (set by ``mark_done`` and by an attempt that ends well).
DONE_AT: Final = "_done_at"
#: When the lease ends: seconds since the epoch, on the lease clock.
LEASE_UNTIL: Final = "_lease_until"
#: Who holds it: ``"host:pid"``.
HOLDER: Final = "_holder"

#: The fields every record has, with the value of a task never tried.
DEFAULTS: Final = ((DONE, False), (TRIES, 0), (ABORTED, False))
PRISTINE: Final = dict(DEFAULTS)

#: The fields of a lease; a record without them is free.
LEASE_FIELDS: Final = (LEASE_UNTIL, HOLDER)

#: Passed as ``me``: no holder is this one, so every live lease counts
#: (``claim`` does not hand out a task leased to its own process either).
NOBODY: Final[Any] = object()


def is_record(value: Any) -> bool:
    """Whether ``value`` is a dict as the tracker holds records: a plain
    dict, or a :class:`Record` handed out by ``tracker[key]``."""
    t = type(value)
    return t is dict or t is Record


def complete(rec: Any) -> bool:
    """Whether ``rec`` is a record with its three fields, ``_tries`` a
    non-negative int (else the tracker repairs it, or says what is wrong)."""
    if type(rec) is not dict and type(rec) is not Record:
        return False
    tries = rec.get(TRIES)
    return type(tries) is int and tries >= 0 and DONE in rec and ABORTED in rec


def lease_runs(rec: dict, me: Any, now: float, gone: Callable[[Any], bool]) -> bool:
    """Whether a lease in ``rec`` keeps ``me`` from the task at ``now``: it
    ends after ``now``, is not ``me``'s, and its holder is not known dead.
    A bump into the future (a lease without holder) keeps everyone off."""
    until = rec.get(LEASE_UNTIL)
    if type(until) not in (float, int) or until <= now:
        return False
    holder = rec.get(HOLDER)
    return holder != me and not gone(holder)


def may_run(
    rec: Any,
    max_tries: int,
    allow_aborted: bool = False,
    now: float | None = None,
    me: Any = NOBODY,
    gone: Callable[[Any], bool] | None = None,
    redo: float | None = None,
) -> bool:
    """The run rule: may the task of ``rec`` run now?

    Not when it is done, aborted (unless ``allow_aborted``) or tried
    ``max_tries`` times (0: no limit); nor, when ``now`` is given, while a
    lease of a live holder other than ``me`` runs (:func:`lease_runs`;
    ``me=NOBODY``: any live lease). Without ``now`` leases are not looked
    at: ``should_do`` and ``todo_keys`` say what is left to do, whoever
    does it. A record whose try count is not an int is not run (the
    tracker's methods then say what is wrong with it).

    ``redo`` (a tracker with ``redo_after``: that many seconds before now,
    on the lease clock) makes a done task due again: one done at or
    before ``redo`` (or with no ``_done_at``), or bumped (a lease field in
    a done record: only :meth:`bump` puts one there), runs again as a new
    round, whose tries count afresh (``max_tries`` does not stop it).
    None: done stays done.
    """
    if type(rec) is not dict and type(rec) is not Record:
        return False
    if rec.get(DONE):
        if redo is None:
            return False
        if LEASE_UNTIL not in rec:
            done_at = rec.get(DONE_AT)
            if type(done_at) in (float, int) and done_at > redo:
                return False
        again = True
    else:
        again = False
    if rec.get(ABORTED) and not allow_aborted:
        return False
    tries = rec.get(TRIES, 0)
    if type(tries) is not int or (max_tries and tries >= max_tries and not again):
        return False
    if now is None:
        return True
    return not lease_runs(rec, me, now, gone)  # type: ignore[arg-type]


def as_added(rec: Any, deleted_first: bool) -> bool:
    """Whether ``rec``, added by this process and not yet written, is still
    as added (read maybe, never changed), with no deletion of its key
    waiting to be written before it (``deleted_first``): it then has
    nothing of its own, and gives way whole to another process's record."""
    return rec == PRISTINE and not deleted_first


def merge(mine: dict, theirs: dict, me: Any, now: float, gone: Callable[[Any], bool]) -> dict:
    """The record to keep (and write) when this process changed ``mine``, not
    yet written, and another process wrote ``theirs`` meanwhile.

    Field by field:

    * ``_done`` is sticky: done in either version, done in the merge.
    * ``_aborted`` likewise: an abort is not undone by a merge (an
      ``unabort`` that races with another process's write of the task is
      lost: do it again).
    * ``_tries`` never goes down: the larger count (a try given back here
      while another process wrote the task stays counted).
    * ``_done_at`` is the later of the two times (when the task was last
      done, by either), kept whether or not the merge is done.
    * The lease (``_lease_until``, ``_holder``) belongs to whoever holds it:
      theirs while a lease of a live holder other than ``me`` runs in it,
      else ours.
    * Every other field (results, ``_error``, ``_started``...) comes whole
      from one version, not mixed: the done one if only one is done (the
      finished work, with its result); else theirs while another live
      holder's lease runs in it (a worker whose lease ran out writes
      nothing of its own over the attempt that took the task over); else
      ours, the later write.
    """
    held = lease_runs(theirs, me, now, gone)
    mine_done = bool(mine.get(DONE))
    theirs_done = bool(theirs.get(DONE))
    if mine_done != theirs_done:
        base = mine if mine_done else theirs
    else:
        base = theirs if held else mine
    merged = {field: value for field, value in base.items() if field not in LEASE_FIELDS}
    merged[DONE] = mine_done or theirs_done
    merged[ABORTED] = bool(mine.get(ABORTED)) or bool(theirs.get(ABORTED))
    counts = [t for t in (mine.get(TRIES), theirs.get(TRIES)) if type(t) is int]
    merged[TRIES] = max(counts) if counts else 0
    times = [t for t in (mine.get(DONE_AT), theirs.get(DONE_AT)) if type(t) in (float, int)]
    if times:
        merged[DONE_AT] = max(times)
    lease = theirs if held else mine
    for field in LEASE_FIELDS:
        if field in lease:
            merged[field] = lease[field]
    return merged


class Record(dict):
    """A task record as ``tracker[key]`` hands it out: a dict (equal to, and
    encoded by orjson and ``json`` as, the plain dict it holds) whose
    assignments are checked at the line that makes them, by the one check
    every value stored passes (:func:`tastypy.codec.encode_value`)::

        tracker[key]["result"] = float("nan")   # InvalidValueError, here

    Only the record's own fields are checked as they are set (``r[f] = v``,
    ``update``, ``setdefault``, ``|=``): a dict or list inside a field,
    changed in place, is checked when the attempt ends or at the next write,
    which refuses it naming the key. A copy (``dict(r)``, ``copy``, a
    pickle) is a plain dict.
    """

    __slots__ = ("_key",)

    def __init__(self, key: Any, fields: dict) -> None:
        dict.__init__(self, fields)
        self._key = key

    def __setitem__(self, field: Any, value: Any) -> None:
        if value is not None and type(value) is not bool:
            _check_field(self._key, field, value)
        dict.__setitem__(self, field, value)

    def setdefault(self, field: Any, default: Any = None) -> Any:
        if field not in self:
            self[field] = default
        return dict.__getitem__(self, field)

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        fields = dict(*args, **kwargs)
        for field, value in fields.items():
            if value is not None and type(value) is not bool:
                _check_field(self._key, field, value)
        dict.update(self, fields)

    def __ior__(self, other: Any) -> Record:  # type: ignore[override]
        self.update(other)
        return self

    def copy(self) -> dict:
        return dict(self)

    def __reduce__(self) -> tuple:
        return (dict, (dict(self),))


def _check_field(key: Any, field: Any, value: Any) -> None:
    """Refuse ``value`` for ``field`` of the record of ``key`` unless the
    codec stores it; the error names the key, the field and the type."""
    try:
        encode_value(key, value)
    except InvalidValueError as exc:
        raise InvalidValueError(
            f"the field {field!r} of the task {key!r} was not set "
            f"(tracker[{key!r}][{field!r}] = ...; the record is unchanged): {exc}"
        ) from None
