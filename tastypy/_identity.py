"""Who this process is, and whether a process another one recorded still runs.

Lease records (``_holder``) and soft-lock files name the process that holds
them, so that others can tell a live holder from a dead one. A pid means
something only to a process of the same kernel boot and the same PID
namespace: two containers may share a host name but not their pids, and a
host name outlives a reboot. So a holder is judged by its pid only when it
was recorded on this host, this boot and this PID namespace, and only where
the boot can be told (Linux). In every other case, and whenever in doubt, it
counts as alive: its lease expires, or its lock goes unrefreshed, as for a
process of another host.

This module is a leaf: it imports nothing of tastypy.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import socket
from typing import Any, Final

__all__ = [
    "Me",
    "holder_gone",
    "host_key",
    "kernel_id",
    "me",
    "pid_alive",
    "proc_stat",
    "shares_pids",
]

#: The name of this host in lease records; ``TASTYPY_HOST`` overrides it
#: where host names must be told apart by hand (or one host should look
#: like several, as in tests).
LEASE_HOST: Final = os.environ.get("TASTYPY_HOST") or socket.gethostname()

#: Hex digits of a kernel id (boot and PID namespace) in a lease holder.
_KERNEL_DIGITS: Final = 12


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) of a process, from
    ``/proc``; None where there is no such process or no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fixed
    # fields start after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode("ascii", "replace"), int(fields[19])
    except (IndexError, ValueError):
        return None


def host_key(host: str, boot: str, pidns: int) -> str:
    """A short name for (host, boot, PID namespace), as soft-lock templates
    are named."""
    return hashlib.sha256(f"{host}\0{boot}\0{pidns}".encode()).hexdigest()[:12]


def kernel_id(boot: str, pidns: int) -> str:
    """A short name for the boot and PID namespace in which pids are given
    out; empty where the boot cannot be told (not Linux), since then nobody
    can know whether a pid recorded before means the same process now."""
    if not boot:
        return ""
    return hashlib.sha256(f"{boot}\0{pidns}".encode()).hexdigest()[:_KERNEL_DIGITS]


class Me:
    """This process, as lease records and soft-lock files state it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.boot = _read_text("/proc/sys/kernel/random/boot_id")
        self.pidns = _pid_namespace()
        self.kernel = kernel_id(self.boot, self.pidns)
        #: Names of this host a record may hold: its own, and the one it
        #: gives in lease records.
        self.names = frozenset((self.host, LEASE_HOST))
        self.key = host_key(self.host, self.boot, self.pidns)
        stat = proc_stat(self.pid)
        self.start = stat[1] if stat else None
        #: Unique to this process: soft-lock tokens and file names start so.
        self.token = os.urandom(6).hex()
        self.count = itertools.count()
        #: How lease records name this process: ``host:pid/kernel`` (just
        #: ``host:pid`` where the kernel cannot be told).
        self.holder = f"{LEASE_HOST}:{self.pid}" + (f"/{self.kernel}" if self.kernel else "")


_me: Me | None = None


def me() -> Me:
    """This process (made again in a forked child, on its first call there)."""
    global _me
    found = _me
    if found is None or found.pid != os.getpid():
        found = _me = Me()
    return found


def shares_pids(host: str, kernel: str) -> bool:
    """Whether a process recorded as running on ``host`` with ``kernel``
    (:func:`kernel_id` of its boot and PID namespace) got its pid from the
    same kernel and PID namespace as this process, so that its pid can be
    checked here. The one rule every judge of a holder asks."""
    mine = me()
    return bool(mine.kernel) and kernel == mine.kernel and host in mine.names


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether a process of this PID namespace with ``pid`` (and, if known,
    started at ``start``) still runs; a zombie or a recycled pid does not
    count."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return True
    stat = proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid answered, so trust it
    state, started = stat
    if state in ("Z", "X", "x"):
        return False
    return start is None or started == start


def holder_gone(holder: Any) -> bool:
    """Whether the lease holder ``host:pid/kernel`` is provably gone: a
    process of this host, boot and PID namespace that no longer runs. Then
    its leases are void at once, not at expiry. This process, a holder
    written by a tastypy that did not record the kernel (``host:pid``), and
    anything unreadable count as alive."""
    if type(holder) is not str:
        return False
    host, sep, rest = holder.rpartition(":")
    pid, slash, kernel = rest.partition("/")
    if not sep or not slash or not shares_pids(host, kernel):
        return False
    try:
        number = int(pid)
    except ValueError:
        return False
    return number > 0 and not pid_alive(number)
