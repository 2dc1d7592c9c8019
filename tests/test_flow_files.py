"""datamake's flow files: what is accepted, and a malformed file refused
with the file, the task and the field named, exit status 2, nothing run."""

from __future__ import annotations

import json

import pytest
from flowkit import cli, runs, write_flow

from tastypy.flow import Flow, FlowError, read_flow_file


def good_task(**fields) -> dict:
    return {"id": "t", "command": "echo t >> runs.log", **fields}


def flow_text(*tasks: dict, **top) -> str:
    return json.dumps({"version": "1.0", "namespace": "ex", "tasks": list(tasks), **top})


MALFORMED = [
    ("{", ["not valid JSON", "line 1, column 2"]),
    ("[]", ["holds a JSON object"]),
    (json.dumps({"tasks": []}), ["'version'", '"1.0"']),
    (json.dumps({"version": "2.0", "tasks": []}), ["'version'", "'2.0'"]),
    (json.dumps({"version": "1.0"}), ["'tasks'"]),
    (flow_text(good_task(), task=[]), ["unknown field 'task'"]),
    (flow_text("download"), ["task 1", "must be an object"]),
    (flow_text({"command": "true"}), ["task 1", "'id' is missing"]),
    (flow_text(good_task(id="a.b")), ["task 1", "field 'id'", "dots"]),
    (flow_text(good_task(id="a b")), ["field 'id'"]),
    (flow_text(good_task(), good_task(dependecies=["t"], id="u")), ["task 2 ('u')", "dependecies"]),
    (flow_text(good_task(dependencies="download")), ["task 1 ('t')", "'dependencies'"]),
    (flow_text(good_task(dependencies=[1])), ["'dependencies'", "task ids"]),
    (flow_text(good_task(cleanup="yes")), ["'cleanup'", "true or false"]),
    (flow_text(good_task(command=["ls"])), ["'command'"]),
    (flow_text(good_task(artifact="")), ["'artifact'"]),
    (flow_text(good_task(parameters={"d": {"x": 1}})), ["'parameters.d'"]),
    (flow_text(good_task(parameters={"bad name": "x"})), ["'parameters'", "bad name"]),
    (flow_text(good_task(parameters="d=1")), ["'parameters'"]),
    (flow_text(good_task(max_attempts=0)), ["'max_attempts'"]),
    (flow_text(good_task(), good_task()), ["task 2 ('t')", "used twice"]),
]


@pytest.mark.parametrize("text, fragments", MALFORMED)
def test_a_malformed_flow_file_names_what_is_wrong(tmp_path, text, fragments):
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlowError) as caught:
        read_flow_file(path)
    message = str(caught.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_the_command_line_refuses_it_with_status_2_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = write_flow(tmp_path, [good_task()], name="good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(flow_text(good_task(dependecies=[])).replace("ex", "other"), encoding="utf-8")
    assert cli("ex.t", good, bad) == 2
    err = capsys.readouterr().err
    assert "bad.json, task 1 ('t'): unknown field 'dependecies'" in err
    assert runs(tmp_path) == [] and not (tmp_path / ".tastypy-flow").exists()


def test_what_datamake_accepted_is_accepted(tmp_path):
    path = tmp_path / "lenient.json"
    path.write_text(
        '{"version": "1.0", "description": "x", "tasks": [\n'
        '  {"id": "a", "command": "true", "verify": "ls", "rollback": "rm -f x",},\n'
        '  {"id": "b", "dependencies": ["a"], "parameters": {"n": 3, "f": 1.5, "t": true},},\n'
        "],}",
        encoding="utf-8",
    )
    a, b = read_flow_file(path)
    assert (a.qid, a.command, b.dependencies) == ("a", "true", ("a",))  # no namespace
    assert b.parameters == {"n": "3", "f": "1.5", "t": "true"}


def test_a_comma_inside_a_string_is_kept(tmp_path):
    path = tmp_path / "commas.json"
    path.write_text(flow_text(good_task(command="echo ',]' ,}")) + "\n", encoding="utf-8")
    assert read_flow_file(path)[0].command == "echo ',]' ,}"


def test_files_that_cannot_be_read(tmp_path):
    with pytest.raises(FlowError, match="cannot read the flow file .*missing.json"):
        read_flow_file(tmp_path / "missing.json")
    latin = tmp_path / "latin.json"
    text = flow_text(good_task(command="echo caf\u00e9")).replace("\\u00e9", "\u00e9")
    latin.write_bytes(text.encode("latin-1"))
    with pytest.raises(FlowError, match="latin.json is not UTF-8"):
        read_flow_file(latin)


def test_a_task_defined_in_two_files_is_refused(tmp_path):
    one = write_flow(tmp_path, [good_task()], name="one.json")
    two = write_flow(tmp_path, [good_task()], name="two.json")
    with pytest.raises(FlowError, match=r"ex\.t is defined twice: .*one.json.* and .*two.json"):
        Flow.from_files([one, two], state=tmp_path / "state")
