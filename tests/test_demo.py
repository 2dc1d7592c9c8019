"""``python -m tastypy demo``: killed midway (SIGKILL or Ctrl-C) and run
again, it carries on where it stopped and ends with every task done or
failed ``max_tries`` times."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time

from conftest import child_env, run_python, spawn_python

from tastypy import Tracker
from tastypy.demo import MAX_TRIES

TASKS = 2500


def demo(path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tastypy", "demo", str(path), *args],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_demo(path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tastypy", "demo", str(path), *args],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def done_so_far(path) -> dict:
    """The records done so far, read while the demo runs."""
    if not (path / "manifest.json").exists():
        return {}
    with Tracker(path) as tracker:
        return {key: dict(rec) for key, rec in tracker.items() if rec["_done"]}


def stop_midway(path, proc: subprocess.Popen, signum: int, at_least: int = 300) -> tuple:
    """Send ``signum`` once ``at_least`` tasks are done; return what was done
    then, and what the demo printed to stdout and stderr."""
    try:
        deadline = time.monotonic() + 120
        while len(done_so_far(path)) < at_least:
            assert proc.poll() is None, "the demo ended before it could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        before = done_so_far(path)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # it hangs: stop it, for the tests after this one
            proc.kill()
            proc.communicate()
    return before, out, err


def assert_finished(path) -> dict:
    with Tracker(path, max_tries=MAX_TRIES) as tracker:
        records = {key: dict(rec) for key, rec in tracker.items()}
        stats = tracker.stats()
    assert len(records) == TASKS
    for key, rec in records.items():
        if rec["_done"]:
            assert "value" in rec["result"], key
        else:
            assert rec["_tries"] == MAX_TRIES, (key, rec)
            assert rec["_error"]["type"].endswith("SimulatedError")
    assert stats["done"] + stats["failed"] == TASKS
    assert stats["todo"] == stats["in_progress"] == stats["aborted"] == 0
    return records


def test_sigkill_midway_then_rerun_carries_on(tmp_path):
    path = tmp_path / "demo.tracker"
    proc = start_demo(path, "--tasks", str(TASKS), "--no-progress")
    before, _, _ = stop_midway(path, proc, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < len(before) < TASKS
    rerun = demo(path, "--tasks", str(TASKS), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert "Resuming:" in rerun.stdout and "Summary" in rerun.stdout
    records = assert_finished(path)
    # What was done before the kill was not done again.
    for key, rec in before.items():
        assert records[key]["result"] == rec["result"], key
        assert records[key]["_tries"] == rec["_tries"], key
    pids = {rec["result"]["pid"] for rec in records.values() if rec["_done"]}
    assert len(pids) == 2


def test_ctrl_c_midway_then_rerun_carries_on(tmp_path):
    path = tmp_path / "demo.tracker"
    proc = start_demo(path, "--tasks", str(TASKS), "--no-progress")
    before, _, err = stop_midway(path, proc, signal.SIGINT)
    assert proc.returncode == 130
    assert "Interrupted:" in err and "Run the same command again to carry on" in err
    after_interrupt = done_so_far(path)
    assert len(after_interrupt) >= len(before)
    rerun = demo(path, "--tasks", str(TASKS), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert f"Resuming: {len(after_interrupt):,} done" in rerun.stdout
    assert_finished(path)


def test_a_finished_demo_has_nothing_left_to_do(tmp_path):
    path = tmp_path / "demo.tracker"
    first = demo(path, "--tasks", "300", "--no-progress")
    assert first.returncode == 0, first.stderr
    again = demo(path, "--tasks", "300", "--no-progress")
    assert again.returncode == 0
    assert "Ran 0 attempts" in again.stdout and "Nothing left to do" in again.stdout
    for label in ("done", "failed", "total"):
        assert label in again.stdout


def test_progress_uses_tqdm_or_a_plain_line(tmp_path):
    with_tqdm = run_python(
        """
        import sys
        from tastypy.cli import main
        sys.exit(main(["demo", sys.argv[1], "--tasks", "200"]))
        """,
        tmp_path / "a.tracker",
    )
    assert with_tqdm.returncode == 0, with_tqdm.stderr
    assert "/200" in with_tqdm.stderr
    without_tqdm = run_python(
        """
        import sys
        sys.modules["tqdm"] = None  # as if tastypy[progress] were not installed
        from tastypy.cli import main
        sys.exit(main(["demo", sys.argv[1], "--tasks", "200"]))
        """,
        tmp_path / "b.tracker",
    )
    assert without_tqdm.returncode == 0, without_tqdm.stderr
    assert "tastypy: " in without_tqdm.stderr and "/200 done" in without_tqdm.stderr
    quiet = demo(tmp_path / "c.tracker", "--tasks", "50", "--no-progress")
    assert quiet.stderr == ""


def test_a_bad_task_count_is_refused(tmp_path):
    result = demo(tmp_path / "d.tracker", "--tasks", "0")
    assert result.returncode == 2 and "--tasks" in result.stderr


#: The demo, with compaction made eager (whenever stale records outnumber
#: live ones), so that the copies replace the files under each other often.
EAGER_DEMO = """
import sys
import tastypy.storage.compaction
tastypy.storage.compaction._COMPACT_MIN_STALE = 0
from tastypy.demo import run_demo
sys.exit(run_demo(sys.argv[1], tasks=int(sys.argv[2]), progress=False))
"""


def outcome(key: str, attempt: int) -> bool:
    """Whether attempt ``attempt`` of ``key`` succeeds in the demo (its
    outcomes are fixed by the key and the attempt, see tastypy.demo._work)."""
    from tastypy.demo import _BROKEN, _FLAKY, _WORK

    fate = random.Random(key).random()
    luck = random.Random(f"{key}/{attempt}")
    luck.uniform(*_WORK)
    if fate < _BROKEN:
        return False
    return not (fate < _BROKEN + _FLAKY and luck.random() < 0.5)


def test_four_copies_run_at_once_leave_every_record_as_its_last_attempt_ended(tmp_path):
    # A job array running the demo on one new tracker: each task's record
    # must end as the last attempt at it ended (done if that attempt
    # succeeds, its error recorded if not), with no lease left over; no
    # copy's last writes may undo another's.
    path = tmp_path / "demo.tracker"
    n = 20_000  # the demo's own count: fewer make the losses this guards against rare
    copies = [spawn_python(EAGER_DEMO, path, n) for _ in range(4)]
    for proc in copies:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    with Tracker(path) as tracker:
        assert len(tracker) == n
        wrong = []
        for key, rec in tracker.items():
            tries = rec["_tries"]
            ended = (
                1 <= tries <= MAX_TRIES
                and "_ended" in rec
                and "_holder" not in rec
                and "_lease_until" not in rec
                and rec["_done"] == outcome(key, tries)
                and (rec["_done"] or "_error" in rec)
                and all(not outcome(key, a) for a in range(1, tries))
            )
            if not ended:
                wrong.append((key, rec))
        assert wrong == [], wrong[:3]
