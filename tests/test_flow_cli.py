"""``tastypy flow``'s options beyond running: --dryrun, --showgraph,
--delete-artifacts, --state, --quiet, and bad arguments (exit status 2)."""

from __future__ import annotations

import pytest
from flowkit import cli, cli_child, logged, runs, write_flow

from tastypy import Tracker


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def chain(here):
    return write_flow(
        here,
        [
            {"id": "fetch", "command": logged("fetch-${d}", "touch f-${d}"), "artifact": "f-${d}"},
            {
                "id": "parse",
                "command": logged("parse-${d}", "touch p-${d}"),
                "artifact": "p-${d}",
                "dependencies": ["fetch"],
            },
            {"id": "report", "command": logged("report-${d}"), "dependencies": ["parse"]},
        ],
    )


def test_dryrun_shows_what_would_run_and_runs_nothing(here, chain, capsys):
    (here / "p-2").touch()
    assert cli("ex.report", chain, "--eval-param", "d=range(1,3)", "--dryrun") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "d=1: would run 3, 0 found done",
        "  run    ex.fetch (d=1): echo fetch-1 >> runs.log && touch f-1",
        "  run    ex.parse (d=1): echo parse-1 >> runs.log && touch p-1",
        "  run    ex.report (d=1): echo report-1 >> runs.log",
        "d=2: would run 1, 1 found done",
        "  run    ex.report (d=2): echo report-2 >> runs.log",
        "  found  ex.parse (d=2): p-2",
    ]
    assert runs(here) == [] and not (here / ".tastypy-flow").exists()


def test_showgraph_shows_the_dependencies_upstream_of_the_target(here, chain, capsys):
    assert cli("ex.parse", chain, "--showgraph") == 0
    assert capsys.readouterr().out.splitlines() == [
        "ex.parse <- ex.fetch",
        "ex.fetch (no dependencies)",
    ]


def test_delete_artifacts_deletes_those_upstream_of_the_target(here, chain, capsys):
    for name in ("f-1", "p-1", "f-2"):
        (here / name).touch()
    assert cli("ex.parse", chain, "--param", "d=1", "--delete-artifacts") == 0
    assert sorted(capsys.readouterr().out.split()) == ["deleted", "deleted", "f-1", "p-1"]
    assert sorted(p.name for p in here.iterdir() if p.name[1:2] == "-") == ["f-2"]
    assert runs(here) == []


def test_state_goes_where_asked(here, chain, capsys):
    assert cli("ex.report", chain, "--param", "d=1", "--state", "my-state") == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("; state in my-state")
    with Tracker(here / "my-state") as tracker:
        assert tracker.num_done() == 3
    assert not (here / ".tastypy-flow").exists()


def test_quiet_shows_only_the_summary(here, chain, capsys):
    assert cli("ex.report", chain, "--param", "d=1", "-q") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("3 ran, 0 found done, 0 failed")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--jobs", "0"], "--jobs must be 1 or more"),
        (["--param", "d"], "--param 'd': write --param KEY=VALUE"),
        (["--param", "d=1", "--eval-param", "d=range(2)"], "both as --param and as --eval-param"),
        (["--eval-param", "d=range("], "is not an expression"),
    ],
)
def test_bad_arguments_exit_2_and_run_nothing(here, chain, capsys, args, message):
    assert cli("ex.report", chain, *args) == 2
    assert message in capsys.readouterr().err
    assert runs(here) == [] and not (here / ".tastypy-flow").exists()


def test_jobs_runs_independent_tasks_at_once(tmp_path):
    # Each command succeeds only if the other runs while it does.
    wait = "for i in $(seq 200); do test -f {}.here && exit 0; sleep 0.05; done; exit 1"
    flow = write_flow(
        tmp_path,
        [
            {"id": "left", "command": "touch left.here; " + wait.format("right")},
            {"id": "right", "command": "touch right.here; " + wait.format("left")},
            {"id": "both", "dependencies": ["left", "right"]},
        ],
    )
    done = cli_child(tmp_path, "ex.both", flow, "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("3 ran, 0 found done, 0 failed")
