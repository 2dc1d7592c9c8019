"""Parameter values from the command line: ``--param KEY=VALUE`` and
``--eval-param KEY=EXPRESSION``.

datamake passed an ``--eval-param`` expression to Python's ``eval``, so a
flow's command line could run any code. Here an expression is read with
:func:`ast.parse` and walked: string and number literals, lists and tuples
of them, and calls of the helpers in :data:`HELPERS`, nothing else. No user
text is ever evaluated as Python.
"""

from __future__ import annotations

import ast
import datetime
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from tastypy.errors import FlowError
from tastypy.flow.templates import is_name

__all__ = [
    "HELPERS",
    "date_days_delta",
    "date_now",
    "days_range",
    "eval_param",
    "param_values",
    "parse_assignment",
]

#: The date format of datamake's helpers.
DATE_FORMAT: Final = "%Y-%m-%d"

#: At most this many values from one expression (a typo like
#: ``range(0, 10**9)`` would otherwise plan a billion flows).
_MAX_VALUES: Final = 100_000


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise FlowError(f"{what} must be a whole number, got {value!r}") from None


def days_range(start: int, stop: int, fmt: str = DATE_FORMAT) -> list[str]:
    """The dates from ``start`` to ``stop - 1`` days from today (local time), as
    datamake's ``days_range``: ``days_range(-2, 0)`` is the day before
    yesterday and yesterday, formatted ``YYYY-MM-DD``."""
    first, stop = _int(start, "days_range's start"), _int(stop, "days_range's stop")
    _check_count(stop - first, f"days_range({start}, {stop})")
    today = datetime.datetime.now()
    return [(today + datetime.timedelta(days=i)).strftime(fmt) for i in range(first, stop)]


def date_now(fmt: str = DATE_FORMAT) -> str:
    """Today (local time), formatted ``YYYY-MM-DD`` unless ``fmt`` says otherwise."""
    return datetime.datetime.now().strftime(fmt)


def date_days_delta(date: str, days: int) -> str:
    """The date ``days`` days after ``date`` (``YYYY-MM-DD``; negative: before)."""
    try:
        day = datetime.datetime.strptime(str(date), DATE_FORMAT)
    except ValueError:
        raise FlowError(f"date_days_delta needs a date like 2024-05-01, got {date!r}") from None
    return (day + datetime.timedelta(days=_int(days, "date_days_delta's days"))).strftime(
        DATE_FORMAT
    )


def _range(*args: Any) -> list[int]:
    bounds = [_int(a, "range's arguments") for a in args]
    if not 1 <= len(bounds) <= 3:
        raise FlowError(f"range takes 1 to 3 numbers, got {len(bounds)}")
    values = range(*bounds)
    _check_count(len(values), f"range{tuple(bounds)}")
    return list(values)


def _check_count(n: int, what: str) -> None:
    if n > _MAX_VALUES:
        raise FlowError(f"{what} gives {n:,} values; at most {_MAX_VALUES:,} are allowed")


#: The functions an ``--eval-param`` expression may call, by name.
HELPERS: Final[dict[str, Callable[..., Any]]] = {
    "days_range": days_range,
    "date_now": date_now,
    "date_days_delta": date_days_delta,
    "range": _range,
}


def eval_param(expression: str) -> list[str]:
    """The values of an ``--eval-param`` expression, in order, without repeats.

    >>> eval_param("['a', 'b', 'a']")
    ['a', 'b']
    >>> eval_param("range(1, 4)")
    ['1', '2', '3']
    >>> eval_param("__import__('os').system('true')")
    Traceback (most recent call last):
    ...
    tastypy.errors.FlowError: ...'__import__' is not one of them...
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise FlowError(f"{expression!r} is not an expression: {exc.msg}") from None
    try:
        value = _value(tree.body)
    except FlowError as exc:
        raise FlowError(
            f"cannot evaluate {expression!r}: {exc}. An expression is a string, a number, "
            f"a list of them, or a call of {', '.join(HELPERS)}; arbitrary Python is never "
            "evaluated"
        ) from None
    values = value if isinstance(value, list) else [value]
    _check_count(len(values), repr(expression))
    return list(dict.fromkeys(_text(v) for v in values))


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        raise FlowError("a list inside a list cannot be one parameter value")
    return value if isinstance(value, str) else str(value)


def _value(node: ast.AST) -> Any:
    """The value of one node of the expression, or FlowError saying what is refused."""
    if isinstance(node, ast.Constant) and type(node.value) in (str, int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand)
        if type(operand) in (int, float):
            return -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, (ast.List, ast.Tuple)):
        items: list = []
        for element in node.elts:
            item = _value(element)
            items.extend(item if isinstance(item, list) else [item])
        return items
    elif isinstance(node, ast.Call):
        return _call(node)
    raise FlowError(f"{_describe(node)} is not allowed")


def _call(node: ast.Call) -> Any:
    if not isinstance(node.func, ast.Name):
        raise FlowError(f"calling {ast.unparse(node.func)[:60]!r} is not allowed")
    name = node.func.id
    helper = HELPERS.get(name)
    if helper is None:
        raise FlowError(f"{name!r} is not one of the helpers")
    if any(k.arg is None for k in node.keywords) or any(
        isinstance(a, ast.Starred) for a in node.args
    ):
        raise FlowError(f"{name}(*...) and {name}(**...) are not allowed")
    args = [_value(a) for a in node.args]
    kwargs = {k.arg: _value(k.value) for k in node.keywords}
    try:
        return helper(*args, **kwargs)
    except TypeError as exc:
        raise FlowError(f"{name}: {exc}") from None


def _describe(node: ast.AST) -> str:
    text = repr(ast.unparse(node)[:60])
    if isinstance(node, ast.Name):
        return f"the name {text}"
    if isinstance(node, ast.Attribute):
        return f"attribute access {text}"
    if isinstance(node, ast.Constant):
        return f"the constant {text}"
    return f"{text} (a {type(node).__name__})"


def parse_assignment(text: str, option: str = "--param") -> tuple[str, str]:
    """``KEY=VALUE`` split at its first ``=``; the key must name a parameter."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not is_name(key):
        raise FlowError(
            f"{option} {text!r}: write {option} KEY=VALUE, with KEY a parameter name "
            "(letters, digits and _, not starting with a digit)"
        )
    return key, value


def param_values(
    params: Iterable[tuple[str, str]] | dict[str, str] = (),
    eval_params: Sequence[tuple[str, str]] | dict[str, str] = (),
) -> list[dict[str, str]]:
    """One dict of parameters per run: ``params`` in each, with every
    combination of the values of the ``eval_params`` expressions (datamake
    ran the flow once per combination), in the order given.

    >>> param_values({"user": "tims"}, {"n": "range(2)"})
    [{'user': 'tims', 'n': '0'}, {'user': 'tims', 'n': '1'}]
    """
    fixed = dict(params.items() if isinstance(params, dict) else params)
    evaluated = dict(eval_params.items() if isinstance(eval_params, dict) else eval_params)
    for key, value in [*fixed.items(), *evaluated.items()]:
        if not is_name(key):
            raise FlowError(f"{key!r} cannot name a parameter (letters, digits and _)")
        if not isinstance(value, str):
            raise FlowError(f"the value of parameter {key!r} must be a str, got {value!r}")
    both = sorted(set(fixed) & set(evaluated))
    if both:
        raise FlowError(
            f"parameter {both[0]!r} is given both as --param and as --eval-param; give it once"
        )
    lists = {key: eval_param(expression) for key, expression in evaluated.items()}
    empty = [key for key, values in lists.items() if not values]
    if empty:
        raise FlowError(
            f"--eval-param {empty[0]}={evaluated[empty[0]]} gives no value: nothing to run"
        )
    runs = []
    for combination in itertools.product(*lists.values()):
        run = dict(fixed)
        run.update(zip(lists, combination))
        runs.append(run)
    return runs
