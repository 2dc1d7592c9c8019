"""What runs, and in what order: the target and what it needs upstream,
each task after all of its dependencies; a found artifact prunes what only
it needed; parameters flow upstream; a cycle, an unknown task and a missing
parameter are refused before anything runs."""

from __future__ import annotations

import pytest
from flowkit import cli, counts, logged, runs, write_flow
from hypothesis import given, settings
from hypothesis import strategies as st

from tastypy.flow import Flow, FlowError
from tastypy.flow.graph import expand, pending, relevant_names


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_each_task_runs_after_all_of_its_dependencies(here):
    # datamake's reversed breadth-first walk from t ran b before a here:
    # both are one step from t, and b depends on a.
    flow = write_flow(
        here,
        [
            {"id": "a", "command": logged("a", "touch a.done")},
            {
                "id": "b",
                "command": logged("b", "test -f a.done && touch b.done"),
                "dependencies": ["a"],
            },
            {
                "id": "t",
                "command": logged("t", "test -f a.done -a -f b.done"),
                "dependencies": ["a", "b"],
            },
            {"id": "other", "command": logged("other")},
        ],
    )
    assert cli("ex.t", flow) == 0
    assert runs(here) == ["a", "b", "t"]  # and not `other`, which t does not need


@st.composite
def dags(draw):
    """A random DAG: task i may depend on tasks before it; some are found done."""
    n = draw(st.integers(1, 12))
    deps = [draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set() for i in range(n)]
    finished = draw(st.sets(st.integers(0, n - 1)))
    target = draw(st.integers(0, n - 1))
    return deps, finished, target


@settings(max_examples=80, deadline=None)
@given(dags())
def test_the_order_is_topological_and_holds_exactly_what_is_needed(tmp_path_factory, dag):
    deps, finished, target = dag
    flow = Flow(tmp_path_factory.mktemp("unused"))
    for i, d in enumerate(deps):
        flow.add(f"g.t{i}", dependencies=[f"t{j}" for j in sorted(d)])
    tasks = flow.tasks
    nodes: dict = {}
    key = expand(tasks, relevant_names(tasks), f"g.t{target}", {}, nodes)
    order, found = pending(nodes, [key], lambda node: int(node.key[3:]) in finished)
    # Needed: reachable from the target through tasks that are not found done.
    needed, found_expected, todo = set(), set(), [target]
    while todo:
        i = todo.pop()
        if i in needed or i in found_expected:
            continue
        if i in finished:
            found_expected.add(i)
        else:
            needed.add(i)
            todo.extend(deps[i])
    assert sorted(int(k[3:]) for k in order) == sorted(needed)
    assert {int(k[3:]) for k in found} == found_expected
    position = {int(k[3:]): p for p, k in enumerate(order)}
    for i in needed:
        assert all(position[j] < position[i] for j in deps[i] if j in needed)


def test_a_found_artifact_prunes_what_only_it_needed(here):
    (here / "x.out").write_text("made before")
    flow = write_flow(
        here,
        [
            {"id": "p", "command": logged("p")},  # needed only by x
            {"id": "s", "command": logged("s")},  # needed by x and by y
            {
                "id": "x",
                "command": logged("x", "touch x.out"),
                "artifact": "x.out",
                "dependencies": ["p", "s"],
            },
            {"id": "y", "command": logged("y"), "dependencies": ["s"]},
            {"id": "t", "command": logged("t"), "dependencies": ["x", "y"]},
        ],
    )
    assert cli("ex.t", flow) == 0
    assert runs(here) == ["s", "y", "t"]


def test_a_cycle_is_named_and_nothing_runs(here, capsys):
    flow = write_flow(
        here,
        [
            {"id": "start", "command": logged("start")},
            {"id": "a", "command": logged("a"), "dependencies": ["c", "start"]},
            {"id": "b", "command": logged("b"), "dependencies": ["a"]},
            {"id": "c", "command": logged("c"), "dependencies": ["b"]},
            {"id": "t", "command": logged("t"), "dependencies": ["a"]},
        ],
    )
    assert cli("ex.t", flow) == 2
    err = capsys.readouterr().err
    cycle = err.split("cycle: ")[1].split(";")[0].split(" -> ")
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["ex.a", "ex.b", "ex.c"]
    assert runs(here) == [] and not (here / ".tastypy-flow").exists()


def test_a_task_depending_on_itself_is_a_cycle(tmp_path):
    flow = Flow(tmp_path / "state")
    flow.add("ex.a", "true", dependencies=["a"])
    with pytest.raises(FlowError, match=r"cycle: ex\.a -> ex\.a"):
        flow.plan("ex.a")


def test_unknown_dependencies_and_targets_are_named(here, capsys):
    flow = write_flow(
        here,
        [
            {"id": "download", "command": logged("download")},
            {"id": "t", "command": logged("t"), "dependencies": ["downlaod"]},
        ],
    )
    assert cli("ex.t", flow) == 2
    err = capsys.readouterr().err
    assert "task 2 ('t'): unknown dependency 'ex.downlaod' (did you mean 'ex.download'?)" in err
    fixed = write_flow(here, [{"id": "download", "command": logged("download")}], name="ok.json")
    assert cli("ex.downlaod", fixed) == 2
    assert "unknown target 'ex.downlaod' (did you mean 'ex.download'?)" in capsys.readouterr().err
    assert cli("download", fixed) == 0  # a bare id one namespace holds
    assert runs(here) == ["download"]


def test_a_missing_parameter_stops_everything_before_anything_runs(here, capsys):
    flow = write_flow(
        here,
        [
            {"id": "first", "command": logged("first")},
            {"id": "t", "command": logged("t-${d}-${user}"), "dependencies": ["first"]},
        ],
    )
    assert cli("ex.t", flow, "--eval-param", "d=range(3)") == 2
    err = capsys.readouterr().err
    assert "task ex.t" in err and "needs the parameter 'user' in its command" in err
    assert "--param user=VALUE" in err
    assert runs(here) == [] and not (here / ".tastypy-flow").exists()


def test_parameters_flow_from_downstream_to_upstream(here):
    flow = write_flow(
        here,
        [
            {
                "id": "fetch",
                "command": logged("fetch-${day}-${mode}"),
                "parameters": {"day": "monday", "mode": "fast"},
            },
            {
                "id": "report",
                "command": logged("report-${out}"),
                "dependencies": ["fetch"],
                "parameters": {"day": "friday", "out": "${day}.txt"},
            },
        ],
    )
    assert cli("ex.report", flow) == 0
    assert runs(here) == ["fetch-friday-fast", "report-friday.txt"]
    assert cli("ex.report", flow, "--param", "day=sunday", "--param", "mode=slow") == 0
    assert runs(here)[2:] == ["fetch-sunday-slow", "report-sunday.txt"]


def test_parameter_defaults_that_refer_to_each_other_are_refused(tmp_path):
    flow = Flow(tmp_path / "state")
    flow.add("ex.t", "echo ${a}", parameters={"a": "${b}", "b": "x${a}"})
    with pytest.raises(FlowError, match="refer to each other: (a -> b -> a|b -> a -> b)"):
        flow.plan("ex.t")


def test_dollar_signs_for_the_shell(here):
    flow = write_flow(
        here,
        [
            {
                "id": "t",
                "command": "X=shell; echo $$X-${v}-$v-$1 >> runs.log",
                "parameters": {"v": "p"},
            },
        ],
    )
    assert cli("ex.t", flow) == 0
    assert runs(here) == ["shell-p-p-"]


def test_dependencies_in_other_namespaces_and_files(here):
    base = write_flow(here, [{"id": "fetch", "command": logged("fetch-${d}")}], "data", "data.json")
    report = write_flow(
        here,
        [
            {"id": "summary", "command": logged("summary-${d}"), "dependencies": ["data.fetch"]},
        ],
        "reports",
        "reports.json",
    )
    assert cli("reports.summary", report, base, "--param", "d=1") == 0
    assert runs(here) == ["fetch-1", "summary-1"]
    assert (here / ".tastypy-flow" / "reports").is_dir()  # beside the first file


def test_a_task_that_mentions_no_parameter_runs_once_for_every_value(here):
    flow = write_flow(
        here,
        [
            {"id": "setup", "command": logged("setup")},
            {"id": "day", "command": logged("day-${date}"), "dependencies": ["setup"]},
            {"id": "all", "dependencies": ["day"]},
        ],
    )
    assert cli("ex.all", flow, "--eval-param", "date=['a', 'b', 'c']") == 0
    assert counts(here) == {"setup": 1, "day-a": 1, "day-b": 1, "day-c": 1}
    assert cli("ex.all", flow, "--eval-param", "date=['c', 'd']") == 0
    assert counts(here) == {"setup": 1, "day-a": 1, "day-b": 1, "day-c": 1, "day-d": 1}
