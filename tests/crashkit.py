"""Helpers shared by the crash, fault and soak tests.

A writer runs in a real child process (``python -c CODE args``), armed with
a fault point through ``TASTYPY_FAULT`` when asked; the test process then
reopens the POD and compares it with a model kept as a plain dict.
"""

from __future__ import annotations

import ast
import copy
import os
import signal
import subprocess
import sys
from typing import Any

import tastypy
from tastypy.repair import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tastypy.__file__)))

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
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("TASTYPY_FAULT", None)
    if fault:
        env["TASTYPY_FAULT"] = fault
    return env


def run_child(code: str, *args: Any, fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=child_env(fault),
        capture_output=True,
        text=True,
        timeout=120,
    )


def spawn_child(code: str, *args: Any, fault: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        env=child_env(fault),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


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
