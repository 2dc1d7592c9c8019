"""tastypy's public names are exactly the ones ``__all__`` lists, and each is
documented."""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

from conftest import ROOT

import tastypy

#: Names that must stay public: the API of 0.0.3 users rely on, and the
#: errors they catch. ``__all__`` may hold more (trackers, tools); each of
#: those is then checked like these.
REQUIRED = {
    "POD",
    "PersistentOrderedDict",
    "TastypyError",
    "StorageError",
    "NotAPODError",
    "CorruptFileError",
    "FormatVersionError",
    "LegacyFormatError",
    "LockTimeoutError",
    "KindMismatchError",
    "InvalidArgumentError",
    "InvalidKeyError",
    "InvalidValueError",
    "PersistentOrderedDictException",
    "PersistentOrderedDictIntegrityError",
    "DuplicateKeyError",
    "import_legacy",
    "__version__",
}

#: Aliases that come in pairs: if one is public, so is the other.
PAIRS = [
    ("POD", "PersistentOrderedDict"),
    ("Tracker", "ProgressTracker"),
    ("SharedPOD", "POD"),
    ("SharedPersistentOrderedDict", "POD"),
    ("SharedTracker", "Tracker"),
    ("SharedProgressTracker", "Tracker"),
]


def documentation() -> str:
    paths = [Path(ROOT) / "README.md", *sorted((Path(ROOT) / "docs").rglob("*.md"))]
    paths += sorted((Path(ROOT) / "docs").rglob("*.rst"))
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def test_all_holds_the_required_names_once():
    assert len(tastypy.__all__) == len(set(tastypy.__all__))
    assert REQUIRED <= set(tastypy.__all__), REQUIRED - set(tastypy.__all__)


def test_every_name_in_all_is_importable():
    namespace: dict = {}
    exec("from tastypy import *", namespace)
    for name in tastypy.__all__:
        assert hasattr(tastypy, name), name
        if name != "__version__":
            assert name in namespace, name


def test_no_private_name_is_public():
    for name in tastypy.__all__:
        assert not name.startswith("_") or name == "__version__", name


def test_every_public_name_is_documented():
    docs = documentation()
    missing = [
        name
        for name in tastypy.__all__
        if not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", docs)
        and not re.search(rf"tastypy\.{re.escape(name)}(?!\w)", docs)
    ]
    assert not missing, f"public but not in README.md or docs/: {missing}"


def test_nothing_public_is_left_out_of_all():
    # A public-looking attribute that is neither in __all__ nor a submodule
    # would be an accident of the imports.
    stray = [
        name
        for name, value in vars(tastypy).items()
        if not name.startswith("_")
        and name not in tastypy.__all__
        and not isinstance(value, types.ModuleType)
    ]
    assert not stray, stray


def test_aliases_are_the_same_object():
    for short, long in PAIRS:
        if short in tastypy.__all__ or long in tastypy.__all__:
            assert short in tastypy.__all__ and long in tastypy.__all__
            assert getattr(tastypy, short) is getattr(tastypy, long)


def test_errors_share_one_root():
    for name in tastypy.__all__:
        value = getattr(tastypy, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, tastypy.TastypyError), name


def test_version_is_a_string():
    assert isinstance(tastypy.__version__, str) and tastypy.__version__


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_executor_uses_only_the_trackers_public_api():
    # tastypy/executor.py has no classes: any ``x._name`` in it reaches into
    # another object (the tracker), and it imports nothing of the tracker
    # module (the tracker calls in; imports point one way).
    path = Path(ROOT) / "tastypy" / "executor.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found.append(f"line {node.lineno}: class {node.name} (then self._x is allowed)")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            found.append(f"line {node.lineno}: .{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _private(node.args[1].value)
            # The concurrent.futures executor's worker count: not tastypy's.
            and not (isinstance(node.args[0], ast.Name) and node.args[0].id == "executor")
        ):
            found.append(f"line {node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[:2] == ["tastypy", "tracker"]:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [
                f"line {node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if node.module.startswith("tastypy") and _private(alias.name)
            ]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[:2] == ["tastypy", "tracker"]
            ]
    assert not found, f"{path.name} reaches into the tracker: {found}"
