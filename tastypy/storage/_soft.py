"""The soft lock: the existence of a lock file, for locks between hosts.

Existence of ``tastypy.lock.held``, made by hard-linking a template of this
process (in ``tastypy.lock.d/``, holding a one-line JSON record of its
holder: host, boot, PID namespace, pid, process start time, since when,
lease, token) to that name; where hard links are refused, by exclusive
creation (``O_CREAT | O_EXCL``). Both succeed for exactly one process on NFS
(v3 and later), SMB, Lustre, GPFS, BeeGFS and FUSE, so this excludes
processes on every host. A holder refreshes the file's times every
``lease / 4`` seconds while it holds the lock (one daemon thread per process
does it). A waiter removes the file only when its holder is provably gone: a
process of this host that no longer runs (:mod:`tastypy._identity` judges),
or, for another host, a file that has not changed for a whole ``lease`` on
the waiter's own monotonic clock. ``docs/locks.md`` says why this is safe.

Why not ``filelock.SoftFileLock`` or ``StrictSoftFileLock``: neither ever
reclaims a lock left by a dead holder on NFS or SMB (SoftFileLock breaks a
stale marker only by an atomic rename-exchange, which those refuse;
StrictSoftFileLock never breaks one on its own), neither recovers one left by
a dead process on another host without trusting the wall clocks of two
machines, SoftFileLock writes its record after creating the file (a holder
killed in between names no one), their record has no room for "since when",
and taking and giving back a SoftFileLock costs some 250 µs against some
25 µs here.
"""

from __future__ import annotations

import atexit
import errno
import itertools
import logging
import os
import random
import threading
import time
import weakref
from typing import Any, Final, NamedTuple

import orjson

from tastypy import _exit, _identity
from tastypy.errors import LockTimeoutError, StorageError
from tastypy.storage import files, fsdetect, layout

__all__ = ["DEFAULT_LEASE", "SOFT_SUFFIX", "WORK_SUFFIX", "Holder", "SoftLock", "read_holder"]

log = logging.getLogger("tastypy")

#: Seconds a soft lock of another host must go unrefreshed before a waiter may
#: take it over. Its holder refreshes it four times per lease, so a live holder
#: misses the deadline only if it cannot run or reach the file for a whole
#: minute; a dead one costs the others at most this long.
DEFAULT_LEASE: Final = 60.0

#: Suffix of the soft lock's file, beside the posix lock file.
SOFT_SUFFIX: Final = ".held"
#: Suffix of the soft lock's work directory (templates, claims).
WORK_SUFFIX: Final = ".d"

_POLL_FIRST: Final = 0.00005
#: Waiting for a soft lock costs the file server a create per poll: poll more
#: gently, with jitter so that many waiters do not knock in step.
_SOFT_POLL_MAX: Final = 0.05
#: How often a waiter reads the soft lock's record to judge its holder.
_INSPECT_EVERY: Final = 0.1
_RECORD_LIMIT: Final = 4096
#: A template's record is padded with spaces to this size (JSON allows them).
_TEMPLATE_SIZE: Final = 1024
#: Files in the work directory untouched for this long are garbage.
_SWEEP_AGE: Final = 86400.0

#: Fairness (see ``SoftLock.acquire``): the want file's name in the work
#: directory; after how long a waiter writes it; how long its mtime counts as
#: fresh (a waiter touches it at every poll); after how long another waiter
#: removes it (its writer died); how long a process stands back for it.
_WANT: Final = "want"
_WANT_AFTER: Final = 0.02
_WANT_FRESH: Final = 3.0
_WANT_STALE: Final = 10.0
_STAND_BACK: Final = 0.05
_WANT_POLL_MAX: Final = 0.002

#: A tombstone (``broken.IDENT``) outlives every cached view of the lock file
#: it was left for by far after this many seconds; then it is swept.
_TOMBSTONE_AGE: Final = 60.0

#: See ``SoftLock._settle``: FUSE and GlusterFS keep attributes and names for
#: one second by default.
_CACHED_VIEW_SETTLE: Final = 2.5


def _caches(directory: str) -> bool:
    mount = fsdetect.find_mount(directory)
    return mount is not None and fsdetect.caches_sizes(mount.fstype)


#: link() errors that mean "no hard links here", so create the file instead.
_NO_LINKS: Final = frozenset(
    e
    for e in (
        errno.EPERM,
        errno.EACCES,
        errno.EXDEV,
        errno.EMLINK,
        errno.ENOSYS,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.EOPNOTSUPP,
    )
)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
_READ: Final = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)


class Holder(NamedTuple):
    """What a soft lock's file says about the process holding it."""

    host: str
    pid: int
    start: int | None
    since: float
    lease: float
    token: str
    boot: str
    pidns: int
    file: str

    def local(self) -> bool:
        """Whether the holder runs on this host, boot and PID namespace, so that
        its pid can be checked here."""
        return _identity.shares_pids(self.host, _identity.kernel_id(self.boot, self.pidns))

    def alive(self) -> bool:
        """For a local holder: whether its process still runs."""
        return _identity.pid_alive(self.pid, self.start)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        age = max(0.0, time.time() - self.since)
        where = "this host" if self.local() else self.host
        return f"pid {self.pid} on {where}, since {since} ({age:.0f} s ago by this host's clock)"


def _record(lease: float, file: str = "") -> tuple[bytes, str]:
    """The line a soft lock's file (or a claim to break one) holds, and its
    token (unique to this acquisition)."""
    me = _identity.me()
    token = f"{me.token}-{next(me.count)}"
    line = orjson.dumps(
        {
            "host": me.host,
            "pid": me.pid,
            "start": me.start,
            "since": round(time.time(), 3),
            "lease": lease,
            "token": token,
            "boot": me.boot,
            "pidns": me.pidns,
            "file": file,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )
    return line, token


def _parse_holder(data: bytes) -> Holder | None:
    try:
        rec = orjson.loads(data)
        return Holder(
            str(rec["host"]),
            int(rec["pid"]),
            None if rec.get("start") is None else int(rec["start"]),
            float(rec["since"]),
            float(rec["lease"]),
            str(rec["token"]),
            str(rec.get("boot", "")),
            int(rec.get("pidns", 0)),
            str(rec.get("file", "")),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _read_marker(path: str) -> tuple[Holder | None, os.stat_result] | None:
    """The holder named by the file at ``path`` and the file's status, or None
    if there is no file. Opening it (rather than ``stat``) makes an NFS client
    fetch fresh attributes (close-to-open consistency)."""
    try:
        fd = os.open(path, _READ)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, _RECORD_LIMIT)
    finally:
        os.close(fd)
    return _parse_holder(data), st


def read_holder(directory_or_lock: str) -> Holder | None:
    """Who holds the soft lock of a POD directory (or of a lock file path), or
    None if nobody does.

    >>> read_holder("/nonexistent") is None
    True
    """
    path = directory_or_lock
    if os.path.isdir(path):
        path = os.path.join(path, "tastypy.lock")
    found = _read_marker(path + SOFT_SUFFIX)
    return None if found is None else found[0]


# -- the heartbeat, and this process's templates ---------------------------------

_held: dict[int, SoftLock] = {}
_registry = threading.Lock()
_wake = threading.Event()
_beat_pid = -1
_beat_every = DEFAULT_LEASE / 4
#: Template files of this process (path -> template), removed at exit.
_templates: dict[str, _Template] = {}
#: Held while a template's descriptor is used or closed: a descriptor closed
#: by one thread may be another file's the next instant.
_template_guard = threading.Lock()
#: Set once the exit cleanup removed this process's templates: a lock taken
#: later (a sync from a later exit handler) creates its lock file instead of
#: leaving a new template behind.
_cleaned_up = False


def _reset_after_fork() -> None:
    # The heartbeat thread does not exist in a child, the registry lock may
    # have been held by it at the fork, and the parent's templates are the
    # parent's to remove.
    global _registry, _wake, _beat_pid, _template_guard, _cleaned_up
    _registry = threading.Lock()
    _wake = threading.Event()
    _template_guard = threading.Lock()
    _held.clear()
    _templates.clear()
    _beat_pid = -1
    _cleaned_up = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class _Template:
    """A template file of this process and the descriptor it is written
    through. Whoever removes it (the lock's close, its finalizer, the exit
    cleanup) marks it removed, and every use checks the mark under
    ``_template_guard``: once closed, its descriptor's number may be another
    file's, so it is never written through, touched or closed again."""

    __slots__ = ("path", "fd", "pid", "ino", "length")

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.pid = os.getpid()
        self.ino = os.fstat(fd).st_ino
        #: Bytes of the record last written.
        self.length = 0

    def usable(self) -> bool:
        """Not removed, and this process's (not a forked parent's)."""
        return self.fd >= 0 and self.pid == os.getpid()

    def write(self, record: bytes) -> bool:
        """Write ``record`` over the template's; False if it was removed."""
        with _template_guard:
            if not self.usable():
                return False
            os.pwrite(self.fd, record, 0)
            if len(record) < self.length:
                os.ftruncate(self.fd, len(record))
            self.length = len(record)
            return True

    def touch(self) -> bool:
        """Refresh the template's times; False if it was removed."""
        with _template_guard:
            if not self.usable():
                return False
            os.utime(self.fd)
            return True

    def remove(self) -> None:
        """Delete the file and close the descriptor, once; a forked child's
        copy is left alone (the template is the parent's)."""
        with _template_guard:
            if not self.usable():
                return
            fd, self.fd = self.fd, -1
            _templates.pop(self.path, None)
            try:
                os.unlink(self.path)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass


@atexit.register
def _remove_templates() -> None:
    global _cleaned_up
    _cleaned_up = True
    for template in list(_templates.values()):
        template.remove()


def _heartbeat() -> None:
    while True:
        _wake.wait(_beat_every)
        _wake.clear()
        with _registry:
            for lock in list(_held.values()):
                lock._refresh()


def _register(lock: SoftLock) -> None:
    global _beat_pid, _beat_every
    with _registry:
        _held[id(lock)] = lock
    if lock.lease / 4 < _beat_every:
        _beat_every = lock.lease / 4
        _wake.set()
    if _beat_pid != os.getpid():
        _beat_pid = os.getpid()
        threading.Thread(target=_heartbeat, name="tastypy-lock-heartbeat", daemon=True).start()


# -- the soft lock ---------------------------------------------------------------


def _leave_tombstone(path: str) -> None:
    try:
        os.close(os.open(path, _CREATE, 0o644))
    except OSError:
        pass  # one there already, or none can be made: breakers fall back on the claim


def _remove_if_ours(path: str, token: bytes) -> None:
    try:
        # Read as every file of a POD directory is (a FIFO must not block).
        if files.read_regular(path, 0, len(token) + 1) != token:
            return
        os.unlink(path)
    except OSError:
        pass


def _remove_if_older(path: str, age: float) -> None:
    try:
        if time.time() - os.stat(path).st_mtime > age:
            os.unlink(path)
    except OSError:
        pass


def _link_back(aside: str, path: str) -> None:
    """Put a live holder's lock file back under the lock's name. A network
    client may answer ESTALE for a name it just renamed; ask again."""
    for attempt in range(5):
        try:
            os.link(aside, path)
            return
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))


def _stale_ident(holder: Holder | None, st: os.stat_result) -> str:
    """The name a lock file judged stale is claimed and tombstoned by: its
    holder's token, or, for a file that holds no record, its inode and mtime."""
    return holder.token if holder is not None else f"{st.st_ino:x}-{st.st_mtime_ns:x}"


def _is_judged(
    found: tuple[Holder | None, os.stat_result] | None,
    holder: Holder | None,
    st: os.stat_result,
) -> bool:
    """Whether ``found`` (the marker read now) is still the lock file judged
    stale from ``holder`` and ``st``, and not one a new holder made since."""
    if found is None:
        return False
    h, s = found
    if holder is not None:
        return h is not None and h.token == holder.token
    return h is None and (s.st_ino, s.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)


def _whose(holder: Holder | None) -> str:
    """Whose stale lock was removed, and why it was judged stale, for the log."""
    if holder is None:
        return "a holder that never wrote its record"
    if holder.local():
        return f"{holder.describe()}, whose process is gone"
    return f"{holder.describe()}, unrefreshed for a lease"


class SoftLock:
    """Exclusive creation of ``path``, with the recovery of stale files.

    The lock file is made by hard-linking a *template* of this process (a
    file in ``workdir`` into which the record was written just before) to
    ``path``: ``link`` fails if ``path`` exists, and the lock file holds its
    whole record from the instant it appears, so a holder killed at any
    instant leaves a file that names it. Where hard links are refused (some
    SMB shares), the lock file is created with ``O_EXCL`` and then written.

    Not re-entrant and not shared between threads: :class:`DirectoryLock`
    wraps it.
    """

    def __init__(self, path: str, lease: float = DEFAULT_LEASE, workdir: str | None = None):
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, got {lease!r}")
        self.path = path
        self.lease = float(lease)
        #: Templates, claims to break a stale lock and files set aside.
        self.workdir = workdir or path + ".d"
        self._linking = True
        self._template: _Template | None = None
        #: (inode, ctime) and token of our file while we hold the lock; the
        #: ctime is None when the file is our template (its inode cannot be
        #: reused while the template exists).
        self._identity: tuple[int, int | None] | None = None
        self._token = ""
        #: (status key, first seen, last seen) of the file a waiter watches.
        self._seen: list[Any] | None = None
        self._inspected = 0.0
        self._claims_seen: dict[tuple, float] = {}
        #: How long a waiter must see the same lock file before it judges its
        #: holder gone: a caching mount may show a removed file for a second.
        self._settle = _CACHED_VIEW_SETTLE if _caches(os.path.dirname(path)) else 0.0

    # the holder's side

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting."""
        if self._linking:
            got = self._try_link()
            if got is not None:
                if got:
                    _register(self)
                return got
        got = self._try_create()
        if got:
            _register(self)
        return got

    def acquire(self, timeout: float | None) -> None:
        """Take the lock, waiting at most ``timeout`` seconds (None: for ever)
        and recovering it from a holder that is provably gone.

        Fairness: a waiter that has waited ``_WANT_AFTER`` seconds says so
        with a *want* file; a process about to take the lock again first
        stands back while another process's want file is fresh. Without it,
        two processes taking turns on one host kept the lock held almost all
        the time, and the waiters of another mount, polling, found it free
        so rarely that they waited for seconds (GlusterFS rig: one host's
        workers did nothing in most runs, and leases ran out meanwhile)."""
        want = os.path.join(self.workdir, _WANT)
        wanted = False
        try:
            self._stand_back(want)
            if self.try_acquire():
                return
            began = time.monotonic()
            deadline = float("inf") if timeout is None else began + timeout
            pause = _POLL_FIRST
            while True:
                now = time.monotonic()
                last = now > deadline
                self.inspect(force=last)
                if now - began > _WANT_AFTER:
                    wanted = self._want(want, wanted)
                if self.try_acquire():
                    return
                if last:
                    self._timed_out(timeout)
                _exit.take_interrupt()  # a Ctrl-C put off by the sync
                time.sleep(pause * random.uniform(0.5, 1.5))
                # A waiter others stand back for looks often, to find the gap.
                pause = min(pause * 2, _WANT_POLL_MAX if wanted else _SOFT_POLL_MAX)
        except LockTimeoutError:
            raise
        except OSError as exc:
            directory = os.path.dirname(self.path)
            if isinstance(exc, FileNotFoundError) and not os.path.isdir(directory):
                raise StorageError(
                    f"the POD directory {directory} has disappeared (deleted, moved or renamed "
                    "while open): its lock cannot be taken. Nothing was written; the data in "
                    "memory is intact: save it elsewhere, e.g. with pod.to_dict(), or open the "
                    "POD where it is now."
                ) from exc
            if isinstance(exc, files.NotRegularFile):  # a name planted in its work directory
                raise StorageError(
                    f"cannot create the lock file {self.path}: {exc.filename}: {exc.strerror}."
                ) from exc
            raise StorageError(
                f"cannot create the lock file {self.path}: {exc.strerror or exc}. Check that "
                "the POD directory is writable by you."
            ) from exc
        finally:
            if wanted:
                _remove_if_ours(want, self._want_token())

    def _want_token(self) -> bytes:
        return f"{_identity.me().token}-{id(self):x}".encode()

    def _want(self, want: str, wanted: bool) -> bool:
        """Say (again) that this waiter wants the lock; whether it is ours."""
        if wanted:
            try:
                os.utime(want)
            except OSError:
                return False
            return True
        try:
            # The work directory must be one (a link planted in its place
            # would have the want file made elsewhere).
            files.check_directory(self.workdir)
            fd = os.open(want, _CREATE, 0o644)
        except FileExistsError:
            _remove_if_older(want, _WANT_STALE)
            return False
        except FileNotFoundError:
            # A lock taken by O_EXCL creation makes no template, so nothing
            # may have made the work directory yet.
            layout.make_dir(self.workdir)
            return False
        try:
            os.write(fd, self._want_token())
        finally:
            os.close(fd)
        return True

    def _stand_back(self, want: str) -> None:
        """Before taking the lock again: while another process's want file
        is fresh, give it up to ``_STAND_BACK`` seconds to take the lock."""
        try:
            st = os.stat(want)
        except OSError:
            return
        if time.time() - st.st_mtime > _WANT_FRESH:
            return
        try:
            token = self._want_token()
            if files.read_regular(want, 0, len(token) + 1) == token:
                return
        except OSError:
            return
        until = time.monotonic() + _STAND_BACK
        while time.monotonic() < until and os.path.lexists(want):
            time.sleep(_POLL_FIRST * 4)

    def _timed_out(self, timeout: float | None) -> None:
        try:
            found = _read_marker(self.path)
        except OSError:
            found = None
        holder = None if found is None else found[0]
        if holder is None:
            who = "its holder has not written its record"
        elif holder.local():
            who = f"it is held by {holder.describe()}, which is still running"
        else:
            who = (
                f"it is held by {holder.describe()}, which keeps refreshing it; it is taken "
                f"over only once it has gone unrefreshed for {max(self.lease, holder.lease):.0f} s"
            )
        err = LockTimeoutError(
            f"could not take the lock {self.path} within {timeout} s: {who}. Wait for "
            "it to finish, stop it if it is stuck, or pass a larger lock_timeout. If you are "
            f"sure no process uses this POD any more, delete {self.path}."
        )
        err.lock_path = self.path  # type: ignore[attr-defined]
        err.holder = holder  # type: ignore[attr-defined]
        raise err

    def _template_file(self) -> _Template | None:
        """This process's template, made if need be; None once the exit
        cleanup has run (a template made then would outlive the process)."""
        template = self._template
        if template is not None and template.usable():
            return template
        if _cleaned_up:
            return None
        me = _identity.me()
        first = template is None
        layout.make_dir(self.workdir)
        name = f"{me.key}.{me.pid}.{me.token}{next(me.count)}"
        path = os.path.join(self.workdir, name)
        template = self._template = _Template(path, os.open(path, _CREATE, 0o644))
        _templates[path] = template
        # A lock dropped without close() (a POD never closed) takes its
        # template with it; at exit, _remove_templates does.
        self._finalizer = weakref.finalize(self, template.remove)
        self._finalizer.atexit = False
        if first:
            self._sweep()
        return template

    def _forget_template(self) -> None:
        if self._template is not None:
            self._finalizer.detach()
            self._template.remove()
        self._template = None

    def _try_link(self) -> bool | None:
        """True/False as :meth:`try_acquire`; None where it cannot link."""
        for _ in range(2):
            try:
                template = self._template_file()
                if template is None:
                    return None
                record, token = _record(self.lease, os.path.basename(template.path))
                # Always the same length, so that one pwrite replaces the
                # whole record: a waiter that opened the file just before we
                # released it may read it while we write the next record.
                if len(record) < _TEMPLATE_SIZE:
                    record = record[:-1] + b" " * (_TEMPLATE_SIZE - len(record)) + b"\n"
                if not template.write(record):
                    continue  # removed meanwhile (the exit cleanup)
                os.link(template.path, self.path)
            except FileExistsError:
                return False
            except OSError as exc:
                if exc.errno in _NO_LINKS:
                    # No hard links here (or no right to make a work
                    # directory): create the lock file directly instead.
                    self._linking = False
                    self._forget_template()
                    return None
                if exc.errno in (errno.ENOENT, errno.ESTALE):
                    # Our template was removed (swept as garbage by another
                    # process, or the work directory was): make another.
                    self._forget_template()
                    continue
                raise
            self._token = token
            self._identity = (template.ino, None)
            return True
        return None

    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, _CREATE, 0o644)
        except FileExistsError:
            return False
        try:
            record, self._token = _record(self.lease)
            os.write(fd, record)
            st = os.fstat(fd)
            self._identity = (st.st_ino, st.st_ctime_ns)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(self.path)
            except OSError:
                pass
            raise
        os.close(fd)
        return True

    def _still_mine(self) -> bool:
        if self._identity is None:
            return False
        ino, ctime = self._identity
        try:
            st = os.lstat(self.path)
            if st.st_ino == ino and (ctime is None or st.st_ctime_ns == ctime):
                return True
            # A file system may change the times after our write (NFS sets
            # them when the write reaches the server), and a new file may get
            # the inode number of a removed one: the record decides.
            found = _read_marker(self.path)
        except FileNotFoundError:
            return False
        if found is None or found[0] is None or found[0].token != self._token:
            return False
        if ctime is not None:
            self._identity = (found[1].st_ino, found[1].st_ctime_ns)
        return True

    def release(self) -> None:
        with _registry:
            _held.pop(id(self), None)
            if not self._still_mine():
                log.error(
                    "tastypy: the lock %s was taken from this process while it held it "
                    "(it could not refresh it for %.0f s); writes made meanwhile may have "
                    "overlapped another process's",
                    self.path,
                    self.lease,
                )
                self._identity = None
                return
            try:
                os.unlink(self.path)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
                # Renamed aside by a breaker at this instant: the lock was
                # taken from us after all, as above.
                log.error(
                    "tastypy: the lock %s was taken from this process while it held it "
                    "(a waiter judged it stale); writes made meanwhile may have overlapped "
                    "another process's",
                    self.path,
                )
            self._identity = None

    def close(self) -> None:
        """Remove this process's template (made again if the lock is taken again)."""
        self._forget_template()

    def _refresh(self) -> None:
        # Called by the heartbeat with the registry lock held, so never at
        # the same time as release().
        try:
            linked = self._identity is not None and self._identity[1] is None
            if linked and self._template is not None and self._template.touch():
                return  # our template is the lock file
            if self._still_mine():
                os.utime(self.path)
                st = os.lstat(self.path)
                self._identity = (st.st_ino, st.st_ctime_ns)
        except OSError as exc:
            log.warning("tastypy: could not refresh the lock %s: %s", self.path, exc)

    def _sweep(self) -> None:
        """Remove what dead processes left in the work directory: templates
        of processes of this host that are gone, and anything untouched for a
        day (a template is rewritten at every acquisition and refreshed while
        held, so only a process idle for a day loses its own, and makes
        another)."""
        me = _identity.me()
        now = time.time()
        old = now - _SWEEP_AGE
        try:
            entries = list(os.scandir(self.workdir))
        except OSError:
            return
        for entry in entries:
            parts = entry.name.split(".")
            try:
                if len(parts) == 3 and parts[0] == me.key and me.boot:
                    gone = parts[1].isdigit() and not _identity.pid_alive(int(parts[1]))
                elif parts[0] == "broken":
                    mtime = entry.stat(follow_symlinks=False).st_mtime
                    gone = mtime < now - _TOMBSTONE_AGE
                else:
                    gone = entry.stat(follow_symlinks=False).st_mtime < old
                if gone and (self._template is None or entry.path != self._template.path):
                    os.unlink(entry.path)
            except OSError:
                pass

    # the waiter's side

    def inspect(self, force: bool = False) -> tuple[Holder | None, bool] | None:
        """Look at the lock file; remove it if its holder is provably gone.

        Returns None if the lock looks free, else (holder, stale) where holder
        is None for a file that does not hold a record (yet). At most every
        ``_INSPECT_EVERY`` seconds unless ``force``; in between, (None, False).
        """
        now = time.monotonic()
        if not force and now - self._inspected < min(_INSPECT_EVERY, self.lease / 10):
            return None, False
        self._inspected = now
        try:
            found = _read_marker(self.path)
        except OSError:
            self._seen = None
            return None, False
        if found is None:
            self._seen = None
            return None
        holder, st = found
        key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        seen = self._seen
        # A watch counts only if it was continuous: after a gap (this process
        # stopped, the file server hung) the file may have been refreshed and
        # the refresh hidden from us by the same hang.
        if seen is None or seen[0] != key or now - seen[2] > self.lease / 4:
            seen = self._seen = [key, now, now]
        else:
            seen[2] = now
        if holder is not None and holder.local():
            # On a mount that caches what it shows of a file, the record read
            # may be of a file removed up to a second ago, the lock having
            # been taken since: judge only a view that held still longer.
            stale = not holder.alive() and now - seen[1] >= self._settle
        else:
            lease = self.lease if holder is None else max(self.lease, holder.lease)
            stale = now - seen[1] >= lease
        if stale:
            self._break(holder, st)
        return holder, stale

    def _break(self, holder: Holder | None, st: os.stat_result) -> None:
        """Remove the stale lock file judged from ``holder`` and ``st``, and
        nothing else, even with other waiters doing the same at once.

        The right to remove one given lock file is itself taken by exclusive
        creation of a claim named after it; under the claim we check that the
        file is still the one judged, rename it aside and check again. Only
        the claim's holder and the file's own (gone) holder can remove it, so
        what the rename takes is the judged file.

        A breaker that succeeded leaves a tombstone, ``broken.IDENT``, before
        it gives up its claim: a client of a caching filesystem (GlusterFS,
        FUSE) may go on showing the removed file under the lock's name, with
        its old record, for a second, and without the tombstone a second
        breaker would judge it again and rename aside the live lock of the
        process that took it since.
        """
        ident = _stale_ident(holder, st)
        claim = self._claim(ident)
        if claim is None:
            return
        try:
            if os.path.lexists(self._tombstone(ident)):
                return
            if not _is_judged(_read_marker(self.path), holder, st):
                return
            self._move_aside(holder, st, ident, claim)
        except OSError as exc:
            log.warning("tastypy: could not remove the stale lock %s: %s", self.path, exc)
        finally:
            try:
                os.unlink(claim)
            except OSError:
                pass

    def _tombstone(self, ident: str) -> str:
        """Where the tombstone for the lock file ``ident`` lies (see :meth:`_break`)."""
        return os.path.join(self.workdir, f"broken.{ident}")

    def _move_aside(
        self, holder: Holder | None, st: os.stat_result, ident: str, claim: str
    ) -> None:
        """Under the claim, rename the lock file aside and check that what the
        rename took is the file judged: then it is gone for good, else its
        holder came back and a new holder took the lock, which is put back."""
        me = _identity.me()
        aside = os.path.join(self.workdir, f"aside.{me.token}{next(me.count)}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if _is_judged(_read_marker(aside), holder, st):
                self._broken(holder, ident, claim)
            else:
                # Its holder came back to life and a new holder took the
                # lock meanwhile: put the new one back (link never
                # replaces a file another waiter created since).
                try:
                    _link_back(aside, self.path)
                except FileExistsError:
                    log.error(
                        "tastypy: two processes may have held the lock %s at once: "
                        "a holder judged stale came back",
                        self.path,
                    )
        finally:
            os.unlink(aside)

    def _broken(self, holder: Holder | None, ident: str, claim: str) -> None:
        """What follows the removal of a stale lock file, before the claim is
        given up: the tombstone (see :meth:`_break`), a fresh watch, and the
        gone holder's template and dead breakers' claims swept."""
        log.warning("tastypy: removed the stale lock %s of %s", self.path, _whose(holder))
        _leave_tombstone(self._tombstone(ident))
        self._seen = None
        self._claims_seen.clear()
        if holder is not None and holder.file and "/" not in holder.file:
            try:
                os.unlink(os.path.join(self.workdir, holder.file))
            except OSError:
                pass
        self._sweep_claims(ident, keep=claim)

    def _claim(self, ident: str) -> str | None:
        """Create the claim to remove the lock file ``ident``: the first free
        generation after claims whose holders are provably gone."""
        record, _ = _record(self.lease)
        layout.make_dir(self.workdir)
        for generation in itertools.count():
            claim = os.path.join(self.workdir, f"break.{ident}.{generation}")
            try:
                fd = os.open(claim, _CREATE, 0o644)
            except FileExistsError:
                try:
                    found = _read_marker(claim)
                except OSError:
                    return None
                if found is None:
                    return None  # its breaker just finished: look again later
                other, st = found
                if other is not None and other.local():
                    if other.alive():
                        return None
                    continue
                # A claim lives for milliseconds; one seen unchanged for a
                # lease belongs to a breaker that died (or lost the file).
                key = (claim, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
                first = self._claims_seen.setdefault(key, time.monotonic())
                if time.monotonic() - first < self.lease:
                    return None
                continue
            try:
                os.write(fd, record)
            finally:
                os.close(fd)
            return claim
        return None  # pragma: no cover - itertools.count() does not end

    def _sweep_claims(self, ident: str, keep: str) -> None:
        # Claims of breakers that died: useless once the file they were for is
        # gone, since its token never comes back.
        prefix = f"break.{ident}."
        try:
            names = os.listdir(self.workdir)
        except OSError:
            return
        for name in names:
            full = os.path.join(self.workdir, name)
            if name.startswith(prefix) and full != keep:
                try:
                    os.unlink(full)
                except OSError:
                    pass
