"""A tracker split into parts (tastypy/parts.py): real processes, real files."""

from __future__ import annotations

import json
import os
import textwrap
from collections import Counter

import orjson
import pytest
from conftest import run_python, spawn_python
from test_tracker_processes import WORKER, run_together, runs_in
from test_two_hosts import hosts  # noqa: F401  (the fixture)
from test_two_hosts_tracker import finish, start

import tastypy
from tastypy import Tracker
from tastypy.errors import InvalidArgumentError
from tastypy.parts import PartedTracker, split

KEYS = [f"k{i:05d}" for i in range(2000)]


def cli(*args):
    return run_python("import sys\nfrom tastypy.cli import main\nsys.exit(main())", *args)


def make(path, n=2000, shards=16):
    with Tracker(path, shards=shards) as tracker:
        tracker.add_many(KEYS[:n])
    return KEYS[:n]


CLAIM_ALL = """
import sys
import tastypy
path, out = sys.argv[1], sys.argv[2]
tracker = tastypy.Tracker(path, max_tries=3)
print("ready", flush=True)
sys.stdin.readline()
with open(out, "w") as f:
    while keys := tracker.claim(7):
        for key in keys:
            f.write(key + "\\n")
            f.flush()
            tracker.mark_done(key)
tracker.close()
"""


def test_claims_from_several_processes_hand_each_task_out_once(tmp_path):
    path = tmp_path / "jobs.tracker"
    keys = make(path)
    outs = [tmp_path / f"w{i}.txt" for i in range(6)]
    run_together(CLAIM_ALL, [(path, out) for out in outs])
    counts = Counter(line for out in outs for line in out.read_text().split())
    assert sorted(counts) == keys, "some task was never handed out"
    assert [k for k, c in counts.items() if c > 1] == [], "some task was handed out twice"
    assert sum(1 for out in outs if out.stat().st_size) > 1, "one worker did everything"
    with Tracker(path) as tracker:
        assert isinstance(tracker, PartedTracker)
        assert tracker.num_done() == len(keys) == len(tracker)
        assert tracker.claim(5) == []


def test_every_task_runs_once_with_try_it_loops_over_slices(tmp_path):
    # The manual's loop, run by four workers started at different keys.
    path = tmp_path / "jobs.tracker"
    keys = make(path, 800, shards=5)
    args = [(path, tmp_path / f"worker{i}.txt", i * 200, 3600, 800, 0, 0) for i in range(4)]
    run_together(WORKER, args)
    counts = Counter(key for key, _ in runs_in(tmp_path.glob("worker*.txt")))
    assert sorted(counts) == keys
    assert max(counts.values()) == 1
    with Tracker(path) as tracker:
        assert tracker.stats(exact=True)["done"] == 800


@pytest.mark.parametrize("of", [1, 3, 16, 50])
def test_slices_cover_every_key_exactly_once(tmp_path, of):
    path = tmp_path / "jobs.tracker"
    keys = make(path, 1000, shards=16)
    with Tracker(path) as tracker:
        seen = [key for i in range(of) for key in tracker.part(i, of)]
    assert sorted(seen) == keys
    assert len(seen) == len(set(seen))


SLICE_JOB = """
import sys
import tastypy
path, index, of, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tracker = tastypy.Tracker(path)
view = tracker.part(index, of)
print("ready", flush=True)
sys.stdin.readline()
with open(out, "w") as f:
    for key in view:
        if view.try_it(key):
            f.write(key + "\\n")
            view.mark_done(key)
loaded = len(tracker._open)
tracker.close()
print(loaded)
"""


def test_a_job_array_takes_its_slice_and_does_it_all(tmp_path):
    path = tmp_path / "jobs.tracker"
    keys = make(path, 1200, shards=12)
    outs = [tmp_path / f"job{i}.txt" for i in range(4)]
    run_together(SLICE_JOB, [(path, i, 4, out) for i, out in enumerate(outs)])
    ran = [line for out in outs for line in out.read_text().split()]
    assert sorted(ran) == keys
    with Tracker(path) as tracker:
        assert tracker.num_done() == 1200


WRITER = """
import sys, random
import tastypy
path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
tracker = tastypy.Tracker(path, max_tries=2)
print("ready", flush=True)
sys.stdin.readline()
keys = [f"k{i:05d}" for i in range(2000)]
for key in rng.sample(keys, 300):
    if tracker.try_it(key):
        roll = rng.random()
        if roll < 0.6:
            tracker.mark_done(key)
        elif roll < 0.8:
            tracker.abort(key)
        else:
            tracker.release([key], tried=True)
tracker.add_many_if_absent(f"new-{seed}-{i}" for i in range(20))
tracker.close()
"""


def test_summaries_agree_with_a_full_count_after_concurrent_writers(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path)
    run_together(WRITER, [(path, seed) for seed in range(5)])
    with Tracker(path) as tracker:
        from_summaries = tracker.stats()
        tried = tracker.num_tried()
        records = list(tracker.to_dict().values())
    assert from_summaries["total"] == len(records) == 2000 + 5 * 20
    assert from_summaries["done"] == sum(r["_done"] for r in records)
    assert from_summaries["aborted"] == sum(r["_aborted"] and not r["_done"] for r in records)
    assert tried == sum(r["_tries"] > 0 for r in records)
    assert from_summaries["tries"] == dict(Counter(r["_tries"] for r in records))


def test_a_killed_writer_leaves_a_stale_summary_that_exact_counts_again(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 500, shards=4)
    code = """
    import os, signal, sys
    import tastypy
    tracker = tastypy.Tracker(sys.argv[1])
    for key in tracker.claim(30):
        tracker.mark_done(key)
    tracker.sync()
    os.kill(os.getpid(), signal.SIGKILL)
    """
    run_python(code, path)
    with Tracker(path) as tracker:
        assert tracker.stats(exact=True)["done"] == 30
    with Tracker(path) as tracker:
        assert tracker.num_done() == 30  # the exact count was written down


def test_reopening_keeps_every_record_and_the_part_count(tmp_path):
    path = tmp_path / "jobs.tracker"
    with Tracker(path, shards=7) as tracker:
        tracker.add_many(KEYS[:300])
        for key in KEYS[:300:3]:
            assert tracker.try_it(key)
            tracker.mark_done(key)
            tracker[key]["result"] = {"n": key}
        tracker[("tuple", 1)] = {"_done": False, "_tries": 0, "_aborted": False}
        before = tracker.to_dict()
    with Tracker(path) as tracker:
        assert tracker.parts == 7
        assert tracker.to_dict() == before
        assert ("tuple", 1) in tracker and tracker.done(KEYS[0]) and not tracker.done(KEYS[1])
        assert len(tracker) == 301 and tracker.num_done() == 100


def test_iteration_keeps_the_order_added_within_each_part(tmp_path):
    path = tmp_path / "jobs.tracker"
    keys = make(path, 1000, shards=4)
    with Tracker(path) as tracker:
        listed = list(tracker)
        parts = [tracker.part_of(k) for k in listed]
    assert sorted(listed) == keys
    assert parts == sorted(parts)
    for index in set(parts):
        mine = [k for k in listed if tracker.part_of(k) == index]
        assert mine == [k for k in keys if k in set(mine)]


def test_a_job_loads_only_the_parts_its_keys_live_in(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 2000, shards=16)
    code = """
    import sys
    import tastypy
    tracker = tastypy.Tracker(sys.argv[1])
    if tracker.try_it("k00007"):
        tracker.mark_done("k00007")
    keys = tracker.claim(10)
    for key in keys:
        tracker.mark_done(key)
    answers = [tracker.done(f"k{i:05d}") for i in range(0, 2000, 20)]
    print(len(tracker._open), len(keys), sum(answers))
    tracker.close()
    """
    out = run_python(code, path)
    assert out.returncode == 0, out.stderr
    loaded, claimed, done = map(int, out.stdout.split())
    assert loaded <= 2 and claimed == 10
    with Tracker(path) as tracker:
        assert done == sum(tracker.done(f"k{i:05d}") for i in range(0, 2000, 20))
        assert tracker.done("k00007") and tracker.num_done() == 11


def test_done_answers_from_the_files_what_another_process_wrote(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 200, shards=4)
    with Tracker(path) as reader:
        assert not reader.done("k00003")
        with Tracker(path) as writer:
            assert writer.try_it("k00003")
            writer.mark_done("k00003")
            writer.sync()
            writer["k00004"] = {"_done": True, "_tries": 1, "_aborted": False}
            del writer["k00005"]
        assert reader.done("k00003") and reader.done("k00004")
        assert "k00005" not in reader and not reader.done("k00005")
        assert reader.tries("k00003") == 1


def test_an_existing_single_store_tracker_opens_unchanged(tmp_path):
    path = tmp_path / "old.tracker"
    with Tracker(path) as tracker:
        tracker.add_many(KEYS[:50])
        tracker.mark_done(KEYS[0])
    listing = sorted(os.listdir(path))
    manifest = (path / "manifest.json").read_bytes()
    with Tracker(path) as tracker:
        assert type(tracker) is tastypy.ProgressTracker
        assert list(tracker) == KEYS[:50] and tracker.num_done() == 1
    assert sorted(os.listdir(path)) == listing
    assert (path / "manifest.json").read_bytes() == manifest
    with pytest.raises(InvalidArgumentError, match="one store"):
        Tracker(path, shards=4)
    assert sorted(os.listdir(path)) == listing


def test_split_copies_a_single_store_tracker_into_parts(tmp_path):
    old, new = tmp_path / "old.tracker", tmp_path / "new.tracker"
    with Tracker(old, max_tries=4, lease=50) as tracker:
        tracker.add_many(KEYS[:500])
        for key in KEYS[:100]:
            tracker.mark_done(key)
        before = tracker.to_dict()
    split(old, new, 6)
    with Tracker(new) as tracker:
        assert tracker.parts == 6 and tracker.to_dict() == before
        assert len(tracker) == 500 and tracker.num_done() == 100
        assert (tracker.max_tries, tracker.lease) == (4, 50.0)  # its settings too
    with Tracker(old) as tracker:
        assert tracker.to_dict() == before


@pytest.mark.parametrize("shards", [0, -1, "x", "AUTO", 1.5, True, 10**6])
def test_a_bad_part_count_is_refused_and_makes_nothing(tmp_path, shards):
    path = tmp_path / "jobs.tracker"
    with pytest.raises(InvalidArgumentError, match="shards"):
        Tracker(path, shards=shards)
    assert not path.exists()


def test_another_part_count_than_the_trackers_is_refused(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 10, shards=4)
    with pytest.raises(InvalidArgumentError, match="4 parts, not shards=5"):
        Tracker(path, shards=5)
    with Tracker(path, shards=4) as tracker:
        assert len(tracker) == 10


@pytest.mark.parametrize("args", [(5, 3), (-1, 3), (0, 0), ("0", 2), (1, 1.0)])
def test_a_bad_slice_is_refused(tmp_path, args):
    path = tmp_path / "jobs.tracker"
    make(path, 10, shards=2)
    with Tracker(path) as tracker, pytest.raises(InvalidArgumentError, match="part"):
        tracker.part(*args)


def test_a_parted_tracker_is_refused_clearly_where_one_store_is_expected(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 10, shards=2)
    # Its manifest is newer than version 1, which tastypy before parts and
    # the shared store refuses with "newer than the version 1 ... upgrade".
    with open(path / "manifest.json", "rb") as f:
        assert json.loads(f.read())["version"] > 1
    # This tastypy's single store says what it is; its tools check each part.
    with pytest.raises(tastypy.errors.NotAPODError, match="split into parts"):
        tastypy.POD(path)
    report = tastypy.check(path)
    assert report.ok and report.keys == 10


def test_add_many_refuses_a_key_already_there_and_adds_none(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 10, shards=4)
    with Tracker(path) as tracker:
        with pytest.raises(tastypy.DuplicateKeyError, match="k00003"):
            tracker.add_many(["new-1", "new-2", "k00003", "new-3"])
        assert len(tracker) == 10 and "new-1" not in tracker


def test_the_cli_counts_a_parted_tracker_from_its_summaries(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 300, shards=3)
    with Tracker(path) as tracker:
        for key in tracker.claim(20):
            tracker.mark_done(key)
    out = cli("stats", path, "--json")
    assert out.returncode == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["total"] == 300 and stats["done"] == 20 and stats["parts"] == 3


@pytest.mark.parametrize("shards", ["8", "'auto'"])
def test_workers_started_together_on_a_new_parted_tracker_agree_on_it(tmp_path, shards):
    path = tmp_path / "jobs.tracker"
    code = """
    import sys
    import tastypy
    print("ready", flush=True)
    sys.stdin.readline()
    tracker = tastypy.Tracker(sys.argv[1], shards=SHARDS)
    tracker.add_many_if_absent(f"k{i:05d}" for i in range(4400))
    with open(sys.argv[2], "w") as f:
        while keys := tracker.claim(5):
            for key in keys:
                f.write(key + "\\n")
                tracker.mark_done(key)
    tracker.close()
    """
    outs = [tmp_path / f"w{i}.txt" for i in range(4)]
    run_together(textwrap.dedent(code).replace("SHARDS", shards), [(path, out) for out in outs])
    counts = Counter(line for out in outs for line in out.read_text().split())
    assert sorted(counts) == [f"k{i:05d}" for i in range(4400)] and max(counts.values()) == 1
    with Tracker(path) as tracker:
        assert tracker.parts == (8 if shards == "8" else 2)  # 4,400 // 4,000 + 1


def test_auto_takes_the_part_count_from_the_first_add_many_and_keeps_it(tmp_path):
    path = tmp_path / "jobs.tracker"
    with Tracker(path, shards="auto") as tracker:
        assert isinstance(tracker, PartedTracker) and tracker.parts == 0
        assert not path.exists(), "nothing is written before the first add_many"
        tracker.add_many(f"t{i}" for i in range(12_500))
        assert tracker.parts == 4 and len(tracker) == 12_500
        tracker.add_many(f"u{i}" for i in range(50_000))  # later batches do not change it
        assert tracker.parts == 4
    for shards in ("auto", None, 4):
        with Tracker(path, shards=shards) as tracker:
            assert tracker.parts == 4 and len(tracker) == 62_500
    with Tracker(tmp_path / "small.tracker", shards="auto") as tracker:
        tracker.add_many_if_absent(["a", "b"])
        assert tracker.parts == 1 and list(tracker) == ["a", "b"]


def test_auto_before_any_task_reads_as_empty_and_refuses_other_writes(tmp_path):
    path = tmp_path / "jobs.tracker"
    with Tracker(path, shards="auto") as tracker:
        assert len(tracker) == 0 and list(tracker) == [] and tracker.claim(5) == []
        assert "a" not in tracker and not tracker.done("a") and tracker.get("a") is None
        assert tracker.stats()["total"] == 0
        for write in (lambda: tracker.try_it("a"), lambda: tracker.add("a")):
            with pytest.raises(InvalidArgumentError, match="first add_many"):
                write()
    assert not path.exists()


def test_auto_opens_a_tracker_another_process_made_meanwhile(tmp_path):
    path = tmp_path / "jobs.tracker"
    with Tracker(path, shards="auto") as early:
        make(path, 100, shards=3)  # as another process would
        assert early.parts == 3 and len(early) == 100
        early.add_many(["late"])
        assert early.parts == 3 and "late" in early


def test_auto_never_splits_a_tracker_in_one_store(tmp_path):
    path = tmp_path / "old.tracker"
    with Tracker(path) as tracker:
        tracker.add_many(KEYS[:10])
    listing = sorted(os.listdir(path))
    with pytest.raises(InvalidArgumentError, match="one store"):
        Tracker(path, shards="auto")
    assert sorted(os.listdir(path)) == listing
    with Tracker(path) as tracker:
        assert type(tracker) is tastypy.ProgressTracker and len(tracker) == 10


def test_a_parted_tracker_is_a_progress_tracker_to_isinstance():
    assert issubclass(PartedTracker, tastypy.ProgressTracker)


def test_two_hosts_run_every_task_of_a_parted_tracker_once(hosts, tmp_path):  # noqa: F811
    # tests/test_two_hosts_tracker.py's run, on a tracker made in 6 parts.
    src, a, b = hosts
    n = 400
    keys = make(a / "jobs.tracker", n, shards=6)
    procs = []
    try:
        for i, mount in enumerate((a, b, a, b)):
            out = tmp_path / f"{mount.name}-{i}.txt"
            procs.append(start(mount / "jobs.tracker", out, i * n // 4, n))
        finish(procs)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=60)
    runs = runs_in(sorted(tmp_path.glob("host-*.txt")))
    counts = Counter(key for key, _ in runs)
    assert sorted(counts) == keys, "some task never ran"
    assert [k for k, c in counts.items() if c > 1] == [], "some task ran on both hosts"
    with Tracker(b / "jobs.tracker") as tracker:
        assert isinstance(tracker, PartedTracker) and not tracker._peeks
        assert tracker.stats(exact=True)["done"] == n
        assert {tracker._part(i)._store._lock.mode for i in range(6)} == {"soft"}


def test_attempts_show_progress_and_run_each_task(tmp_path, capsys):
    path = tmp_path / "jobs.tracker"
    make(path, 300, shards=5)
    with Tracker(path) as tracker:
        ran = []
        for task in tracker.attempts(progress="plain"):
            with task:
                ran.append(task.key)
                if task.key == "k00007":
                    raise ValueError("seven")
        assert sorted(ran) == KEYS[:300]
        assert tracker.num_done() == 299
    assert "tastypy: 299/300 done" in capsys.readouterr().err


def test_done_over_many_keys_of_one_part_loads_it_instead_of_searching(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 2000, shards=2)
    with Tracker(path) as tracker:
        for key in KEYS[:100:3]:
            tracker.mark_done(key)
    with Tracker(path) as tracker:
        found = [key for key in KEYS[:2000] if tracker.done(key)]
        assert found == KEYS[:100:3]
        assert len(tracker._open) == 2  # each part searched a few times, then loaded


def test_check_and_repair_a_parted_tracker_part_by_part(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 400, shards=4)
    with Tracker(path) as tracker:
        for key in KEYS[:40]:
            tracker.mark_done(key)
        # A task of part 0 with one record (never marked done): its line is lost.
        lost, line = next((k, i) for i, k in enumerate(tracker.part(0, 4)) if k not in KEYS[:40])
    proc = cli("check", path)
    assert proc.returncode == 0 and "400 keys" in proc.stdout, proc.stdout + proc.stderr
    journal = path / "part-00000" / "journal-000000.jsonl"
    lines = journal.read_bytes().split(b"\n")
    assert lines[line].startswith(b"[" + orjson.dumps(lost) + b",")
    lines[line] = b"\x00garbage\xff"
    journal.write_bytes(b"\n".join(lines))

    proc = cli("check", path)
    assert proc.returncode == 1
    assert f"{journal}, line {line + 1}" in proc.stdout and "1 problem(s)" in proc.stdout
    proc = cli("repair", path)
    assert proc.returncode == 0, proc.stderr
    assert "repaired 1 of 4 parts (part-00000)" in proc.stdout
    assert f"lost: {journal}, line {line + 1}" in proc.stdout
    assert [n for n in os.listdir(path / "part-00000") if n.startswith("repair-")]
    assert not [n for n in os.listdir(path / "part-00001") if n.startswith("repair-")]
    assert cli("check", path).returncode == 0
    with Tracker(path) as tracker:
        assert len(tracker) == 399 and lost not in tracker  # counted afresh
        assert tracker.num_done() == 40


def test_compact_a_parted_tracker_part_by_part(tmp_path):
    path = tmp_path / "jobs.tracker"
    make(path, 400, shards=3)
    with Tracker(path) as tracker:
        for key in KEYS[:100]:
            tracker.mark_done(key)
        before = tracker.to_dict()
    proc = cli("compact", path)
    assert proc.returncode == 0, proc.stderr
    assert "compacted 400 keys" in proc.stdout
    for index in range(3):
        names = os.listdir(path / f"part-{index:05d}")
        assert any(n.startswith("snapshot-000001") for n in names), names
    with Tracker(path) as tracker:
        assert tracker.to_dict() == before and tracker.stats(exact=True)["done"] == 100


MARK_THEN_TRY_ELSEWHERE = """
import os, signal, sys
import tastypy
tracker = tastypy.Tracker(sys.argv[1])
first, second = sys.argv[2], sys.argv[3]
assert tracker.part_of(first) != tracker.part_of(second)
assert tracker.try_it(first)
tracker.mark_done(first)
assert tracker.try_it(second)  # granted, in another part
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_granted_try_in_one_part_writes_the_done_mark_left_in_another(tmp_path):
    # In one store, a worker's mark_done is written with its next granted
    # try: killed after that, its task is not run again. So in parts too.
    path = tmp_path / "jobs.tracker"
    make(path, 100, shards=4)
    with Tracker(path) as tracker:
        first = KEYS[0]
        second = next(k for k in KEYS[1:100] if tracker.part_of(k) != tracker.part_of(first))
    proc = run_python(MARK_THEN_TRY_ELSEWHERE, path, first, second)
    assert proc.returncode == -9, proc.stderr
    with Tracker(path) as tracker:
        assert tracker.done(first), "the done mark written before the next grant was lost"
        assert tracker.tries(second) == 1 and not tracker.done(second)


SHOW_MANIFEST_LATE = """
import os, sys, time
path, manifest = sys.argv[1], sys.argv[2]
print("ready", flush=True)
time.sleep(0.5)
with open(path + "/manifest.json.tmp", "wb") as f:
    f.write(open(manifest, "rb").read())
os.replace(path + "/manifest.json.tmp", path + "/manifest.json")
"""


def test_a_worker_that_lost_the_race_waits_for_the_winners_manifest(tmp_path):
    # On a caching mount (the GlusterFS rig) the loser of the race to create
    # a parted tracker found the manifest's name taken but could not read it
    # yet, and took the directory for a tracker in one store. Here the name
    # is taken by an empty file that another process fills half a second later.
    model = tmp_path / "model.tracker"
    make(model, 10, shards=3)
    path = tmp_path / "jobs.tracker"
    path.mkdir()
    (path / "manifest.json").write_bytes(b"")
    late = spawn_python(SHOW_MANIFEST_LATE, path, model / "manifest.json")
    assert late.stdout.readline().strip() == "ready"
    try:
        with Tracker(path, shards=3) as tracker:
            assert tracker.parts == 3 and len(tracker) == 0
    finally:
        late.communicate(timeout=60)
    assert late.returncode == 0


# -- a lost top manifest ----------------------------------------------------------------


def _cli(*args):
    return run_python("import sys\nfrom tastypy.cli import main\nsys.exit(main())", *args)


@pytest.mark.parametrize("shards", [3, 7, 40])
def test_repair_writes_a_lost_top_manifest_again_from_the_parts_keys(tmp_path, shards):
    path = tmp_path / "jobs.tracker"
    with Tracker(path, shards=shards) as tracker:
        tracker.add_many(range(300))
        for key in range(0, 300, 3):
            assert tracker.try_it(key)
            tracker.mark_done(key)
    (path / "manifest.json").unlink()
    checked = _cli("check", path)
    assert checked.returncode == 1 and "tastypy repair" in checked.stdout
    repaired = _cli("repair", path)
    assert repaired.returncode == 0, repaired.stderr
    assert f"written again for {shards} parts" in repaired.stdout
    assert json.loads((path / "manifest.json").read_text())["parts"] == shards
    with Tracker(path) as again:
        assert len(again) == 300 and again.num_done() == 100
        assert all(again.done(k) == (k % 3 == 0) for k in range(300))
        assert not again.try_it(0) and again.try_it(1)


def test_a_lost_top_manifest_whose_parts_do_not_tell_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "jobs.tracker"
    with Tracker(path, shards=5) as tracker:
        tracker.add_many([1, 2])  # two keys: many part counts fit them
    (path / "manifest.json").unlink()
    repaired = _cli("repair", path)
    assert repaired.returncode == 1
    assert "do not tell how many there were" in repaired.stderr
    assert '"parts": N' in repaired.stderr
    assert not (path / "manifest.json").exists()  # nothing guessed
