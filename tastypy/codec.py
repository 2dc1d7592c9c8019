"""Keys and values to and from JSON bytes (orjson), with validation.

Top-level keys are ``str``, ``int`` (not ``bool``) or tuples of those, nested.
JSON tells strings from numbers, and a key is never a list, so a JSON array
read back as a key is a tuple: every key comes back with its own type.
"""

from __future__ import annotations

import math
from typing import Any, Final, Union

import orjson

Key = Union[str, int, tuple]

#: Nested dict keys that are not strings become strings, as with ``json``;
#: datetimes and dataclasses are refused rather than turned into something
#: that reads back as a different type.
DUMP_OPTIONS: Final = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)

dumps = orjson.dumps
loads = orjson.loads
JSONDecodeError = orjson.JSONDecodeError


def check_key(key: Any) -> None:
    """Raise ``TypeError`` unless ``key`` may be a top-level key."""
    t = type(key)
    if t is str or t is int:
        return
    if t is tuple:
        for part in key:
            check_key(part)
        return
    raise TypeError(
        f"tastypy keys must be str, int or tuples of those; got {t.__name__} ({key!r}). "
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


def encode_value(key: Any, value: Any) -> bytes:
    """Encode ``value`` to JSON bytes, or raise naming ``key`` and the bad type.

    NaN and infinities are refused: JSON has no spelling for them, and orjson
    would silently store ``null``.
    """
    try:
        data = dumps(value, option=DUMP_OPTIONS)
    except TypeError as exc:
        raise TypeError(
            f"cannot store the value for key {key!r}: {exc}. tastypy stores JSON: "
            "dicts, lists, str, int, float, bool and None (tuples become lists)."
        ) from None
    if b"null" in data and _has_nonfinite(value):
        raise ValueError(
            f"cannot store the value for key {key!r}: it holds NaN or infinity, which JSON "
            "cannot represent. Store None or a string such as 'nan' instead."
        )
    return data


def encode_key(key: Key) -> bytes:
    return dumps(key)
