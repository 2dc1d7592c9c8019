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
