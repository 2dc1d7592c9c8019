"""``${name}`` in commands, artifacts and parameter defaults.

The rules are datamake's, which used :class:`string.Template`: ``${name}``
and ``$name`` take the parameter's value and ``$$`` is a literal ``$``. One
thing differs, for shell commands: a ``$`` that starts no placeholder
(``$1``, ``$(date)``, ``${#x}``) is left as it is, where ``string.Template``
raised an error. A bare ``$HOME`` still names a parameter, as in datamake,
so a flow written for datamake means the same here; write ``$$HOME`` for the
shell's variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

__all__ = ["is_name", "names", "substitute"]

#: A parameter name: what string.Template accepts (and datamake's files use).
_NAME: Final = r"[_a-zA-Z][_a-zA-Z0-9]*"
_NAME_RE: Final = re.compile(rf"^{_NAME}$")
_PLACEHOLDER: Final = re.compile(rf"\$(?:(\$)|\{{({_NAME})\}}|({_NAME}))")


def is_name(text: object) -> bool:
    """Whether ``text`` can name a parameter (``${text}`` would find it)."""
    return isinstance(text, str) and _NAME_RE.match(text) is not None


def names(text: str | None) -> list[str]:
    """The parameters ``text`` refers to, in order of first mention."""
    if not text:
        return []
    found: dict[str, None] = {}
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(2) or match.group(3)
        if name:
            found[name] = None
    return list(found)


def substitute(text: str, params: Mapping[str, str], missing: Callable[[str], Exception]) -> str:
    """``text`` with each placeholder replaced by its parameter's value.

    ``missing(name)`` makes the error raised for a parameter ``params``
    lacks, so the caller can say which task and field asked for it.
    """

    def replace(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(3)
        try:
            return params[name]
        except KeyError:
            raise missing(name) from None

    return _PLACEHOLDER.sub(replace, text)
