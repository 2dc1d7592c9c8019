"""Work that workers on two "hosts" do on one tracker or POD, and what came of it.

Used by ``tests/test_shared_fs.py`` (which asserts that nothing went wrong)
and ``bench/shared_fs.py`` (which counts what went wrong, run after run).
The directories come from a rig (``tests/sharedfs.py``): ``dirs`` is one
directory as host a and host b see it.

Workers use only the public API, as a user's job would, in real processes.
Each appends what it finished to a log of its own on the local disk,
fsynced, after the library call returned: so the logs say what a user
would believe was done, whatever the shared filesystem did.

One worker is killed with SIGKILL mid-run. Its last logged task
may legitimately run again: ``mark_done`` is written at the worker's next
granted try or sync (docs/leases.md, "What is not promised"), and it died
before that. Nothing else may be run twice or lost.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from conftest import child_env, spawn_python

#: How long a worker may take before it is counted as hung and killed.
WORKER_TIMEOUT: Final = 300.0

#: What a worker may write to stderr: the victim may be killed holding the
#: directory lock, which the next process on its host then takes over.
EXPECTED: Final = re.compile(r"tastypy: removed the stale lock \S+ of .*, whose process is gone$")

#: A tracker worker: ``path log tasks lease start until_done shards``. All start
#: together on a tracker nobody made yet, add every key if absent (as
#: docs/leases.md says a job array does), then run the manual's loop from
#: their own offset. With ``until_done`` it passes over the keys again until
#: every one is done (the others' leases must run out first), for 120 s at most.
TRACKER_WORKER: Final = """
import os, sys, time
import tastypy
path, log, tasks, lease, start, until_done, shards = sys.argv[1:8]
keys = [f"task{i:04d}" for i in range(int(tasks))]
keys = keys[int(start):] + keys[:int(start)]
print("ready", flush=True)
sys.stdin.readline()
tracker = tastypy.Tracker(path, lease=float(lease), shards=int(shards) or None)
tracker.add_many_if_absent(keys)
deadline = time.monotonic() + 120
with open(log, "a") as out:
    while True:
        for key in keys:
            if tracker.try_it(key):
                tracker.mark_done(key)
                out.write(f"finished {key}\\n")
                out.flush()
                os.fsync(out.fileno())
        if until_done == "0":
            break
        tracker.sync()
        if tracker.num_done() == len(keys) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
tracker.close()
"""

#: A POD worker: ``path log name keys batches``. Writes ``keys`` keys of its
#: own in ``batches`` syncs, logging each sync once it returned.
POD_WORKER: Final = """
import os, sys
import tastypy
path, log, name, keys, batches = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6])
print("ready", flush=True)
sys.stdin.readline()
pod = tastypy.POD(path)
per = keys // batches
with open(log, "a") as out:
    for batch in range(batches):
        for i in range(batch * per, (batch + 1) * per):
            pod[f"{name}-{i:04d}"] = {"by": name, "i": i}
        pod.sync()
        out.write(f"synced {batch}\\n")
        out.flush()
        os.fsync(out.fileno())
pod.close()
"""


#: The hosts, by side: ``dirs[0]`` is the directory as host a sees it.
HOSTS: Final = ("host-a", "host-b")


@dataclass
class Worker:
    """One worker process on one side (host) of the rig, with its local log."""

    name: str
    side: int
    #: The rig's directory as this worker's host sees it.
    directory: Path
    log: Path
    proc: Any = None
    killed: bool = False
    stderr: str = ""

    @property
    def host(self) -> str:
        return HOSTS[self.side]

    def start(self, code: str, *args: Any) -> None:
        env = child_env(TASTYPY_HOST=self.host)
        self.proc = spawn_python(code, *args, env=env, stdin=subprocess.PIPE)

    def wait(self, timeout: float = WORKER_TIMEOUT) -> None:
        try:
            _, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            self.stderr = f"hung for {timeout:.0f} s and was killed\n{err}"

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def crash(self) -> str | None:
        """What went wrong with this worker: None if it was killed, or exited
        with status 0 writing nothing to stderr but what a kill explains."""
        unexpected = [line for line in self.stderr.splitlines() if not EXPECTED.match(line)]
        if self.killed or (self.proc.returncode == 0 and not unexpected):
            return None
        return (
            f"{self.name} on {self.host}: exit status {self.proc.returncode}\n{self.stderr[-3000:]}"
        )


@dataclass
class Outcome:
    """What a run left: each list empty when all went well."""

    seconds: float = 0.0
    #: A worker that exited non-zero, wrote to stderr, or hung.
    crashes: list[str] = field(default_factory=list)
    #: Tasks finished twice: by two workers, or twice by one.
    duplicated: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    #: POD keys read back with another value than their writer gave them.
    wrong: list[str] = field(default_factory=list)
    #: The problems ``tastypy check`` reported: torn or unreadable lines.
    torn: list[str] = field(default_factory=list)
    #: What reading back with a fresh tracker or POD found wrong.
    problems: list[str] = field(default_factory=list)
    #: False when every worker finished or died before one could be killed.
    killed_mid_run: bool = True
    #: The hosts whose workers finished anything (one, when the other's
    #: waited at the lock until all was done).
    ran_on: list[str] = field(default_factory=list)
    check_output: str = ""

    def report(self) -> str:
        """What went wrong, in words."""
        return "\n".join(
            [f"crashed: {c}" for c in self.crashes]
            + [f"run twice: {k}" for k in self.duplicated]
            + [f"lost: {k}" for k in self.lost[:20]]
            + [f"wrong value: {k}" for k in self.wrong[:20]]
            + self.torn[:20]
            + self.problems[:20]
            + [f"hosts whose workers finished tasks: {', '.join(self.ran_on) or 'none'}"]
            + ["", "tastypy check said:", self.check_output[-3000:]]
        )

    @property
    def ok(self) -> bool:
        return not (
            self.crashes or self.duplicated or self.lost or self.wrong or self.torn or self.problems
        )


def start_together(workers: list[Worker], code: str, args: list[tuple]) -> float:
    """Start each worker; once all are ready, let them go at once. Returns when they went."""
    for worker, one in zip(workers, args):
        worker.start(code, *one)
    for worker in workers:
        line = worker.proc.stdout.readline().strip()
        if line != "ready":
            worker.wait(60)
            raise RuntimeError(f"{worker.name} did not start: {line!r} {worker.stderr}")
    for worker in workers:
        worker.proc.stdin.write("go\n")
        worker.proc.stdin.flush()
    return time.monotonic()


def kill_first(workers: list[Worker], lines: int, outcome: Outcome) -> Worker | None:
    """SIGKILL the first worker whose log reaches ``lines`` lines, mid-run.

    Not a worker chosen in advance: on a cached filesystem the workers of one
    mount may wait at the lock until the other mount's are done, and a
    worker that never ran cannot be killed mid-run.
    """
    deadline = time.monotonic() + WORKER_TIMEOUT
    while time.monotonic() < deadline:
        running = [w for w in workers if w.proc.poll() is None]
        if not running:
            break
        for worker in running:
            if len(worker.lines()) >= lines:
                os.kill(worker.proc.pid, signal.SIGKILL)
                worker.killed = True
                return worker
        time.sleep(0.01)
    outcome.killed_mid_run = False
    return None


def _wait_all(workers: list[Worker], started: float, outcome: Outcome) -> None:
    for worker in workers:
        worker.wait()
    outcome.seconds = time.monotonic() - started
    outcome.ran_on = sorted({w.host for w in workers if w.lines()})


def _stop(workers: list[Worker]) -> None:
    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.kill()
            worker.wait()


def check(path: Path, outcome: Outcome) -> None:
    """Run ``tastypy check`` on ``path``; its problems go to ``outcome.torn``."""
    result = subprocess.run(
        [sys.executable, "-m", "tastypy", "check", str(path)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
    )
    outcome.check_output = result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    if result.returncode != 0 and not problems:
        problems = [f"tastypy check exited with {result.returncode}: {outcome.check_output}"]
    outcome.torn.extend(problems)


def _workers(dirs: tuple[Path, Path], logs: Path, n: int) -> list[Worker]:
    """``n`` workers, alternately on host a and host b."""
    return [Worker(f"w{i}", i % 2, dirs[i % 2], logs / f"w{i}.log") for i in range(n)]


def run_tracker(
    dirs: tuple[Path, Path],
    logs: Path,
    *,
    tasks: int = 600,
    lease: float = 10.0,
    shards: int | None = None,
) -> Outcome:
    """Four workers (two per host) run ``tasks`` tasks on a new tracker (in
    ``shards`` parts, if given); one is killed mid-run; after the others
    exit, one more on the other host runs what is left.

    The lease is longer than the longest wait for the lock here: a worker
    killed holding the soft lock leaves it to be taken over (after a settle
    of 2.5 s on a caching mount), and meanwhile the others' done marks wait
    for their next write. With a 4 s lease, a done mark waiting longer than
    the lease let another worker run its task again (1 run in 20 under
    load), which docs/leases.md does not promise against."""
    outcome = Outcome()
    workers = _workers(dirs, logs, 4)
    path = "jobs.tracker"
    parts = shards or 0
    args = [
        (w.directory / path, w.log, tasks, lease, i * tasks // 4, 0, parts)
        for i, w in enumerate(workers)
    ]
    try:
        started = start_together(workers, TRACKER_WORKER, args)
        victim = kill_first(workers, max(1, tasks // 24), outcome)
        _wait_all(workers, started, outcome)
        side = 1 - victim.side if victim else 1
        finisher = Worker("finisher", side, dirs[side], logs / "finisher.log")
        workers.append(finisher)
        args = [(finisher.directory / path, finisher.log, tasks, lease, 0, 1, parts)]
        start_together([finisher], TRACKER_WORKER, args)
        finisher.wait()
    finally:
        _stop(workers)
    outcome.crashes = [c for c in (w.crash() for w in workers) if c]
    _tally_tasks(workers, tasks, outcome)
    check(dirs[0] / path, outcome)
    _read_back_tracker(dirs[0] / path, tasks, outcome)
    return outcome


def _tally_tasks(workers: list[Worker], tasks: int, outcome: Outcome) -> None:
    finished = [[line.split()[1] for line in w.lines()] for w in workers]
    counts = Counter(key for keys in finished for key in keys)
    # The victim's last done mark may not have been written (see the module's doc).
    excused = next((keys[-1] for w, keys in zip(workers, finished) if w.killed and keys), None)
    outcome.duplicated = sorted(
        key for key, count in counts.items() if count > 1 and not (key == excused and count == 2)
    )
    unlogged = [f"task{i:04d}" for i in range(tasks) if f"task{i:04d}" not in counts]
    # The victim may have died between mark_done and its log line.
    if len(unlogged) > any(w.killed for w in workers):
        outcome.lost.extend(f"{key} (finished by no worker)" for key in unlogged)


def _read_back_tracker(path: Path, tasks: int, outcome: Outcome) -> None:
    from tastypy import Tracker

    keys = [f"task{i:04d}" for i in range(tasks)]
    try:
        with Tracker(path) as tracker:
            outcome.lost.extend(f"{key} (not done)" for key in keys if not tracker.done(key))
            extra = sorted(set(tracker) - set(keys), key=str)
    except Exception as exc:  # a tracker that cannot be read back is the finding
        outcome.problems.append(f"reopening {path} failed: {exc!r}")
        return
    outcome.problems.extend(f"unexpected key {key!r}" for key in extra)


def run_pod(dirs: tuple[Path, Path], logs: Path, *, keys: int = 300, batches: int = 10) -> Outcome:
    """Four workers (two per host) each write ``keys`` keys of their own to a
    new POD in ``batches`` syncs; one is killed mid-run."""
    outcome = Outcome()
    workers = _workers(dirs, logs, 4)
    args = [(w.directory / "data.pod", w.log, w.name, keys, batches) for w in workers]
    try:
        started = start_together(workers, POD_WORKER, args)
        kill_first(workers, max(1, batches // 3), outcome)
        _wait_all(workers, started, outcome)
    finally:
        _stop(workers)
    outcome.crashes = [c for c in (w.crash() for w in workers) if c]
    check(dirs[0] / "data.pod", outcome)
    _read_back_pod(dirs[0] / "data.pod", workers, keys, batches, outcome)
    return outcome


def _read_back_pod(
    path: Path, workers: list[Worker], keys: int, batches: int, outcome: Outcome
) -> None:
    from tastypy import POD

    per = keys // batches
    try:
        with POD(path) as pod:
            stored = dict(pod.items())
    except Exception as exc:  # a POD that cannot be read back is the finding
        outcome.problems.append(f"reopening {path} failed: {exc!r}")
        return
    written = {}
    for worker in workers:
        synced = len(worker.lines())
        for i in range(keys):
            key = f"{worker.name}-{i:04d}"
            written[key] = {"by": worker.name, "i": i}
            if i < synced * per and key not in stored:
                outcome.lost.append(key)
    outcome.wrong = sorted(
        key for key, value in stored.items() if key in written and value != written[key]
    )
    outcome.problems.extend(f"unexpected key {key!r}" for key in stored if key not in written)
