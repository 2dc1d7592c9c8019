"""Running flows: done marks and artifacts decide what runs again; a
failure stops its values and resumes; tries, errors and each command's
output are kept in the tracker; tasks run in parallel through thread pools,
process pools and dask; artifacts of other kinds plug in.

Functions a process pool runs are defined at module level.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import run_python
from flowkit import cli, counts, logged, runs, write_flow

from tastypy import Tracker
from tastypy.flow import Artifact, Flow, FlowError, register_artifact


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def record(state, key):
    with Tracker(state) as tracker:
        return tracker.get(key)


def test_a_task_without_an_artifact_runs_once_per_values_unless_rerun(here):
    flow = Flow(here / "state")
    flow.add("ex.hello", logged("hello-${who}"))
    assert flow.run("ex.hello", {"who": "a"})["ran"] == 1
    assert flow.run("ex.hello", {"who": "a"})["ran"] == 0
    assert flow.run("ex.hello", {"who": "a"}, rerun=True)["ran"] == 1
    assert counts(here) == {"hello-a": 2}
    flow.close()
    rec = record(here / "state", 'ex.hello {"who":"a"}')
    assert rec["_done"] and rec["_tries"] == 1  # counted afresh by the rerun
    assert rec["task"] == "ex.hello" and rec["params"] == {"who": "a"}


def test_a_task_whose_artifact_is_gone_runs_again(here):
    flow = Flow(here / "state", max_tries=1)
    flow.add("ex.make", logged("make", "touch made"), artifact="made")
    assert flow.run("ex.make")["ran"] == 1
    assert flow.run("ex.make")["found"] == 1
    os.unlink("made")
    assert flow.run("ex.make")["ran"] == 1  # max_tries=1: tries start afresh
    assert runs(here) == ["make", "make"]


def test_a_failure_stops_its_values_and_resumes_where_it_stopped(here, capsys):
    flow = write_flow(
        here,
        [
            {
                "id": "fetch",
                "command": logged("fetch-${d}", "touch fetched-${d}"),
                "artifact": "fetched-${d}",
            },
            {
                "id": "parse",
                "command": logged("parse-${d}", "test ${d} != 2 -o -f fixed"),
                "dependencies": ["fetch"],
            },
            {"id": "report", "command": logged("report-${d}"), "dependencies": ["parse"]},
        ],
    )
    assert cli("ex.report", flow, "--eval-param", "d=range(1,4)") == 1
    out, err = capsys.readouterr()
    assert "FAILED ex.parse (d=2): the command exited with status 1" in err
    assert "FAILED: ex.parse (d=2); run the same command again to resume" in err
    assert "report-2" not in runs(here) and {"report-1", "report-3"} <= set(runs(here))
    assert "7 ran, 0 found done, 1 failed, 1 not run" in out
    (here / "fixed").touch()
    assert cli("ex.report", flow, "--eval-param", "d=range(1,4)") == 0
    assert runs(here)[-2:] == ["parse-2", "report-2"]  # fetch-2 not again
    assert counts(here)["parse-2"] == 2 and counts(here)["fetch-2"] == 1


def test_max_tries_caps_the_tries_over_runs(here, capsys):
    flow = write_flow(here, [{"id": "t", "command": logged("t", "exit 3")}])
    for _ in range(3):
        assert cli("ex.t", flow, "--max-tries", "2") == 1
    assert runs(here) == ["t", "t"]
    err = capsys.readouterr().err
    assert "was tried 2 times, the flow's max_tries, without success" in err
    assert "exited with status 3" in err
    assert cli("ex.t", flow, "--max-tries", "3") == 1
    assert runs(here) == ["t", "t", "t"]


def test_max_attempts_retries_within_one_run(here, capsys):
    attempt = "n=$(cat n 2>/dev/null || echo 0); echo $((n+1)) > n; test $$n -ge 2"
    flow = write_flow(here, [{"id": "t", "command": logged("t", attempt), "max_attempts": 3}])
    assert cli("ex.t", flow) == 0
    assert runs(here) == ["t", "t", "t"]
    assert capsys.readouterr().err.count("retry  ex.t:") == 2
    rec = record(here / ".tastypy-flow" / "flow", "ex.t")
    assert rec["_done"] and rec["_tries"] == 3
    log = (here / ".tastypy-flow" / "flow" / rec["log"]).read_text()
    assert [line.split(" at ")[0] for line in log.splitlines() if line.startswith("--- try")] == [
        "--- try 1",
        "--- try 2",
        "--- try 3",
    ]


def test_output_and_errors_are_kept(here):
    flow = Flow(here / "state")
    flow.add("ex.t", "echo to-stdout; echo to-stderr >&2; exit 4")
    summary = flow.run("ex.t")
    error = summary["failed"]["ex.t"]
    assert "exited with status 4" in error and error.endswith("to-stdout\nto-stderr")
    flow.close()
    rec = record(here / "state", "ex.t")
    assert rec["_error"]["type"] == "tastypy.flow.jobs.TaskFailed"
    assert (
        rec["_error"]["message"] == error
        and rec["command"] == "echo to-stdout; echo to-stderr >&2; exit 4"
    )
    log = (here / "state" / rec["log"]).read_text().splitlines()
    assert log[1:] == [
        "to-stdout",
        "to-stderr",
        "--- exit status 4 after " + log[3].split("after ")[1],
    ]


def test_a_command_that_does_not_make_its_artifact_fails(here):
    flow = Flow(here / "state")
    flow.add("ex.t", "true", artifact="out.txt")
    summary = flow.run("ex.t")
    assert (
        "ended without an error but did not make its artifact out.txt" in summary["failed"]["ex.t"]
    )


def test_cleanup_after_success_only(here):
    flow = Flow(here / "state")
    flow.add("ex.tmp", "touch tmp-${d}", artifact="tmp-${d}", cleanup=True)
    flow.add("ex.use", "test ${d} = ok", dependencies=["tmp"])
    summary = flow.run("ex.use", [{"d": "ok"}, {"d": "bad"}])
    assert summary["cleaned"] == ["tmp-ok"]
    assert not (here / "tmp-ok").exists() and (here / "tmp-bad").exists()


def rendezvous(me: str, other: str) -> str:
    """A command that succeeds only if ``other`` runs while it does."""
    wait = f"for i in $(seq 200); do test -f {other}.here && exit 0; sleep 0.05; done"
    return f"touch {me}.here; {wait}; exit 1"


def count_lines(params: dict) -> dict:
    with open(f"{params['name']}.txt") as stream:
        return {"lines": len(stream.readlines()), "pid": os.getpid()}


def parallel_flow(state) -> Flow:
    flow = Flow(state)
    flow.add("ex.left", rendezvous("left", "right"))
    flow.add("ex.right", rendezvous("right", "left"))
    flow.add(
        "ex.numbers", "seq 4 > ${name}.txt", artifact="${name}.txt", dependencies=["left", "right"]
    )
    flow.add("ex.count", fn=count_lines, dependencies=["numbers"], parameters=["name"])
    return flow


def check_parallel(state, summary) -> None:
    assert summary["ok"], summary
    assert summary["ran"] == 4
    with Tracker(state) as tracker:
        assert tracker['ex.count {"name":"four"}']["result"]["lines"] == 4


def test_independent_tasks_run_at_once_in_a_thread_pool(here):
    with ThreadPoolExecutor(2) as pool, parallel_flow(here / "state") as flow:
        check_parallel(here / "state", flow.run("ex.count", {"name": "four"}, executor=pool))


def test_independent_tasks_run_at_once_in_a_process_pool(here):
    with ProcessPoolExecutor(2) as pool, parallel_flow(here / "state") as flow:
        summary = flow.run("ex.count", {"name": "four"}, executor=pool)
    check_parallel(here / "state", summary)
    assert record(here / "state", 'ex.count {"name":"four"}')["result"]["pid"] != os.getpid()


def test_independent_tasks_run_at_once_on_dask(here):
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        parallel_flow(here / "state") as flow,
    ):
        check_parallel(here / "state", flow.run("ex.count", {"name": "four"}, executor=client))


@pytest.mark.parametrize("workers", ["here", "process-pool"])
def test_a_long_task_keeps_its_lease(here, workers):
    # The lease (0.6 s) would end while the command runs (1.5 s): the
    # heartbeat of the process that took it (this one, or the pool's worker)
    # renews it, so another process cannot take the task meanwhile.
    flow = Flow(here / "state", lease=0.6)
    flow.add("ex.slow", "touch started; sleep 1.5")
    jobs = ProcessPoolExecutor(1) if workers == "process-pool" else None
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(flow.run, "ex.slow", executor=jobs)
        deadline = time.monotonic() + 30
        while not (here / "started").exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(1.0)
        other = run_python(
            "import sys, tastypy; print(tastypy.Tracker(sys.argv[1]).try_it('ex.slow'))",
            here / "state",
        )
        assert running.result()["ok"]
    if jobs is not None:
        jobs.shutdown()
    assert other.stdout.strip() == "False", other.stderr
    flow.close()
    assert record(here / "state", "ex.slow")["_tries"] == 1


def test_a_python_task_that_raises_is_recorded(here):
    flow = Flow(here / "state")
    flow.add("ex.count", fn=count_lines, parameters=["name"])
    summary = flow.run("ex.count", {"name": "absent"})
    assert summary["failed"]['ex.count {"name":"absent"}'].startswith("FileNotFoundError:")
    flow.close()
    assert (
        record(here / "state", 'ex.count {"name":"absent"}')["_error"]["type"]
        == "FileNotFoundError"
    )


def test_a_callable_a_process_pool_cannot_send_fails_its_task(here):
    flow = Flow(here / "state")
    flow.add("ex.t", fn=lambda params: 1)
    with ProcessPoolExecutor(1) as pool:
        summary = flow.run("ex.t", executor=pool)
    assert "the executor could not run it" in summary["failed"]["ex.t"]


def test_a_missing_parameter_of_a_python_task_is_refused(tmp_path):
    flow = Flow(tmp_path / "state")
    flow.add("ex.count", fn=count_lines, parameters=["name"])
    with pytest.raises(FlowError, match="needs the parameter 'name' in its parameters"):
        flow.plan("ex.count")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_artifacts(here, web):
    served, url = web
    (served / "present.txt").write_text("x")
    flow = Flow(here / "state")
    flow.add("ex.present", logged("present"), artifact=f"{url}/present.txt")
    flow.add(
        "ex.absent", logged("absent", f"touch {served}/absent.txt"), artifact=f"{url}/absent.txt"
    )
    assert flow.run("ex.present")["found"] == 1
    assert flow.run("ex.absent")["ran"] == 1
    assert flow.run("ex.absent")["found"] == 1
    assert runs(here) == ["absent"]


class FileCountArtifact(Artifact):
    """count://N/PATH: PATH holds at least N lines."""

    def exists(self) -> bool:
        n, _, path = self.uri[len("count://") :].partition("/")
        try:
            with open(path) as stream:
                return len(stream.readlines()) >= int(n)
        except FileNotFoundError:
            return False


def test_other_kinds_of_artifacts_plug_in_by_scheme(here):
    flow = Flow(here / "state")
    flow.add("ex.t", logged("t", "echo x >> lines"), artifact="count://2/lines")
    with pytest.raises(FlowError, match=r"no artifact kind is registered for count://"):
        flow.plan("ex.t")
    register_artifact("count", FileCountArtifact)
    with ProcessPoolExecutor(1) as pool:
        assert "did not make its artifact" in flow.run("ex.t", executor=pool)["failed"]["ex.t"]
        assert flow.run("ex.t", executor=pool)["ran"] == 1
    assert flow.run("ex.t")["found"] == 1
    assert runs(here) == ["t", "t"]
