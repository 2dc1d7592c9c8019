"""The README's examples (and any ``>>>`` example in docs/*.md) run as doctests.

The python blocks of one file share their names, like a reader's session.
``tmp`` is a ``pathlib.Path`` of a fresh scratch directory, which is also
the working directory while the examples run.
"""

from __future__ import annotations

import doctest
import gc
import re
from pathlib import Path

import pytest
from conftest import ROOT

_BLOCK = re.compile(r"^```(?:python|pycon)[^\n]*\n(.*?)^```", re.S | re.M)

FILES = [Path(ROOT) / "README.md", *sorted((Path(ROOT) / "docs").glob("*.md"))]


def examples(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of each python block holding a ``>>>`` example."""
    text = path.read_text(encoding="utf-8")
    out = []
    for match in _BLOCK.finditer(text):
        if ">>>" in match.group(1):
            out.append((text.count("\n", 0, match.start(1)), match.group(1)))
    return out


def test_the_readme_has_a_runnable_example():
    assert examples(Path(ROOT) / "README.md")


@pytest.mark.parametrize(
    "path",
    [p for p in FILES if examples(p)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    globs = {"tmp": tmp_path, "__name__": "__readme__"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    for lineno, block in examples(path):
        test = parser.get_doctest(block, globs, path.name, str(path), lineno)
        runner.run(test, out=_report(path))
    for value in list(globs.values()):  # PODs left open by the examples
        close = getattr(value, "close", None)
        if callable(close) and type(value).__module__.startswith("tastypy"):
            close()
    globs.clear()
    gc.collect()
    failed, tried = runner.summarize(verbose=False)
    assert tried > 0
    assert failed == 0, "".join(_REPORTS.pop(str(path), []))


_REPORTS: dict[str, list[str]] = {}


def _report(path: Path):
    return _REPORTS.setdefault(str(path), []).append
