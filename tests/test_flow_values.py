"""``--param`` and ``--eval-param``: datamake's helpers and literals, and
never Python: an expression that is not one is refused, and its code does
not run."""

from __future__ import annotations

import datetime

import pytest
from flowkit import cli, write_flow
from hypothesis import given, settings
from hypothesis import strategies as st

from tastypy.flow import FlowError, eval_param, param_values
from tastypy.flow.values import parse_assignment


def _last_two_days() -> list[str]:
    today = datetime.date.today()
    return [(today + datetime.timedelta(days=d)).isoformat() for d in (-2, -1)]


def test_days_range_gives_datamakes_dates():
    before = _last_two_days()
    got = eval_param("days_range(-2,0)")
    assert got in (before, _last_two_days())  # midnight may pass in between
    assert eval_param("days_range(0, 1, '%Y%m%d')")[0] in (
        datetime.date.today().strftime("%Y%m%d"),
        (datetime.date.today() - datetime.timedelta(days=1)).strftime("%Y%m%d"),
    )
    assert eval_param("days_range(3, 1)") == []


@pytest.mark.parametrize(
    "expression, values",
    [
        ("date_days_delta('2024-03-01', -1)", ["2024-02-29"]),
        ("[date_days_delta('2024-01-31', 1), 'z']", ["2024-02-01", "z"]),
        ("range(1, 4)", ["1", "2", "3"]),
        ("range(3)", ["0", "1", "2"]),
        ("['b', 'a', 'b']", ["b", "a"]),
        ("('x', 2, -1.5)", ["x", "2", "-1.5"]),
        ("'only'", ["only"]),
        ("-3", ["-3"]),
        ("date_now(fmt='%Y')", [str(datetime.date.today().year)]),
    ],
)
def test_helpers_and_literals(expression, values):
    assert eval_param(expression) == values


@pytest.mark.parametrize(
    "expression",
    [
        '__import__("os").system("touch pwned")',
        'open("pwned", "w")',
        "[open('pwned', 'w') for x in 'a']",
        "(lambda: open('pwned', 'w'))()",
        "days_range.__globals__",
        "range(10 ** 9)",
        "date_now(fmt=open('pwned', 'w'))",
        "'-'.join(['a'])",
        "date_now(*['%Y'])",
        "x",
        "True",
        "days_range(-2 0)",
    ],
)
def test_python_is_never_evaluated(expression, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FlowError) as caught:
        eval_param(expression)
    message = str(caught.value)
    assert repr(expression.strip()) in message
    assert "not allowed" in message or "not an expression" in message or "helpers" in message
    assert not (tmp_path / "pwned").exists()


def test_the_command_line_refuses_an_expression_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    flow = write_flow(tmp_path, [{"id": "t", "command": "touch ran-${d}"}])
    status = cli("ex.t", flow, "--eval-param", 'd=__import__("os").system("touch pwned")')
    assert status == 2
    assert "arbitrary Python is never evaluated" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.json"]


def test_too_many_values_are_refused():
    with pytest.raises(FlowError, match="at most"):
        eval_param("range(0, 1000000)")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), st.integers(-1000, 1000)), max_size=8))
def test_a_literal_list_gives_its_values_in_order_without_repeats(items):
    expected = list(dict.fromkeys(str(item) for item in items))
    assert eval_param(repr(items)) == expected


def test_runs_are_every_combination_in_order():
    runs = param_values({"user": "tims"}, [("n", "range(2)"), ("c", "['x', 'y']")])
    assert runs == [
        {"user": "tims", "n": "0", "c": "x"},
        {"user": "tims", "n": "0", "c": "y"},
        {"user": "tims", "n": "1", "c": "x"},
        {"user": "tims", "n": "1", "c": "y"},
    ]
    assert param_values() == [{}]


def test_a_parameter_given_twice_ways_is_refused():
    with pytest.raises(FlowError, match="both as --param and as --eval-param"):
        param_values({"d": "1"}, {"d": "range(2)"})


def test_an_expression_without_values_is_refused():
    with pytest.raises(FlowError, match="gives no value"):
        param_values({}, {"d": "days_range(0, 0)"})


def test_assignments():
    assert parse_assignment("url=http://x/?a=b") == ("url", "http://x/?a=b")
    assert parse_assignment(" d =") == ("d", "")
    for bad in ("novalue", "=x", "1d=x", "a-b=x"):
        with pytest.raises(FlowError, match="KEY=VALUE"):
            parse_assignment(bad)
