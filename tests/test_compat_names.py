"""The names of tastypy 0.0.3 that old code imports and calls, kept working
(see ``docs/compat.md``)."""

from __future__ import annotations

from conftest import spawn_python

import tastypy

# 0.0.3's way to share one tracker between processes, as its manual wrote it.
SHARED_WORKER = """
import sys
import tastypy

tracker = tastypy.SharedTracker(sys.argv[1], 3)
pod = tastypy.SharedPOD(sys.argv[2])
for _ in range(50):
    with tracker.locked():
        tracker.increment_tries("k")
    with pod.locked():
        pod.set["n"] += 1
tracker.close()
pod.close()
print("ok", flush=True)
"""


def test_shared_names_are_the_classes_and_share_across_processes(tmp_path):
    assert tastypy.SharedTracker is tastypy.SharedProgressTracker is tastypy.Tracker
    assert tastypy.SharedPOD is tastypy.SharedPersistentOrderedDict is tastypy.POD
    with tastypy.SharedTracker(tmp_path / "t", 3) as tracker:
        tracker.add("k")
    with tastypy.SharedPOD(tmp_path / "p") as pod:
        pod["n"] = 0
    procs = [spawn_python(SHARED_WORKER, tmp_path / "t", tmp_path / "p") for _ in range(3)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and out.strip() == "ok", err
    with tastypy.SharedTracker(tmp_path / "t", 3) as tracker:
        assert tracker.tries("k") == 150
    with tastypy.SharedPOD(tmp_path / "p") as pod:
        assert pod["n"] == 150
