"""Every way a process ends syncs its open PODs: real processes, real signals."""

from __future__ import annotations

import json
import signal
import time

from conftest import run_python, spawn_python

from tastypy import POD, Tracker

# Writes keys that are not synced yet (sync_at is out of reach), then says so.
PRELUDE = """
import os, signal, sys, time
import tastypy
pod = tastypy.POD(sys.argv[1], sync_at=10**6)
pod["synced"] = "yes"
pod.sync()
for i in range(100):
    pod[i] = {"i": i}
pod["nested"] = {"list": [1]}
pod["nested"]["list"].append(2)
def ready():
    print("ready", flush=True)
"""

WAIT = """
ready()
time.sleep(60)
print("not killed", flush=True)
"""

EXPECTED = {"synced": "yes", **{i: {"i": i} for i in range(100)}, "nested": {"list": [1, 2]}}


def read(path) -> dict:
    with POD(path) as pod:
        return dict(pod)


def signalled(path, code, signum):
    proc = spawn_python(PRELUDE + code, path)
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def test_normal_exit_syncs(pod_path):
    result = run_python(PRELUDE, pod_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert read(pod_path) == EXPECTED


def test_sys_exit_with_a_status_syncs_and_keeps_the_status(pod_path):
    result = run_python(PRELUDE + "sys.exit(4)", pod_path)
    assert result.returncode == 4, result.stderr
    assert read(pod_path) == EXPECTED


def test_uncaught_exception_syncs(pod_path):
    result = run_python(PRELUDE + "raise RuntimeError('boom')", pod_path)
    assert result.returncode == 1
    assert "RuntimeError: boom" in result.stderr
    assert "could not sync" not in result.stderr
    assert read(pod_path) == EXPECTED


def test_sigterm_syncs_and_the_process_still_dies_of_sigterm(pod_path):
    status, out, err = signalled(pod_path, WAIT, signal.SIGTERM)
    assert status == -signal.SIGTERM, err
    assert "not killed" not in out
    assert read(pod_path) == EXPECTED


def test_sigint_keyboard_interrupt_syncs(pod_path):
    status, out, err = signalled(pod_path, WAIT, signal.SIGINT)
    assert "KeyboardInterrupt" in err
    # Python ends an uncaught KeyboardInterrupt by dying of SIGINT.
    assert status in (-signal.SIGINT, 1, 130)
    assert read(pod_path) == EXPECTED


def test_sigkill_after_a_sync_keeps_what_was_synced(pod_path):
    code = """
pod.sync()
pod["after the sync"] = 1
ready()
time.sleep(60)
"""
    status, _, _ = signalled(pod_path, code, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert read(pod_path) == EXPECTED  # and nothing of what came after


def test_sigkill_without_a_sync_keeps_the_last_sync(pod_path):
    status, _, _ = signalled(pod_path, WAIT, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert read(pod_path) == {"synced": "yes"}


USER_HANDLER = """
def handler(signum, frame):
    # The POD was synced before this handler runs.
    with open(os.path.join(sys.argv[1], "journal-000000.jsonl")) as f:
        print("handler ran; synced before:", '[99,{"i":99}]' in f.read(), flush=True)
    sys.exit(3)
"""


def test_sigterm_runs_a_user_handler_installed_before_the_pod(pod_path):
    code = (
        """
pod.close()
"""
        + USER_HANDLER
        + """
signal.signal(signal.SIGTERM, handler)
pod = tastypy.POD(sys.argv[1], sync_at=10**6)
pod["later"] = 1
ready()
time.sleep(60)
"""
    )
    status, out, err = signalled(pod_path, code, signal.SIGTERM)
    assert "handler ran; synced before: True" in out, err
    assert status == 3
    assert read(pod_path) == {**EXPECTED, "later": 1}


def test_a_user_handler_installed_after_the_first_pod_is_chained_by_the_next(tmp_path):
    code = (
        USER_HANDLER
        + """
signal.signal(signal.SIGTERM, handler)  # replaces tastypy's handler ...
other = tastypy.POD(sys.argv[2], sync_at=10**6)  # ... which chains it again
other["x"] = 1
ready()
time.sleep(60)
"""
    )
    proc = spawn_python(PRELUDE + code, tmp_path / "a", tmp_path / "b")
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "handler ran; synced before: True" in out, err
    assert proc.returncode == 3
    assert read(tmp_path / "a") == EXPECTED
    assert read(tmp_path / "b") == {"x": 1}


def test_a_user_handler_that_calls_the_handler_it_replaced(tmp_path):
    # A library's usual politeness: keep the old handler and call it. The old
    # one is tastypy's, which chained the new one again when the second POD
    # opened; the call must go on to the default action, not round again.
    code = """
old = signal.getsignal(signal.SIGTERM)
def polite(signum, frame):
    print("polite handler", flush=True)
    old(signum, frame)
signal.signal(signal.SIGTERM, polite)
other = tastypy.POD(sys.argv[2], sync_at=10**6)
other["x"] = 1
ready()
time.sleep(60)
"""
    proc = spawn_python(PRELUDE + code, tmp_path / "a", tmp_path / "b")
    assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert out.count("polite handler") == 1, err
    assert proc.returncode == -signal.SIGTERM, err
    assert "RecursionError" not in err
    assert read(tmp_path / "a") == EXPECTED
    assert read(tmp_path / "b") == {"x": 1}


def test_a_user_handler_that_returns_lets_the_job_carry_on(pod_path):
    code = """
stop = []
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
pod2 = tastypy.POD(sys.argv[1] + "2")  # tastypy chains the handler above
ready()
while not stop:
    time.sleep(0.01)
pod["after"] = "graceful"
print("stopping gracefully", flush=True)
"""
    status, out, err = signalled(pod_path, code, signal.SIGTERM)
    assert status == 0, err
    assert "stopping gracefully" in out
    assert read(pod_path) == {**EXPECTED, "after": "graceful"}


def test_an_ignored_sigterm_still_syncs(pod_path):
    code = """
pod.close()
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pod = tastypy.POD(sys.argv[1], sync_at=10**6)
pod["unsynced"] = 1
ready()
time.sleep(1.5)
with open(os.path.join(sys.argv[1], "journal-000000.jsonl")) as f:
    print("synced by the signal:", '["unsynced",1]' in f.read(), flush=True)
"""
    status, out, err = signalled(pod_path, code, signal.SIGTERM)
    assert status == 0, err
    assert "synced by the signal: True" in out


def test_sigterm_in_the_middle_of_a_sync_waits_for_it(tmp_path):
    # Two handles on one path: the handler's sync of the second would wait
    # forever for the lock the interrupted sync of the first holds.
    code = """
import os, signal, sys, tastypy
a = tastypy.POD(sys.argv[1], sync_at=10**6)
b = tastypy.POD(sys.argv[1], sync_at=10**6, lock_timeout=5, clone=False)
a.update({i: "a" for i in range(50)})
b.update({("b", i): "b" for i in range(50)})
def hook(point):
    if point == "mid-write":
        os.kill(os.getpid(), signal.SIGTERM)  # lands halfway through a's batch
a._store.fault = hook
a.sync()
print("survived", flush=True)
"""
    result = run_python(code, tmp_path / "p", timeout=60)
    assert result.returncode == -signal.SIGTERM, result.stderr
    assert "survived" not in result.stdout
    assert "could not sync" not in result.stderr
    expected = {i: "a" for i in range(50)}
    expected.update({("b", i): "b" for i in range(50)})
    assert read(tmp_path / "p") == expected


def test_sigterm_in_the_middle_of_a_sync_with_a_handler_that_returns(tmp_path):
    code = """
import os, signal, sys, tastypy
stop = []
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))
a = tastypy.POD(sys.argv[1], sync_at=10**6)
a.update({i: "first" for i in range(50)})
def hook(point):
    if point == "mid-write" and not stop:
        os.kill(os.getpid(), signal.SIGTERM)
a._store.fault = hook
a.sync()
a.update({i: "second" for i in range(25)})
a.close()
print("stopped:", stop, flush=True)
"""
    result = run_python(code, tmp_path / "p", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "stopped: [15]" in result.stdout
    expected = {i: ("second" if i < 25 else "first") for i in range(50)}
    assert read(tmp_path / "p") == expected
    lines = (tmp_path / "p" / "journal-000000.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines if line.startswith("{")] == [
        {"sync": 50},
        {"sync": 25},
    ]


def test_ctrl_c_in_the_middle_of_a_sync_is_raised_once_it_is_written(tmp_path):
    # Raised halfway through the batch, the KeyboardInterrupt would leave it
    # torn; it comes once the batch is written and the locks are released.
    code = """
import os, signal, sys, tastypy
a = tastypy.POD(sys.argv[1], sync_at=10**6)
a.update({i: "a" for i in range(50)})
def hook(point):
    if point == "mid-write":
        os.kill(os.getpid(), signal.SIGINT)
a._store.fault = hook
try:
    a.sync()
except KeyboardInterrupt:
    with tastypy.POD(sys.argv[1], clone=False, lock_timeout=5) as b:
        print("interrupted, then read", len(b), flush=True)
a.close()
"""
    result = run_python(code, tmp_path / "p", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "interrupted, then read 50" in result.stdout
    assert read(tmp_path / "p") == {i: "a" for i in range(50)}
    lines = (tmp_path / "p" / "journal-000000.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines if line.startswith("{")] == [{"sync": 50}]


HOLD_FOR_EVER = """
import sys, time, tastypy
pod = tastypy.POD(sys.argv[1])
with pod.locked():
    print("holding", flush=True)
    time.sleep(600)
"""

WAIT_FOR_THE_LOCK = """
import sys, time, tastypy
timeout = None if sys.argv[2] == "None" else float(sys.argv[2])
other = tastypy.POD(sys.argv[1] + "-other")  # tastypy's Ctrl-C handler is in place
print("opening", flush=True)
began = time.monotonic()
try:
    tastypy.POD(sys.argv[1], lock_timeout=timeout)
except KeyboardInterrupt:
    print("interrupted after", round(time.monotonic() - began, 1), flush=True)
"""


def test_ctrl_c_ends_a_wait_for_a_lock_another_process_holds(tmp_path):
    # A Ctrl-C is put off while a sync runs, but not while it waits for
    # another process: the wait ends at once, with lock_timeout=None too.
    holder = spawn_python(HOLD_FOR_EVER, tmp_path / "p")
    with holder:
        try:
            assert holder.stdout.readline() == "holding\n", holder.stderr.read()
            for timeout in ("600", "None"):
                waiter = spawn_python(WAIT_FOR_THE_LOCK, tmp_path / "p", timeout)
                with waiter:
                    try:
                        assert waiter.stdout.readline() == "opening\n", waiter.stderr.read()
                        time.sleep(1.0)
                        waiter.send_signal(signal.SIGINT)
                        out, err = waiter.communicate(timeout=30)
                    finally:
                        waiter.kill()  # (it hangs: the test fails, and ends)
                assert waiter.returncode == 0, err
                assert out.startswith("interrupted after"), (timeout, out, err)
                assert float(out.split()[-1]) < 10, out
        finally:
            holder.kill()


def test_a_ctrl_c_as_a_pod_is_collected_is_raised_at_the_next_sync(tmp_path):
    # The garbage collector runs in C: a Ctrl-C that comes meanwhile is
    # handled at the first line of the __del__ it then calls, where Python
    # would print the KeyboardInterrupt and drop it. The trace function
    # sends it just as __del__ begins.
    code = """
import os, signal, sys, tastypy
a = tastypy.POD(sys.argv[1] + "/a", sync_at=10**6)
a["x"] = 1
b = tastypy.POD(sys.argv[1] + "/b", sync_at=10**6)
finalizer = tastypy.POD.__del__.__code__
def tracer(frame, event, arg):
    if event == "call" and frame.f_code is finalizer:
        sys.settrace(None)
        os.kill(os.getpid(), signal.SIGINT)
sys.settrace(tracer)
del a
sys.settrace(None)
print("collected", flush=True)
b["y"] = 2
try:
    b.sync()
except KeyboardInterrupt:
    print("raised by the next sync", flush=True)
"""
    result = run_python(code, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "collected\nraised by the next sync\n" == result.stdout, result.stderr
    assert "Exception ignored" not in result.stderr
    assert read(tmp_path / "a") == {"x": 1}
    assert read(tmp_path / "b") == {"y": 2}


# Runs tasks (as the demo does) and takes Ctrl-C after Ctrl-C: each time it
# closes the tracker (which syncs) and opens it again, then says so (and
# first that it has opened it); the parent sends the next Ctrl-C only then.
CTRL_C_LOOP = """
import sys, tastypy
path, rounds = sys.argv[1], int(sys.argv[2])
tracker = tastypy.Tracker(path)
tracker.add_many(f"task-{i}" for i in range(20_000))
ran = 0
interrupts = 0
reopened = True
while True:
    try:
        if reopened:
            print("reopened", flush=True)
            reopened = False
        for task in tracker.attempts():
            with task:
                task["result"] = ran
            ran += 1
        break
    except KeyboardInterrupt:
        tracker.close()
        tracker = tastypy.Tracker(path)
        interrupts += 1
        reopened = True
        if interrupts == rounds:
            break
tracker.close()
print("finished", flush=True)
"""


def test_ctrl_c_at_any_moment_never_leaves_a_lock_held(tmp_path):
    # A Ctrl-C that lands between taking a lock and the try that gives it
    # back would leave the lock held, and close() would wait for it for
    # ever: the demo's Ctrl-C hung that way. Ctrl-C at random moments, many
    # times over, must each time let close() sync and return.
    import random
    import select

    rounds = 60
    path = tmp_path / "t"
    proc = spawn_python(CTRL_C_LOOP, path, rounds)
    rng = random.Random(7)
    with proc:  # its pipes closed, whatever happens
        try:
            assert proc.stdout.readline() == "reopened\n", proc.stderr.read()
            for n in range(rounds):
                time.sleep(0.002 + rng.random() * 0.004)
                proc.send_signal(signal.SIGINT)
                ready, _, _ = select.select([proc.stdout], [], [], 60)
                assert ready, f"no answer to Ctrl-C number {n + 1}: close() hangs"
                line = proc.stdout.readline()
                assert line in ("reopened\n", "finished\n"), (line, proc.stderr.read())
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    with Tracker(path) as tracker:
        stats = tracker.stats()
    # Each Ctrl-C gave its try back: nothing is left in progress.
    assert stats["in_progress"] == 0
    assert stats["done"] > 0
    assert stats["done"] + stats["todo"] == 20_000


def test_a_pod_opened_in_a_thread_is_synced_at_exit(pod_path):
    code = """
import threading
import tastypy
holder = []
def opener():
    pod = tastypy.POD(sys.argv[1], sync_at=10**6)  # no signal handler from here
    pod["from thread"] = [1]
    holder.append(pod)
t = threading.Thread(target=opener)
t.start(); t.join()
"""
    result = run_python("import sys\n" + code, pod_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert read(pod_path) == {"from thread": [1]}


def test_every_open_pod_is_synced_at_exit(tmp_path):
    code = """
import sys, tastypy
pods = [tastypy.POD(f"{sys.argv[1]}/{n}", sync_at=10**6) for n in range(5)]
for n, pod in enumerate(pods):
    pod["n"] = n
closed = tastypy.POD(f"{sys.argv[1]}/closed")
closed["x"] = 1
closed.close()
raise SystemExit(0)
"""
    result = run_python(code, tmp_path)
    assert result.returncode == 0, result.stderr
    for n in range(5):
        assert read(tmp_path / str(n)) == {"n": n}


def test_a_failing_sync_at_exit_is_logged_and_the_others_still_sync(tmp_path):
    code = """
import os, sys, tastypy, shutil
bad = tastypy.POD(sys.argv[1] + "/bad", sync_at=10**6)
good = tastypy.POD(sys.argv[1] + "/good", sync_at=10**6)
bad["x"] = 1
good["y"] = 2
shutil.rmtree(sys.argv[1] + "/bad")  # its directory is gone at exit
"""
    result = run_python(code, tmp_path)
    assert result.returncode == 0
    assert "could not sync" in result.stderr and "bad" in result.stderr
    assert read(tmp_path / "good") == {"y": 2}
