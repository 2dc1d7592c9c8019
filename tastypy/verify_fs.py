"""``tastypy verify-fs DIR``: does locking work in this directory?

Several processes take the directory lock in turn, as PODs do, and under it
each one:

* reads a counter file (opened afresh), and writes it back plus one;
* writes a key into a shared POD and syncs it;
* notes the value it read and when it held the lock (this host's monotonic
  clock, which every process of one host shares).

Then the notes are checked:

exclusion
    no two processes of one host held the lock at overlapping times;
visibility
    each holder read the counter its predecessor wrote (never an older value);
no lost updates
    the counter equals the number of holds, no value was read twice, and the
    POD holds every key with its value.

To check across hosts, start it at the same time on two hosts with the same
``--session NAME`` and ``--seconds``: they share the counter and the POD, and
each host's report covers every hold noted so far (the one that finishes last
sees them all). Lost updates and values read twice then catch two hosts
holding the lock at once.

The exit status is 0 when everything held for every lock mode tried.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Final, Sequence, TextIO

import orjson

import tastypy
from tastypy.storage import fsdetect
from tastypy.storage.locks import DirectoryLock

__all__ = ["ModeReport", "verify"]

_WORKSPACE_PREFIX: Final = "tastypy-verify-fs-"


@dataclass
class ModeReport:
    """What one lock mode did in the directory."""

    mode: str
    reason: str
    processes: int
    holds: int = 0
    seconds: float = 0.0
    counter: int = 0
    overlaps: int = 0
    stale_reads: int = 0
    read_twice: int = 0
    lost: int = 0
    pod_missing: int = 0
    hosts: int = 1
    #: Whether flock excludes every process that can reach the directory.
    trusted: bool = True
    errors: list[str] = field(default_factory=list)

    @property
    def exclusion(self) -> bool:
        return self.overlaps == 0 and self.read_twice == 0 and self.lost == 0

    @property
    def visibility(self) -> bool:
        return self.stale_reads == 0 and self.pod_missing == 0

    @property
    def ok(self) -> bool:
        return self.exclusion and self.visibility and not self.errors and self.holds > 0

    def __str__(self) -> str:
        def mark(good: bool) -> str:
            return "held" if good else "FAILED"

        rate = self.holds / self.seconds if self.seconds else 0.0
        lines = [
            f"lock {self.mode!r}: {self.reason}",
            f"  {self.holds} holds noted ({self.processes} processes started here"
            + (f"; notes from {self.hosts} hosts" if self.hosts > 1 else "")
            + f") in {self.seconds:.1f} s ({rate:.0f} holds/s)",
            f"  exclusion:  {mark(self.exclusion)} ({self.overlaps} overlapping holds on one "
            f"host, {self.read_twice} counter values read twice, {self.lost} updates lost; "
            f"counter {self.counter})",
            f"  visibility: {mark(self.visibility)} ({self.stale_reads} holders read an older "
            f"counter than their predecessor wrote, {self.pod_missing} POD keys missing or wrong)",
        ]
        lines += [f"  error: {e}" for e in self.errors]
        if self.mode == "posix" and self.ok and not self.trusted:
            lines.append(
                "  note: flock held among the processes of this host only. On this filesystem "
                "it may not exclude processes of other hosts: run verify-fs on two hosts at once "
                "with the same --session to see, or keep lock='auto' (soft here)."
            )
        return "\n".join(lines)


# -- the worker (a child process) ---------------------------------------------------


def _worker(workdir: str, mode: str, worker: str, rounds: int, seconds: float) -> None:
    lock = DirectoryLock(os.path.join(workdir, "tastypy.lock"), mode, timeout=600)
    counter = os.path.join(workdir, "counter")
    pod = tastypy.POD(os.path.join(workdir, "pod"), lock=mode, sync_at=1_000_000)
    notes = open(os.path.join(workdir, f"seen-{worker}.jsonl"), "ab")  # noqa: SIM115
    try:
        boot = ""
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                boot = f.read().strip()
        except OSError:
            pass
        notes.write(orjson.dumps({"host": socket.gethostname(), "boot": boot}) + b"\n")
        notes.flush()
        open(os.path.join(workdir, f"ready-{worker}"), "w").close()
        go = os.path.join(workdir, "go")
        while not os.path.exists(go):
            time.sleep(0.005)
        end = time.monotonic() + seconds if seconds else float("inf")
        done = 0
        while (done < rounds or seconds) and time.monotonic() < end:
            with lock.held():
                began = time.monotonic_ns()
                try:
                    with open(counter, "rb") as f:
                        value = int(f.read() or b"0")
                except FileNotFoundError:
                    value = 0
                with open(counter, "wb") as f:
                    f.write(b"%d\n" % (value + 1))
                key = f"{worker}-{done}"
                pod[key] = value
                pod.sync()
                ended = time.monotonic_ns()
            notes.write(orjson.dumps([value, began, ended, key]) + b"\n")
            notes.flush()
            done += 1
    finally:
        notes.close()
        pod.close()
        lock.close()


def _worker_main(argv: Sequence[str]) -> int:
    workdir, mode, worker, rounds, seconds = argv
    _worker(workdir, mode, worker, int(rounds), float(seconds))
    return 0


# -- running and checking ----------------------------------------------------------------


def _spawn(workdir: str, mode: str, worker: str, rounds: int, seconds: float) -> subprocess.Popen:
    root = os.path.dirname(os.path.dirname(os.path.abspath(tastypy.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "tastypy.verify_fs", "--worker", workdir, mode, worker,
         str(rounds), str(seconds or 0)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _check(workdir: str, report: ModeReport) -> None:
    holds: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    values: list[int] = []
    keys: dict[str, int] = {}
    for name in sorted(os.listdir(workdir)):
        if not (name.startswith("seen-") and name.endswith(".jsonl")):
            continue
        with open(os.path.join(workdir, name), "rb") as f:
            lines = f.read().splitlines()
        if not lines:
            continue
        header = orjson.loads(lines[0])
        host = (header["host"], header["boot"])
        for line in lines[1:]:
            try:
                value, began, ended, key = orjson.loads(line)
            except (orjson.JSONDecodeError, ValueError):
                continue  # a note cut by a worker of another host still writing
            holds.setdefault(host, []).append((began, ended, value))
            values.append(value)
            keys[key] = value
    report.hosts = max(1, len(holds))
    report.holds = len(values)
    report.read_twice = len(values) - len(set(values))
    for spans in holds.values():
        spans.sort()
        latest_end = -1
        previous_value = -1
        for began, ended, value in spans:
            if began < latest_end:
                report.overlaps += 1
            elif value <= previous_value:
                report.stale_reads += 1
            latest_end = max(latest_end, ended)
            previous_value = value
    try:
        # Under the lock: a worker of another host still counting rewrites
        # the counter (truncate, then write), and read between the two it
        # would show none of the updates.
        lock = DirectoryLock(os.path.join(workdir, "tastypy.lock"), report.mode, timeout=600)
        try:
            with lock.held(), open(os.path.join(workdir, "counter"), "rb") as f:
                report.counter = int(f.read() or b"0")
        finally:
            lock.close()
    except (OSError, ValueError) as exc:
        report.errors.append(f"cannot read the counter: {exc}")
    # Workers of another host may still be counting; the counter may run
    # ahead of the notes, never behind them.
    report.lost = max(0, len(values) - report.counter)
    if keys:
        try:
            with tastypy.POD(os.path.join(workdir, "pod"), lock=report.mode) as pod:
                report.pod_missing = sum(1 for k, v in keys.items() if pod.get(k) != v)
        except tastypy.TastypyError as exc:
            report.pod_missing = len(keys)
            report.errors.append(f"cannot read the POD: {exc}")


def verify_mode(
    directory: str,
    mode: str,
    *,
    processes: int = 4,
    rounds: int = 200,
    seconds: float | None = None,
) -> ModeReport:
    """Run ``processes`` workers with lock ``mode`` in ``directory`` and check them."""
    workdir = os.path.join(directory, mode)
    os.makedirs(workdir, exist_ok=True)
    probe = DirectoryLock(os.path.join(workdir, "tastypy.lock"), mode)
    report = ModeReport(probe.mode if mode == "auto" else mode, probe.reason, processes)
    if mode == "auto":
        report.reason = f"chosen by 'auto' as {probe.mode!r}: {probe.reason}"
    report.trusted = fsdetect.choose_lock(workdir)[0] == "posix"
    probe.close()
    run = f"{socket.gethostname()}-{os.getpid()}"
    workers = [f"{run}-{i}" for i in range(processes)]
    procs = [_spawn(workdir, mode, w, rounds, seconds or 0) for w in workers]
    try:
        ready = [os.path.join(workdir, f"ready-{w}") for w in workers]
        deadline = time.monotonic() + 120
        while not all(os.path.exists(r) for r in ready):
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        began = time.monotonic()
        open(os.path.join(workdir, "go"), "w").close()
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                tail = err.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
                report.errors.append(f"a worker failed: {tail[0]}")
        report.seconds = time.monotonic() - began
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    _check(workdir, report)
    return report


def verify(
    directory: str | os.PathLike[str],
    modes: Sequence[str] = ("auto",),
    *,
    processes: int = 4,
    rounds: int = 200,
    seconds: float | None = None,
    session: str | None = None,
    keep: bool = False,
    out: TextIO | None = None,
) -> list[ModeReport]:
    """Check each lock mode of ``modes`` in ``directory``; see the module docstring.

    The work happens in ``DIRECTORY/tastypy-verify-fs-SESSION/``, removed at
    the end unless ``keep`` or a ``session`` name was given (other hosts may
    still be using a named one).
    """
    directory = os.path.abspath(os.fspath(directory))
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory} is not a directory; give the one your PODs live in")
    name = session or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
    workspace = os.path.join(directory, _WORKSPACE_PREFIX + name)
    mount = fsdetect.find_mount(workspace if os.path.exists(workspace) else directory)
    if out is not None:
        where = f"{mount.fstype} mounted at {mount.point}" if mount else "unknown filesystem"
        out.write(f"verify-fs {directory} ({where})\n")
        out.flush()
    reports = []
    try:
        for mode in modes:
            report = verify_mode(
                workspace, mode, processes=processes, rounds=rounds, seconds=seconds
            )
            reports.append(report)
            if out is not None:
                out.write(f"{report}\n")
                out.flush()
    finally:
        if not keep and session is None:
            shutil.rmtree(workspace, ignore_errors=True)
    if out is not None:
        good = all(r.ok for r in reports)
        out.write(
            "all held: PODs are safe here with "
            + " and ".join(repr(r.mode) for r in reports if r.ok)
            + "\n"
            if good
            else "NOT SAFE: do not share PODs between processes here with "
            + " or ".join(repr(r.mode) for r in reports if not r.ok)
            + " (see docs/locks.md)\n"
        )
    return reports


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run from parsed arguments; the exit status is 0 when everything held."""
    if args.processes < 1 or args.rounds < 1:
        out.write("verify-fs: --processes and --rounds must be at least 1\n")
        return 2
    modes = ("posix", "soft") if args.lock == "both" else (args.lock,)
    try:
        reports = verify(
            args.directory,
            modes,
            processes=args.processes,
            rounds=args.rounds,
            seconds=args.seconds,
            session=args.session,
            keep=args.keep,
            out=out,
        )
    except (OSError, tastypy.TastypyError) as exc:
        out.write(f"verify-fs: {exc}\n")
        return 2
    return 0 if all(r.ok for r in reports) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """The entry of a worker process (``tastypy verify-fs`` starts them)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] != ["--worker"]:
        sys.stderr.write("run `python -m tastypy verify-fs DIR` (this module runs its workers)\n")
        return 2
    return _worker_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
