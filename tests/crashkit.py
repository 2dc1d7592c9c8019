"""Helpers shared by the crash, fault and soak tests.

A writer runs in a real child process (``python -c CODE args``), armed with
a fault point through ``TASTYPY_FAULT`` when asked; the test process then
reopens the POD and compares it with a model kept as a plain dict.
"""

from __future__ import annotations

import ast
import copy
import os
import random
import signal
import subprocess
from typing import Any

from conftest import child_env as _child_env
from conftest import run_python, spawn_python

import tastypy
from tastypy.storage.repair import check

#: Applies one operation to a POD or to a dict; shared by children and models.
APPLY_SOURCE = """
def apply_op(target, op):
    kind = op[0]
    if kind == "set":
        target[op[1]] = op[2]
    elif kind == "del":
        del target[op[1]]
    elif kind == "nested":
        target[op[1]][op[2]] = op[3]
    elif kind == "append":
        target[op[1]].append(op[2])
    else:
        raise ValueError(op)
"""
_namespace: dict = {}
exec(APPLY_SOURCE, _namespace)


def apply_op(target: Any, op: tuple) -> None:
    # Values are copied so that the model never shares a list with an op.
    _namespace["apply_op"](target, copy.deepcopy(op))


def replay(ops: list[tuple], start: dict | None = None) -> dict:
    model = copy.deepcopy(start or {})
    for op in ops:
        apply_op(model, op)
    return model


def child_env(fault: str | None = None) -> dict:
    """The child's environment: this checkout and this directory on the path,
    and ``TASTYPY_FAULT`` armed with ``fault`` when given."""
    env = _child_env(**({"TASTYPY_FAULT": fault} if fault else {}))
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = here + os.pathsep + env["PYTHONPATH"]
    return env


def run_child(code: str, *args: Any, fault: str | None = None) -> subprocess.CompletedProcess:
    return run_python(code, *args, env=child_env(fault))


def spawn_child(code: str, *args: Any, fault: str | None = None) -> subprocess.Popen:
    return spawn_python(code, *args, env=child_env(fault))


def assert_killed(proc: subprocess.CompletedProcess) -> None:
    """The fault fired: the child died of SIGKILL, not of an error or old age."""
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr[-2000:])


def literal(ops: Any) -> str:
    text = repr(ops)
    assert ast.literal_eval(text) == ops
    return text


def files_of(path: os.PathLike | str) -> dict[str, bytes]:
    """Every regular file of a POD directory and its bytes."""
    out = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                out[name] = f.read()
    return out


def read_pod(path: os.PathLike | str, unchanged: bool = True) -> list[tuple]:
    """Open the POD, return its items in order, and check that opening and
    reading it changed nothing on disk (``unchanged=False`` when the POD's
    creation was interrupted, which opening completes)."""
    before = files_of(path)
    with tastypy.POD(path) as pod:
        items = list(pod.items())
    if unchanged:
        assert files_of(path) == before, "opening and reading a POD changed its files"
    return items


def assert_clean(path: os.PathLike | str) -> None:
    """``tastypy check`` finds no problem and no unfinished batch."""
    report = check(path)
    assert report.ok, str(report)
    assert not [n for n in report.notes if "unfinished batch" in n], str(report)


# -- the randomized soak --------------------------------------------------------------

_WORDS = ["alpha", "β", "ünïcode", "日本", "emoji 🎉", 'quote "', "back\\slash", "tab\t", ""]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return rng.randrange(-(10**12), 10**12)
    if kind == 1:
        return rng.random() * 10 ** rng.randrange(-5, 20)
    if kind == 2:
        return rng.choice(_WORDS) * rng.randrange(1, 4)
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.randrange(1000)
    if kind in (6, 7):
        size = rng.randrange(4)
        return {rng.choice(_WORDS) + str(i): _value(rng, depth + 1) for i in range(size)}
    return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def _key(rng: random.Random) -> Any:
    kind = rng.randrange(4)
    n = rng.randrange(400)
    if kind == 0:
        return n
    if kind == 1:
        return ("t", n, rng.choice(["a", "b"]))
    return f"key-{n}"


def soak_steps(seed: str, start: dict, count: int) -> list[tuple]:
    """A random run of ``count`` steps from the state ``start``: operations,
    then ``("sync",)`` or ``("compact",)``. Writer and test both call it, with
    the same seed and start, and get the same steps."""
    rng = random.Random(seed)
    model = copy.deepcopy(start)
    steps: list[tuple] = []
    while len(steps) < count:
        roll = rng.random()
        keys = list(model)
        if roll < 0.06:
            steps.append(("compact",) if rng.random() < 0.1 else ("sync",))
            continue
        if roll < 0.45 or not keys:
            op: tuple = ("set", _key(rng), _value(rng))
        elif roll < 0.6:
            op = ("set", rng.choice(keys), _value(rng))
        elif roll < 0.75:
            op = ("del", rng.choice(keys))
        else:
            key = rng.choice(keys)
            value = model[key]
            if type(value) is dict:
                op = ("nested", key, rng.choice(_WORDS), _value(rng, 1))
            elif type(value) is list:
                op = ("append", key, _value(rng, 1))
            else:
                # Delete and set again: the key moves to the end.
                steps.append(("del", key))
                apply_op(model, ("del", key))
                op = ("set", key, _value(rng))
        apply_op(model, op)
        steps.append(op)
    return steps


def states_after_syncs(steps: list[tuple], start: dict, wanted: set[int]) -> dict[int, dict]:
    """``{n: the POD after the n-th sync of steps}`` for each n in ``wanted``
    (0: at the start). A sync number past the end of the steps is left out."""
    states = {}
    model = copy.deepcopy(start)
    done = 0
    if 0 in wanted:
        states[0] = copy.deepcopy(model)
    for step in steps:
        if step[0] in ("sync", "compact"):
            done += 1
            if done in wanted:
                states[done] = copy.deepcopy(model)
        else:
            apply_op(model, step)
    return states
