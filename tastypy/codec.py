"""Keys and values to and from JSON bytes (orjson), with validation.

Top-level keys are ``str``, ``int`` (not ``bool``) or tuples of those, nested.
JSON tells strings from numbers, and a key is never a list, so a JSON array
read back as a key is a tuple: every key comes back with its own type.
"""

from __future__ import annotations

import math
from typing import Any, Final, Union

import orjson

from tastypy.errors import InvalidKeyError, InvalidValueError

Key = Union[str, int, tuple]

#: Nested dict keys that are not strings become strings, as with ``json``;
#: datetimes and dataclasses are refused rather than turned into something
#: that reads back as a different type.
DUMP_OPTIONS: Final = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)

#: A record line: ``[key,value]`` and a newline.
LINE_OPTIONS: Final = DUMP_OPTIONS | orjson.OPT_APPEND_NEWLINE

#: The same line where every dict key is a string (a tracker's records):
#: the same bytes, a quarter faster; a key that is not a string raises
#: ``TypeError``, and the caller dumps again with :data:`LINE_OPTIONS`.
STR_LINE_OPTIONS: Final = LINE_OPTIONS & ~orjson.OPT_NON_STR_KEYS

dumps = orjson.dumps
loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError

_VALUE_HELP: Final = (
    "tastypy stores JSON: dicts, lists, str, int, float, bool and None (tuples become lists)."
)


def check_key(key: Any) -> None:
    """Raise :class:`~tastypy.errors.InvalidKeyError` unless ``key`` may be a
    top-level key: ``str``, ``int`` or (nested) tuples of those, that JSON can
    spell (ints within 64 bits, strings without lone surrogates)."""
    _check_key_type(key, key)
    try:
        dumps(key)
    except TypeError as exc:
        raise InvalidKeyError(
            f"cannot use {key!r} as a key: {exc}. Convert the key, e.g. str(key)."
        ) from None


def _check_key_type(part: Any, key: Any) -> None:
    t = type(part)
    if t is str or t is int:
        return
    if t is tuple:
        for sub in part:
            _check_key_type(sub, key)
        return
    where = "" if part is key else f" (in the tuple key {key!r})"
    raise InvalidKeyError(
        f"tastypy keys must be str, int or tuples of those; got {t.__name__} ({part!r}){where}. "
        "Convert the key, e.g. str(key)."
    )


def key_from_json(obj: Any) -> Key:
    """Turn a decoded JSON key back into the Python key (arrays become tuples)."""
    if type(obj) is list:
        return tuple([key_from_json(part) for part in obj])
    return obj


def _has_nonfinite(value: Any) -> bool:
    t = type(value)
    if t is float:
        return not math.isfinite(value)
    if t is dict:
        return any(_has_nonfinite(v) for v in value.values())
    if t is list or t is tuple:
        return any(_has_nonfinite(v) for v in value)
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_nonfinite(v) for v in value)
    return False


def _nonfinite_error(key: Any) -> InvalidValueError:
    return InvalidValueError(
        f"cannot store the value for key {key!r}: it holds NaN or infinity, which JSON "
        "cannot represent. Store None or a string such as 'nan' instead."
    )


def encode_value(key: Any, value: Any) -> bytes:
    """Encode ``value`` to JSON bytes, or raise naming ``key`` and the bad type.

    NaN and infinities are refused: JSON has no spelling for them, and orjson
    would silently store ``null``.
    """
    try:
        data = dumps(value, option=DUMP_OPTIONS)
    except TypeError as exc:
        raise InvalidValueError(
            f"cannot store the value for key {key!r}: {exc} ({type(value).__name__} "
            f"value {_short(value)}). {_VALUE_HELP}"
        ) from None
    if b"null" in data and _has_nonfinite(value):
        raise _nonfinite_error(key)
    return data


def encode_record(key: Any, value: Any, option: int) -> bytes:
    """The record line ``[key,value]``, validating both; raises the explanatory
    :class:`~tastypy.errors.InvalidKeyError` or ``InvalidValueError``."""
    try:
        line = dumps((key, value), option=option)
    except TypeError:
        raise_for(key, value)
        raise  # pragma: no cover - raise_for always raises here
    if b"null" in line and _has_nonfinite(value):
        raise _nonfinite_error(key)
    return line


def raise_for(key: Any, value: Any) -> None:
    """Raise the error that explains why ``(key, value)`` cannot be encoded."""
    check_key(key)
    encode_value(key, value)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def encode_key(key: Key) -> bytes:
    return dumps(key)


def record_line(key: Any, value: Any) -> bytes:
    """The journal line ``[key,value]`` of a key whose value is already held.

    Raises ``TypeError`` or ``ValueError`` when the value (changed in place
    since it was stored) is no longer something JSON can hold; NaN and
    infinity are refused here too, since orjson would write ``null``.
    """
    line = dumps((key, value), option=LINE_OPTIONS)
    if b"null" in line and _has_nonfinite(value):
        raise ValueError("it holds NaN or infinity")
    return line


# -- what orjson reads but cannot write back, or reads inexactly ----------------

#: The integers orjson reads and writes exactly. A JSON number outside this
#: range is read as a rounded float (and orjson refuses to write the int).
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1

#: The deepest record line orjson writes: ``[key, value]`` counts one level,
#: so a value may be nested one level less. orjson reads up to 1024 levels.
MAX_DEPTH: Final = 254

#: ``text.translate(_OPENERS, _NOT_OPENERS)`` keeps only the brackets that
#: open (``{`` as ``[``) and the newlines: a line deeper than MAX_DEPTH has
#: MAX_DEPTH + 1 of them in a row there.
_OPENERS: Final = bytes(ord("[") if b == ord("{") else b for b in range(256))
_NOT_OPENERS: Final = bytes(b for b in range(256) if b not in b"[{\n")

#: ``text.translate(_DIGITS)``: digits become ``0``, every other byte ``x``
#: (offsets stay those of ``text``). A number beyond 64 bits has 20 digits or
#: more, or is negative with 19 or more: it holds 19 digits in a row.
_DIGITS: Final = bytes(ord("0") if 48 <= b <= 57 else ord("x") for b in range(256))
_RUN: Final = b"0" * 19
#: What may come right before a JSON number (or its minus sign) in a line.
_BEFORE_NUMBER: Final = frozenset(b"[,: \t\r")
_DEEP: Final = b"[" * (MAX_DEPTH + 1)


def holds_unwritable(text: bytes) -> bool:
    """Whether a line of ``text`` (a few lines: it is copied whole once)
    holds what tastypy could not write back (see :func:`unwritable`;
    ``journal.refuse_unwritable`` names the line)."""
    if not _may_be_unwritable(text):
        return False
    return any(unwritable(text[start:end]) is not None for start, end in suspect_lines(text))


def _may_be_unwritable(text: bytes) -> bool:
    """A cheaper first filter than :func:`suspect_lines`, for text that is
    seldom suspect: whether it has enough opening brackets to nest deeper
    than orjson writes, or 19 digits in a row."""
    if len(text) > MAX_DEPTH and text.count(b"[") + text.count(b"{") > MAX_DEPTH:
        return True
    return len(text) >= len(_RUN) and _RUN in text.translate(_DIGITS)


def suspect_lines(text: bytes) -> list[tuple[int, int]]:
    """The ``(start, end)`` offsets of the lines of ``text`` that may hold a
    value nested deeper than orjson writes or an integer beyond 64 bits: a
    cheap filter (two ``bytes.translate`` and a ``find``, about 2 ns a byte,
    no Python per line), to be confirmed line by line with :func:`unwritable`."""
    found: set[int] = set()
    if len(text) > 2 * MAX_DEPTH:
        _deep_lines(text, found)
    if len(text) > 20:
        _long_numbers(text, found)
    lines = []
    for start in sorted(found):
        end = text.find(b"\n", start)
        lines.append((start, len(text) if end < 0 else end))
    return lines


#: The digit runs are looked for in pieces of this many bytes, so that the
#: mapped copy of a large file never doubles the memory a load takes.
_PIECE: Final = 1 << 20


def _long_numbers(text: bytes, found: set[int]) -> None:
    for piece in range(0, len(text), _PIECE):
        # Each piece overlaps the next by a run's length, so that no run is
        # cut in two; a run is counted in the piece where it starts.
        mapped = text[piece : piece + _PIECE + len(_RUN)].translate(_DIGITS)
        at = mapped.find(_RUN)
        while 0 <= at < _PIECE:
            if at == 0 or mapped[at - 1] != 48:  # the start of a run
                start = piece + at
                before = text[start - 1] if start else 10
                if before == 45:  # "-"
                    before = text[start - 2] if start > 1 else 10
                if before in _BEFORE_NUMBER:
                    found.add(text.rfind(b"\n", 0, start) + 1)
            end = mapped.find(b"x", at)
            if end < 0:
                break
            at = mapped.find(_RUN, end)


def _deep_lines(text: bytes, found: set[int]) -> None:
    openers = text.translate(_OPENERS, _NOT_OPENERS)
    at = openers.find(_DEEP)
    if at < 0:
        return
    # Rare (a line of 255 opening brackets): map line numbers to offsets.
    line = 0
    offset = 0
    while at >= 0:
        target = openers.count(b"\n", 0, at)
        while line < target:
            offset = text.index(b"\n", offset) + 1
            line += 1
        found.add(offset)
        end = openers.find(b"\n", at)
        if end < 0:
            break
        at = openers.find(_DEEP, end)


class _BigInt(Exception):
    pass


def _exact_int(literal: str) -> int:
    number = int(literal)
    if not INT_MIN <= number <= INT_MAX:
        raise _BigInt(number)
    return number


def _depth(value: Any) -> int:
    deepest = 0
    todo = [(value, 1)]
    while todo:
        item, level = todo.pop()
        if type(item) is list:
            children = item
        elif type(item) is dict:
            children = item.values()
        else:
            continue
        deepest = max(deepest, level)
        todo.extend((child, level + 1) for child in children)
    return deepest


def unwritable(line: bytes) -> str | None:
    """Why the record ``line`` (valid JSON, read by orjson) could not be
    written back as it is: nested deeper than orjson writes, or holding an
    integer beyond 64 bits, which orjson reads as a rounded float. None if
    it can be (or is no record at all: the parser reports that)."""
    try:
        item = loads(line)
    except JSONDecodeError as exc:
        if "depth" not in str(exc):
            return None
        return (
            "is nested more than 1024 levels deep. tastypy writes JSON at most "
            f"{MAX_DEPTH} levels deep, so it can never write this record back"
        )
    if type(item) is not list or not item:
        return None
    key = item[0]
    try:
        dumps(item)
    except TypeError:
        return (
            f"holds a record nested {_depth(item)} levels deep (key {_short(key)}). tastypy "
            f"writes JSON at most {MAX_DEPTH} levels deep ({MAX_DEPTH - 1} for a value), so "
            "it can never write this record back; store deeper data as a JSON string"
        )
    import json  # the one reader that gives such numbers exactly; rarely needed

    try:
        json.loads(line, parse_int=_exact_int)
    except _BigInt as big:
        number = big.args[0]
        exact = json.loads(line)
        where = (
            "as its key"
            if _holds(exact[0], number)
            else f"in the value of key {_short(key_from_json(exact[0]))}"
        )
        return (
            f"holds the integer {number} {where}, beyond the 64 bits tastypy keeps exactly "
            f"(it would be read as the float {float(number)!r} and rounded for good at the "
            f'next compaction); such a number must be written as a string ("{number}")'
        )
    except (ValueError, RecursionError):
        return None
    return None


def _holds(part: Any, number: int) -> bool:
    if type(part) is list:
        return any(_holds(sub, number) for sub in part)
    return type(part) is int and part == number
