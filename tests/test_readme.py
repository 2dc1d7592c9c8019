"""The README's examples (and any ``>>>`` example in docs/*.md) run as doctests,
and their ``console`` blocks as shell commands.

The python blocks of one file share their names, like a reader's session.
``tmp`` is a ``pathlib.Path`` of a fresh scratch directory, which is also
the working directory while the examples run. A ``console`` block holds
``$ command`` lines, each followed by what it prints (stdout and stderr, as
a terminal shows them; ``...`` stands for what varies, as in doctests); it
runs in bash, where it stands in the file, with ``tastypy`` the command of
this checkout, and must exit with status 0.
"""

from __future__ import annotations

import doctest
import gc
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

_BLOCK = re.compile(r"^```(python|pycon|console)[^\n]*\n(.*?)^```", re.S | re.M)
_OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

FILES = [
    Path(ROOT) / "README.md",
    *sorted((Path(ROOT) / "docs").glob("*.md")),
    *sorted((Path(ROOT) / "docs" / "recipes").glob("*.md")),
]

#: Pages whose console sessions a test of their own runs, with its rules.
_SESSIONS_ELSEWHERE = {"flows.md": "tests/test_flow_docs.py"}


def blocks(path: Path) -> list[tuple[str, int, str]]:
    """``(kind, line, text)`` of each example to run, in order: python
    blocks holding a ``>>>`` example, and console blocks."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in _BLOCK.finditer(text):
        kind = "console" if match.group(1) == "console" else "python"
        if kind == "console" and path.name in _SESSIONS_ELSEWHERE:
            continue
        if kind == "console" or ">>>" in match.group(2):
            out.append((kind, text.count("\n", 0, match.start(2)), match.group(2)))
    return out


def examples(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of each python block holding a ``>>>`` example."""
    return [(line, text) for kind, line, text in blocks(path) if kind == "python"]


def _commands(block: str) -> list[tuple[int, str, str]]:
    """``(offset, command, expected output)`` of each ``$ `` line of a block."""
    out: list = []
    for offset, line in enumerate(block.splitlines()):
        if line.startswith("$ "):
            out.append((offset, line[2:], ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1], out[-1][2] + line + "\n")
    return out


def _tastypy_command(directory: Path) -> dict:
    """An environment whose ``tastypy`` is this checkout's (``python -m tastypy``)."""
    bin_dir = directory / ".bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "tastypy"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m tastypy "$@"\n')
    script.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    return env


def run_console(block: str, path: Path, lineno: int, cwd: Path, env: dict) -> int:
    """Run a console block's commands; report each that fails; how many failed."""
    failed = 0
    checker = doctest.OutputChecker()
    for offset, command, expected in _commands(block):
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0 and checker.check_output(expected, proc.stdout, _OPTIONS):
            continue
        failed += 1
        _report(path)(
            f"{path.name}, line {lineno + offset + 1}: $ {command}\n"
            f"exit status {proc.returncode}\nexpected:\n{expected}got:\n{proc.stdout}\n"
        )
    return failed


def test_the_readme_has_a_runnable_example():
    assert examples(Path(ROOT) / "README.md")


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if blocks(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    globs = {"tmp": tmp_path, "__name__": "__readme__"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=_OPTIONS, verbose=False)
    env = _tastypy_command(tmp_path)
    failed_commands = commands = 0
    for kind, lineno, block in blocks(path):
        if kind == "console":
            commands += len(_commands(block))
            failed_commands += run_console(block, path, lineno, tmp_path, env)
            continue
        test = parser.get_doctest(block, globs, path.name, str(path), lineno)
        runner.run(test, out=_report(path), clear_globs=False)
        globs.update(test.globs)  # the next block goes on from here
    for value in list(globs.values()):  # PODs left open by the examples
        close = getattr(value, "close", None)
        if callable(close) and type(value).__module__.startswith("tastypy"):
            close()
    globs.clear()
    gc.collect()
    failed, tried = runner.summarize(verbose=False)
    assert tried + commands > 0
    assert failed + failed_commands == 0, "".join(_REPORTS.pop(str(path), []))


_REPORTS: dict[str, list[str]] = {}


def _report(path: Path):
    return _REPORTS.setdefault(str(path), []).append
