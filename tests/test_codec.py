"""Keys and values: what may be stored, what comes back, what is refused."""

from __future__ import annotations

import datetime
import decimal
import math

import orjson
import pytest

from tastypy import POD
from tastypy.codec import check_key, encode_value, key_from_json
from tastypy.errors import InvalidKeyError, InvalidValueError, TastypyError

GOOD_KEYS = [
    "a",
    "",
    "é ünïcode ☃",
    0,
    1,
    -5,
    2**63 - 1,
    -(2**63),
    (),
    ("a", 1),
    (1, ("b", (2, "c"))),
    ((),),
]


@pytest.mark.parametrize("key", GOOD_KEYS, ids=repr)
def test_good_keys_come_back_with_their_own_type(key):
    check_key(key)
    back = key_from_json(orjson.loads(orjson.dumps(key)))
    assert back == key
    assert type(back) is type(key)


@pytest.mark.parametrize("key", GOOD_KEYS, ids=repr)
def test_good_keys_survive_reopen(tmp_path, key):
    with POD(tmp_path / "p") as pod:
        pod[key] = "v"
    with POD(tmp_path / "p") as pod:
        (back,) = list(pod)
        assert back == key and type(back) is type(key)
        assert pod[key] == "v"


@pytest.mark.parametrize(
    "key, named",
    [
        (True, "bool"),
        (False, "bool"),
        (1.5, "float"),
        (None, "NoneType"),
        (frozenset({1}), "frozenset"),
        (("a", 1.5), "float"),
        (("a", (1, True)), "bool"),
        (b"bytes", "bytes"),
    ],
    ids=repr,
)
def test_wrong_key_type_is_refused_naming_the_type(tmp_path, key, named):
    with pytest.raises(InvalidKeyError, match=named) as info:
        check_key(key)
    assert isinstance(info.value, TypeError) and isinstance(info.value, TastypyError)
    with POD(tmp_path / "p") as pod:
        pod["kept"] = 1
        with pytest.raises(TypeError, match=named):
            pod[key] = 1
        assert dict(pod) == {"kept": 1}
    with POD(tmp_path / "p") as pod:
        assert dict(pod) == {"kept": 1}


@pytest.mark.parametrize("key", [2**64, -(2**63) - 1, "lone \ud800 surrogate", ("a", 2**70)])
def test_keys_json_cannot_spell_are_refused_at_assignment(tmp_path, key):
    with POD(tmp_path / "p") as pod:
        with pytest.raises(InvalidKeyError, match="cannot use"):
            pod[key] = 1
        assert len(pod) == 0
        pod["ok"] = 1  # and the next sync is not poisoned by the refused key
    with POD(tmp_path / "p") as pod:
        assert dict(pod) == {"ok": 1}


def test_int_and_str_keys_are_different_keys(tmp_path):
    with POD(tmp_path / "p") as pod:
        pod[1] = "int"
        pod["1"] = "str"
        pod[(1,)] = "tuple"
        pod[("1",)] = "tuple of str"
        assert len(pod) == 4
    with POD(tmp_path / "p") as pod:
        assert pod[1] == "int"
        assert pod["1"] == "str"
        assert pod[(1,)] == "tuple"
        assert pod[("1",)] == "tuple of str"
        assert [type(k) for k in pod] == [int, str, tuple, tuple]


class Thing:
    pass


@pytest.mark.parametrize(
    "value, named",
    [
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (Thing(), "Thing"),
        (datetime.datetime(2020, 1, 2), "datetime"),
        (datetime.date(2020, 1, 2), "date"),
        (decimal.Decimal("1.5"), "Decimal"),
        (b"raw", "bytes"),
        ({"deep": [1, {"x": {3}}]}, "set"),
        (1 + 2j, "complex"),
    ],
    ids=lambda v: type(v).__name__,
)
def test_unstorable_value_raises_type_error_naming_key_and_type(tmp_path, value, named):
    with POD(tmp_path / "p") as pod:
        pod["my-key"] = {"before": 1}
        pod.sync()
        with pytest.raises(TypeError, match=named) as info:
            pod["my-key"] = value
        assert "'my-key'" in str(info.value)
        assert isinstance(info.value, InvalidValueError)
        # Nothing already stored changed, in memory ...
        assert dict(pod) == {"my-key": {"before": 1}}
        with pytest.raises(TypeError, match=named):
            pod["other"] = value
        assert "other" not in pod
        assert pod.dirty() <= {"my-key"}
    # ... or on disk.
    with POD(tmp_path / "p") as pod:
        assert dict(pod) == {"my-key": {"before": 1}}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, [1.0, math.nan], {"x": math.inf}])
def test_nan_and_infinity_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="NaN or infinity"):
        encode_value("k", bad)
    with POD(tmp_path / "p") as pod:
        pod["k"] = 1
        with pytest.raises(ValueError, match="NaN or infinity") as info:
            pod["k"] = bad
        assert "'k'" in str(info.value)
        assert pod["k"] == 1
    with POD(tmp_path / "p") as pod:
        assert pod["k"] == 1


def test_string_null_is_not_mistaken_for_nan(tmp_path):
    with POD(tmp_path / "p") as pod:
        pod["k"] = ["null", None, "nullnull", 1.5]
    with POD(tmp_path / "p") as pod:
        assert pod["k"] == ["null", None, "nullnull", 1.5]


def test_json_rules_tuples_become_lists_nested_keys_become_strings(tmp_path):
    with POD(tmp_path / "p") as pod:
        pod["integer-key"] = {1: "bar", 2.5: "x", None: "n"}
        pod["bool-key"] = {True: "t"}
        pod["tuple"] = ("baz", 42, ("nested",))
        pod["unicode"] = 'ünï ☃ \n\t"quoted"'
        pod["numbers"] = [0, -1, 2**63 - 1, 1.25, -0.0, 1e300]
    with POD(tmp_path / "p") as pod:
        assert pod["integer-key"] == {"1": "bar", "2.5": "x", "null": "n"}
        assert pod["bool-key"] == {"true": "t"}
        assert pod["tuple"] == ["baz", 42, ["nested"]]
        assert pod["unicode"] == 'ünï ☃ \n\t"quoted"'
        assert pod["numbers"] == [0, -1, 2**63 - 1, 1.25, -0.0, 1e300]


def test_value_with_a_bad_nested_dict_key_is_refused(tmp_path):
    with POD(tmp_path / "p") as pod:
        with pytest.raises(TypeError, match="'k'"):
            pod["k"] = {("tuple", "key"): 1}
        assert "k" not in pod
