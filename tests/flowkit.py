"""Helpers shared by the flow tests: write a flow file, run ``tastypy flow``
(in this process or in a child), and count which commands ran.

Commands in test flows append their name to ``runs.log`` in the directory
they run in (:func:`logged`), so a test sees what ran, in what order, and
how often, whatever process ran it.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import child_env

from tastypy.cli import main


def write_flow(
    folder: Path, tasks: list[dict], namespace: str | None = "ex", name: str = "flow.json"
) -> Path:
    """A datamake flow file of ``tasks`` in ``folder``."""
    document: dict[str, Any] = {"version": "1.0", "tasks": tasks}
    if namespace is not None:
        document["namespace"] = namespace
    path = folder / name
    path.write_text(json.dumps(document, indent=1), encoding="utf-8")
    return path


def logged(name: str, then: str = "") -> str:
    """A command that notes ``name`` in runs.log, then does ``then``."""
    return f"echo {name} >> runs.log" + (f" && {then}" if then else "")


def runs(folder: Path) -> list[str]:
    """The names the commands noted, in the order they ran."""
    path = folder / "runs.log"
    return path.read_text(encoding="utf-8").split() if path.exists() else []


def counts(folder: Path) -> collections.Counter:
    return collections.Counter(runs(folder))


def cli(*args: Any) -> int:
    """``tastypy flow ARGS`` in this process (the caller chdirs and captures)."""
    return main(["flow", *map(str, args)])


def cli_child(folder: Path, *args: Any, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m tastypy flow ARGS`` in a child process run in ``folder``."""
    return subprocess.run(
        [sys.executable, "-m", "tastypy", "flow", *map(str, args)],
        cwd=folder,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn_cli(folder: Path, *args: Any, own_group: bool = False) -> subprocess.Popen:
    """``python -m tastypy flow ARGS`` started in a child, not waited for;
    ``own_group``: in a new session, for a signal to its whole group."""
    return subprocess.Popen(
        [sys.executable, "-m", "tastypy", "flow", *map(str, args)],
        cwd=folder,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=own_group,
    )
