"""The progress tracker: :class:`ProgressTracker` (``Tracker``), a POD of
task records with tries, leases, counters and crash-safe try loops.

One module per responsibility, so a reader finds a behaviour by its name
(``docs/design.md``, "The tracker's modules"):

* ``core``: the class, put together from the mixins below; opening,
  closing, the settings, the hooks of the POD, the mapping.
* ``backlog``: others' records filed by key, taken in when needed.
* ``merging``: others' changes taken in, merged with ours where both
  changed a record; records added here give way.
* ``transact``: the one transaction (take in, decide, append under the
  lock), its quick and ordinary routes, the lease clock.
* ``counters``: done, tried, aborted counts; ``num_*``, ``percent_*``,
  ``stats``.
* ``marks``: adding tasks, marking them done, aborted, tried.
* ``trying``: ``try_it``, one task decided, counted and leased.
* ``leases``: ``claim`` in order (and its ``peek``), ``release``,
  ``renew``, ``bump``, ``end_leases``, ``lease_info``, ``ages``, and the
  heartbeat's round.
* ``heartbeat``: the thread that renews this process's leases while it lives.
* ``settings``: ``max_tries``, the lease and ``redo_after``, stored with
  the tracker.
* ``attempts``: ``attempts``, ``attempt``, ``Task``, ``run``, progress;
  an attempt's captured log (through :mod:`tastypy.capture`).
* ``taskfiles``: a task's own files, ``storage`` and ``paths``.
* ``fetching``: ``fetch``, a task's result computed once (and
  ``compute_once``, which ``tastypy.memoize`` uses too).
* ``compat``: the rest of the 0.0.3 API (``should_*``, the iterators).

The record fields, the run rule and the merge are in
:mod:`tastypy.records`.
"""

from tastypy.tracker.attempts import Task
from tastypy.tracker.core import DEFAULT_LEASE, ProgressTracker, Tracker
from tastypy.tracker.leases import LeaseInfo

__all__ = ["ProgressTracker", "Tracker", "Task", "LeaseInfo", "DEFAULT_LEASE"]

# Named as before the split (reprs, pickles, the API docs): where users import them from.
for _public in (ProgressTracker, Task, LeaseInfo):
    _public.__module__ = __name__
del _public
