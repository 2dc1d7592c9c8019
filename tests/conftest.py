"""Fixtures and helpers shared by the test modules.

:func:`run_python` runs a snippet in a real child process that imports
tastypy from this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import tastypy

#: The directory holding the ``tastypy`` package under test.
ROOT = str(Path(tastypy.__file__).resolve().parent.parent)


#: The fields a lease adds to a task record while a process holds it
#: (docs/leases.md): they name a time and a process, so tests that compare
#: whole records leave them out.
LEASE_FIELDS = ("_lease_until", "_holder")


def without_lease(record: dict) -> dict:
    """``record`` without its lease fields."""
    return {field: value for field, value in record.items() if field not in LEASE_FIELDS}


def without_times(record: dict) -> dict:
    """``record`` without its lease fields and its ``_done_at``: what two
    runs of the same work agree on (a done one must have a ``_done_at``)."""
    assert ("_done_at" in record) == bool(record.get("_done")), record
    return {
        field: value
        for field, value in record.items()
        if field not in LEASE_FIELDS and field != "_done_at"
    }


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this checkout first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    env.pop("TASTYPY_FAULT", None)
    env.update(extra)
    return env


def _command(code: str, args: tuple[Any, ...]) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]


def run_python(
    code: str, *args: Any, timeout: float = 120, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess:
    """Run ``code`` (dedented) in a child Python; ``args`` become ``sys.argv[1:]``.

    Returns the completed process with text ``stdout``/``stderr``.
    """
    return subprocess.run(
        _command(code, args),
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def spawn_python(code: str, *args: Any, env: dict[str, str] | None = None, **kw: Any):
    """Start ``code`` in a child Python and return the ``Popen`` (text pipes)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(_command(code, args), env=env or child_env(), text=True, **kw)


@pytest.fixture
def pod_path(tmp_path: Path) -> Path:
    """A path where no POD exists yet."""
    return tmp_path / "test.pod"


@pytest.fixture
def open_pod(pod_path: Path):
    """``open_pod(**kw)`` opens a POD at ``pod_path``; every one is closed after the test."""
    opened: list[tastypy.POD] = []

    def factory(path: Any = None, *args: Any, **kw: Any) -> tastypy.POD:
        pod = tastypy.POD(pod_path if path is None else path, *args, **kw)
        opened.append(pod)
        return pod

    yield factory
    for pod in opened:
        pod.close()
