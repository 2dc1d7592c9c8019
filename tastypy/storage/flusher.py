"""fsync in the background, for a tracker's periodic durable points.

A tracker writes each transaction without fsync (it survives the death of
the process, in the page cache) and fsyncs every ``sync_at`` of them, so
that a power loss costs at most the last few. That fsync takes half a
millisecond on a local disk, as long as the thousand transactions before
it; nothing in the transaction needs to wait for it. So the periodic point
appends as any other transaction, and one thread per process then fsyncs
the journal while the tracker goes on. What it wrote is on disk a moment
later instead of at once: the window a power loss can take grows by one
fsync, never by more (the next point's request queues behind it).

An explicit ``sync()``, ``close()`` and a POD's syncs still fsync before
they return. A background fsync that fails is not forgotten: the store it
was for raises it at its next transaction (see :meth:`Store.transaction`),
as the fsync itself would have.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any

#: The queue of the current process's thread, and the process it belongs to
#: (a forked child starts its own: the parent's thread is not in it).
_queue: queue.SimpleQueue | None = None
_pid = -1
_start_lock = threading.Lock()


def submit(fd: int, sink: Any) -> None:
    """fsync and close ``fd`` (now owned by the thread) in the background,
    then pass ``sink.fault``'s point ``after-fsync`` (see
    :mod:`tastypy._faults`); on failure set ``sink.flush_error`` to the
    ``OSError``."""
    q = _queue if _pid == os.getpid() else _start()
    q.put((fd, sink))


def _start() -> queue.SimpleQueue:
    global _queue, _pid
    with _start_lock:
        if _pid != os.getpid():
            q: queue.SimpleQueue = queue.SimpleQueue()
            thread = threading.Thread(target=_run, args=(q,), name="tastypy-fsync", daemon=True)
            thread.start()
            _queue, _pid = q, os.getpid()
        return _queue  # type: ignore[return-value]


def _run(q: queue.SimpleQueue) -> None:
    while True:
        fd, sink = q.get()
        try:
            os.fsync(fd)
            sink.fault("after-fsync")
        except OSError as exc:
            sink.flush_error = exc
        finally:
            try:
                os.close(fd)
            except OSError:
                pass


def _after_fork_in_child() -> None:
    global _queue, _pid, _start_lock
    _queue, _pid = None, -1
    _start_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
