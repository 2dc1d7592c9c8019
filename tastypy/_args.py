"""Checks of the arguments that the constructors and the commands share.

An argument of the wrong kind is refused at the call, before anything on
disk is touched: ``POD("")`` would otherwise make the current directory a
POD, and ``POD(path, gzipped="no")`` a gzipped one (any non-empty string is
true).
"""

from __future__ import annotations

import os
from typing import Any

from tastypy.errors import InvalidArgumentError

__all__ = ["check_flag", "check_path"]


def check_path(path: Any, name: str = "path") -> str:
    """``path`` as a ``str``: refused unless it is a non-empty ``str`` or a
    path-like object (``pathlib.Path``) of one, without a NUL character."""
    try:
        text = os.fspath(path)
    except TypeError:
        raise InvalidArgumentError(
            f"{name} must be a str or a path-like object such as pathlib.Path, got "
            f"{type(path).__name__} ({path!r}). Give the directory that holds (or will hold) "
            "the POD, e.g. 'jobs.pod'."
        ) from None
    if not isinstance(text, str):
        raise InvalidArgumentError(
            f"{name} must be a str, not bytes ({path!r}); decode it first, e.g. with "
            "os.fsdecode(path)."
        )
    if not text:
        raise InvalidArgumentError(
            f"{name} is empty. Give the directory that holds (or will hold) the POD, e.g. "
            "'jobs.pod'; for the current directory, say '.' explicitly."
        )
    if "\0" in text:
        raise InvalidArgumentError(
            f"{name} holds a NUL character, which no file name may hold: {text!r}."
        )
    return text


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is ``True`` or ``False``; anything else is refused
    rather than taken for its truth value (``"no"`` is true)."""
    if type(value) is not bool:
        raise InvalidArgumentError(
            f"{name} must be True or False, got {value!r} ({type(value).__name__}). Pass "
            f"{name}=True or {name}=False."
        )
    return value
