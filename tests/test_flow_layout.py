"""The flow package keeps its shape: it stands on the tracker's public API
only (no ``x._name`` of another object, no private name imported from
outside the package), nothing below it imports it, and each name it
exports is documented in docs/flows.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

import tastypy.flow

PACKAGE = Path(ROOT) / "tastypy"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _reaches_in(path: Path) -> list[str]:
    """Private attributes of objects other than ``self`` and private imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "os")):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tastypy"):
            if not node.module.startswith("tastypy.flow"):
                found += [f"line {node.lineno}: {a.name}" for a in node.names if _private(a.name)]
    return found


def test_flows_use_only_the_public_api_of_what_they_stand_on():
    # A pool's _max_workers (concurrent.futures', read with getattr) is not tastypy's.
    for path in sorted((PACKAGE / "flow").glob("*.py")):
        assert not _reaches_in(path), f"{path.name}: {_reaches_in(path)}"


def test_nothing_below_the_flows_imports_them():
    # cli.py registers the ``flow`` subcommand: it stands above the flows.
    for path in sorted(PACKAGE.rglob("*.py")):
        inside = path.relative_to(PACKAGE).parts
        if inside[0] in ("flow", "cli.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("tastypy.flow") for n in names), f"{inside} imports it"


def test_every_exported_name_is_documented():
    docs = (Path(ROOT) / "docs" / "flows.md").read_text(encoding="utf-8")
    missing = [n for n in tastypy.flow.__all__ if not re.search(rf"\b{re.escape(n)}\b", docs)]
    assert not missing, f"in tastypy.flow.__all__ but not in docs/flows.md: {missing}"
    assert sorted(tastypy.flow.__all__) == sorted(
        n for n in vars(tastypy.flow) if not n.startswith("_") and not _is_module(n)
    )


def _is_module(name: str) -> bool:
    return type(getattr(tastypy.flow, name)).__name__ == "module"
