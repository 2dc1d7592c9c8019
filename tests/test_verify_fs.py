"""``tastypy verify-fs DIR``: real processes contending for the lock in DIR.

Its failing side (a lock that does not exclude) is shown through two FUSE
mounts in ``test_two_hosts.py``; here the checker itself is shown to catch
overlaps, stale reads and lost updates in notes made by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
from conftest import child_env

from tastypy import verify_fs


def verify_cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tastypy", "verify-fs", *map(str, args)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_both_locks_hold_on_a_local_directory(tmp_path):
    proc = verify_cli(tmp_path, "--lock", "both", "--processes", "3", "--rounds", "40")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "lock 'posix'" in out and "lock 'soft'" in out
    assert out.count("exclusion:  held") == 2
    assert out.count("visibility: held") == 2
    assert "120 holds noted" in out
    assert "all held" in out
    assert os.listdir(tmp_path) == []  # its work directory is gone


def test_auto_reports_the_lock_it_chose_and_why(tmp_path):
    proc = verify_cli(tmp_path, "--processes", "2", "--rounds", "20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "chosen by 'auto' as" in proc.stdout
    assert "filesystem mounted at" in proc.stdout


def test_a_named_session_keeps_its_work_for_other_hosts(tmp_path):
    proc = verify_cli(tmp_path, "--session", "s1", "--processes", "2", "--rounds", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    work = tmp_path / "tastypy-verify-fs-s1" / "auto"
    assert (work / "counter").read_text().strip() == "20"
    # A second run in the same session (as from another host) adds to the
    # same counter and checks every note, its own and the first run's.
    proc = verify_cli(tmp_path, "--session", "s1", "--processes", "2", "--rounds", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "40 holds noted" in proc.stdout
    assert (work / "counter").read_text().strip() == "40"


def test_a_missing_directory_is_exit_status_2(tmp_path):
    proc = verify_cli(tmp_path / "nowhere")
    assert proc.returncode == 2
    assert "nowhere is not a directory" in proc.stdout


def write_notes(workdir, worker, holds, host="h1"):
    with open(workdir / f"seen-{worker}.jsonl", "wb") as f:
        f.write(orjson.dumps({"host": host, "boot": "b"}) + b"\n")
        for i, (value, began, ended) in enumerate(holds):
            f.write(orjson.dumps([value, began, ended, f"{worker}-{i}"]) + b"\n")


def check(workdir, counter):
    (workdir / "counter").write_text(f"{counter}\n")
    report = verify_fs.ModeReport("soft", "test", 2)
    verify_fs._check(str(workdir), report)
    return report


def test_the_checker_catches_overlapping_holds_and_lost_updates(tmp_path):
    # Two workers both read 5: they held the lock at once (times overlap).
    write_notes(tmp_path, "a", [(4, 0, 10), (5, 20, 40)])
    write_notes(tmp_path, "b", [(5, 30, 50), (6, 60, 70)])
    report = check(tmp_path, counter=7)
    assert report.overlaps == 1
    assert report.read_twice == 1
    assert report.lost == 0  # the counter (7) is ahead of nothing: 4 holds noted
    assert not report.exclusion and not report.ok
    assert "exclusion:  FAILED" in str(report)


def test_the_checker_catches_a_holder_that_read_an_older_value(tmp_path):
    # One at a time, but the second holder did not see the first one's write.
    write_notes(tmp_path, "a", [(0, 0, 10)])
    write_notes(tmp_path, "b", [(0, 20, 30)])
    report = check(tmp_path, counter=1)
    assert report.overlaps == 0
    assert report.stale_reads == 1
    assert report.lost == 1
    assert not report.visibility
    assert "visibility: FAILED" in str(report)


def test_the_checker_passes_a_clean_run_across_two_hosts(tmp_path):
    # Times of different hosts are not compared; values are.
    write_notes(tmp_path, "a", [(0, 100, 110), (2, 300, 310)], host="h1")
    write_notes(tmp_path, "b", [(1, 5, 6), (3, 7, 8)], host="h2")
    report = check(tmp_path, counter=4)
    assert (report.overlaps, report.stale_reads, report.read_twice, report.lost) == (0, 0, 0, 0)
    assert report.hosts == 2
