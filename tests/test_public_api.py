"""tastypy's public names are exactly the ones ``__all__`` lists, and each is
documented."""

from __future__ import annotations

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
PAIRS = [("POD", "PersistentOrderedDict"), ("Tracker", "ProgressTracker")]


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
