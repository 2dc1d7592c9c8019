"""Many processes writing one POD at once: nobody loses anybody's changes."""

from __future__ import annotations

import time

from conftest import run_python, spawn_python

from tastypy import POD, Tracker

WRITER = """
import os, sys, time
import tastypy
path, go = sys.argv[1], sys.argv[5]
wid, n, sync_at = map(int, sys.argv[2:5])
while not os.path.exists(go):
    time.sleep(0.002)
pod = tastypy.POD(path, sync_at=sync_at)
seen = 0
for i in range(n):
    pod[(wid, i)] = {"w": wid, "i": i}
    pod["shared"] = [wid, i]  # every writer writes this key too
    if i % 10 == 0:
        pod[(wid, i)]["read back"] = True  # a nested change
    if i % 400 == 0:
        pod.refresh()  # interleaved refreshes see others' keys, and keep ours
        now = sum(1 for k in pod.keys() if type(k) is tuple)
        assert now >= seen, (now, seen)
        seen = now
        for j in range(0, i, 37):
            assert pod[(wid, j)]["i"] == j
    if wid == 0 and i == n // 2:
        pod.compact()  # a new generation under everyone's feet
pod.close()
print("done", wid, seen, flush=True)
"""


def expected_value(w: int, i: int) -> dict:
    value = {"w": w, "i": i}
    if i % 10 == 0:
        value["read back"] = True
    return value


def test_six_processes_writing_2000_keys_each_lose_nothing(tmp_path):
    run_writers(tmp_path, 2000)


def test_six_processes_writing_20000_keys_each_lose_nothing(tmp_path):
    run_writers(tmp_path, 20000)


def run_writers(tmp_path, n):
    path = tmp_path / "shared.pod"
    go = tmp_path / "go"
    sync_ats = [1000, 300, 97, 53, 1000, 211]
    with POD(path) as pod:  # created up front, as a job would
        pod["before"] = "kept"
    procs = [spawn_python(WRITER, path, w, n, s, go) for w, s in enumerate(sync_ats)]
    time.sleep(0.2)
    go.write_text("")  # all start at once
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        outputs.append(out)
    assert sorted(o.split()[1] for o in outputs) == [str(w) for w in range(6)]
    with POD(path) as pod:
        assert len(pod) == 6 * n + 2
        assert pod["before"] == "kept"
        for w in range(6):
            for i in range(n):
                assert pod[(w, i)] == expected_value(w, i)
        # For one key, the last sync wins: some writer's last value.
        assert pod["shared"][1] == n - 1
        # Each writer's keys are in the order it wrote them.
        for w in range(6):
            mine = [k for k in pod if type(k) is tuple and k[0] == w]
            assert mine == [(w, i) for i in range(n)]


def test_a_reader_process_follows_a_writer_with_refresh(tmp_path):
    path = tmp_path / "p"
    reader = """
import sys, time, tastypy
pod = tastypy.POD(sys.argv[1])
sizes = []
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    pod.refresh()
    sizes.append(len(pod))
    if pod.get("done"):
        break
    time.sleep(0.001)
assert sizes == sorted(sizes), "a refresh went back in time"
assert pod["done"] and len(pod) == 1001, len(pod)
assert [pod[i] for i in range(1000)] == list(range(1000))
print("ok", len(set(sizes)))
"""
    writer = """
import sys, tastypy
pod = tastypy.POD(sys.argv[1], sync_at=50)
for i in range(1000):
    pod[i] = i
pod["done"] = True
pod.close()
"""
    with POD(path):
        pass
    proc = spawn_python(reader, path)
    result = run_python(writer, path)
    assert result.returncode == 0, result.stderr
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("ok")


def test_two_processes_deleting_and_setting_the_same_keys_agree_on_disk(tmp_path):
    path = tmp_path / "p"
    worker = """
import sys, tastypy
pod = tastypy.POD(sys.argv[1], sync_at=7)
w = int(sys.argv[2])
for round_ in range(30):
    for k in range(20):
        if (k + round_ + w) % 3 == 0:
            pod.pop(k, None)
        else:
            pod[k] = [w, round_]
pod.close()
"""
    procs = [spawn_python(worker, path, w) for w in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with POD(path) as a, POD(path) as b:
        assert dict(a) == dict(b)
        assert list(a) == list(b)
        for value in a.values():
            assert value[0] in (0, 1) and 0 <= value[1] < 30


THREADED_WRITER = """
import sys, threading
import tastypy
path, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pod = tastypy.POD(path, sync_at=101)
def work(t):
    for i in range(n):
        pod[(wid, t, i)] = [i]
        pod[(wid, t, i)].append(t)
        if i % 500 == 0:
            pod.refresh()
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for th in threads:
    th.start()
for th in threads:
    th.join()
pod.close()
"""


def test_processes_with_threads_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "p"
    n = 5000
    procs = [spawn_python(THREADED_WRITER, path, w, n) for w in range(6)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    with POD(path) as pod:
        assert len(pod) == 6 * 4 * n
        for (_, t, i), value in pod.items():
            assert value == [i, t]


OPENERS = """
import multiprocessing as mp, os, sys
import tastypy
base, rounds, procs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def opener(barrier, errors):
    for r in range(rounds):
        barrier.wait()
        kind = tastypy.Tracker if r % 2 else tastypy.POD
        try:
            kind(os.path.join(base, str(r))).close()
        except Exception as exc:
            errors.put(f"round {r}: {exc!r}")
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=opener, args=(barrier, errors)) for _ in range(procs)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    failed = []
    while not errors.empty():
        failed.append(errors.get())
    print(len(failed), *failed[:3], sep="\\n")
"""


def test_processes_opening_one_new_pod_at_once_all_open_it(tmp_path):
    # Workers started together open one new tracker at once. One of them
    # creates the manifest between another's look for it and that one's
    # listing of the directory: the other must read it, not take the
    # directory for a foreign one. Each round is a new directory, with
    # the openers meeting at a barrier before it.
    proc = run_python(OPENERS, tmp_path, 150, 8, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[0] == "0", proc.stdout
    for r in range(150):
        kind = POD if r % 2 == 0 else Tracker
        with kind(tmp_path / str(r)) as opened:
            assert len(opened) == 0
