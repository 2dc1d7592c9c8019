"""The tracker package keeps the shape docs/design.md describes ("The
tracker's modules"): imports point one way, and each method of
ProgressTracker is defined in one of its classes only."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

from tastypy.pod import PersistentOrderedDict
from tastypy.tracker import ProgressTracker

PACKAGE = Path(ROOT) / "tastypy"

#: What the tracker's modules may import from tastypy at module level.
BELOW_THE_TRACKER = {
    "tastypy",  # ``from tastypy import _exit, records``
    "tastypy._args",
    "tastypy._exit",
    "tastypy._identity",
    "tastypy.codec",
    "tastypy.errors",
    "tastypy.pod",
    "tastypy.records",
    "tastypy.storage",
    "tastypy.storage.store",
    "tastypy.storage.tail",
}

#: Imported by name from the bare ``tastypy`` package: only modules below
#: (``capture``: the routing of a task's output to its log, stdlib only).
FROM_TASTYPY = {"_exit", "_identity", "records", "capture"}


def _function() -> None:
    return None


def _module_level_imports(path: Path) -> list:
    """``(module, names)`` of each import outside functions, ``TYPE_CHECKING`` blocks aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def test_the_tracker_imports_only_what_lies_below_it():
    for path in sorted((PACKAGE / "tracker").glob("*.py")):
        for module, names in _module_level_imports(path):
            if not module.startswith("tastypy") or module.startswith("tastypy.tracker"):
                continue
            assert module in BELOW_THE_TRACKER, f"{path.name} imports {module}"
            if module == "tastypy":
                assert set(names) <= FROM_TASTYPY, f"{path.name} imports {names} from tastypy"


def test_nothing_the_tracker_uses_imports_it():
    # executor.py too: the tracker calls it (run), it never calls back in.
    below = [PACKAGE / f"{name}.py" for name in ("pod", "codec", "errors", "records", "_args")]
    below += [PACKAGE / "_identity.py", PACKAGE / "_exit.py", PACKAGE / "executor.py"]
    below += [PACKAGE / "capture.py"]
    below += sorted((PACKAGE / "storage").glob("*.py"))
    for path in below:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                named = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                named = [alias.name for alias in node.names]
            else:
                continue
            assert not any(n.startswith("tastypy.tracker") for n in named), (
                f"{path.relative_to(PACKAGE)} imports the tracker"
            )


def test_each_method_of_the_tracker_is_defined_in_one_class():
    # A mixin's super() then reaches PersistentOrderedDict, whatever the
    # order of the mixins: a second definition would be called instead.
    mro = ProgressTracker.__mro__
    own = mro[: mro.index(PersistentOrderedDict)]
    where: dict = {}
    for cls in own:
        for name, value in vars(cls).items():
            if not isinstance(value, (type(_function), property, staticmethod, classmethod)):
                continue  # __module__, __doc__, _KIND, the ABC's cache...
            assert name not in where, f"{name} is defined in {where[name]} and {cls.__name__}"
            where[name] = cls.__name__
