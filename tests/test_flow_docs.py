"""docs/flows.md runs as written: its flow files are saved, its console
sessions run in order in one fresh directory, and each command's output is
compared with the page's (dates and durations aside, ``...`` matching
anything). Its ``>>>`` examples run in tests/test_readme.py."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, child_env

PAGE = Path(ROOT) / "docs" / "flows.md"

_FILE = re.compile(r"^`([\w.-]+\.json)`:\n\n```json\n(.*?)^```", re.S | re.M)
_CONSOLE = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
#: What differs from run to run: today's dates and how long things took.
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_SECONDS = re.compile(r"\b\d+\.\d+ s\b")


def files(text: str) -> dict[str, str]:
    return {name: body for name, body in _FILE.findall(text)}


def commands(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` of every ``$`` line of the console blocks."""
    out: list[tuple[str, list[str]]] = []
    for block in _CONSOLE.findall(text):
        for line in block.splitlines():
            if line.startswith("$ "):
                out.append((line[2:], []))
            else:
                out[-1][1].append(line)
    return [(command, "".join(f"{line}\n" for line in lines)) for command, lines in out]


def normal(text: str) -> str:
    return _SECONDS.sub("N s", _DATE.sub("DATE", text))


def test_the_page_has_the_two_datamake_examples():
    text = PAGE.read_text(encoding="utf-8")
    assert {"diamond.json", "date.json"} <= set(files(text))
    shown = [command for command, _ in commands(text)]
    assert "tastypy flow examples.user-details diamond.json --param username=tims" in shown
    assert "tastypy flow examples.download date.json --eval-param date='days_range(-2,0)'" in shown


def test_the_console_sessions_run_as_shown(tmp_path):
    text = PAGE.read_text(encoding="utf-8")
    for name, body in files(text).items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    checker = doctest.OutputChecker()
    status = 0
    for command, expected in commands(text):
        if command == "echo $?":
            got = f"{status}\n"
        else:
            shell = re.sub(r"^tastypy ", f"{sys.executable} -m tastypy ", command)
            done = subprocess.run(
                shell,
                shell=True,
                executable="/bin/bash",
                cwd=tmp_path,
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            got, status = done.stdout, done.returncode
            assert not done.stderr, f"$ {command}\nwrote to stderr:\n{done.stderr}"
        assert checker.check_output(normal(expected), normal(got), doctest.ELLIPSIS), (
            f"$ {command}\n--- the page shows:\n{expected}--- it printed:\n{got}"
        )
