"""``@tastypy.memoize(path)``: results keyed by the call's JSON text (floats
by their exact text, keyword arguments in any order), kept in a tracker,
computed once across processes; a clear error naming an argument that
cannot be a key.
"""

from __future__ import annotations

import multiprocessing
import re
import time

import pytest
from conftest import run_python, spawn_python
from hypothesis import given, settings
from hypothesis import strategies as st

import tastypy
from tastypy import InvalidKeyError


def test_a_call_runs_once_and_its_result_is_kept(tmp_path):
    calls = []

    @tastypy.memoize(tmp_path / "memo.tracker")
    def area(width, height=1.0, *, unit="cm"):
        calls.append((width, height, unit))
        return {"area": width * height, "unit": unit}

    assert area(2, 3.5, unit="m") == {"area": 7.0, "unit": "m"}
    assert area(2, 3.5, unit="m") == {"area": 7.0, "unit": "m"}
    assert area(2) == {"area": 2.0, "unit": "cm"}
    assert calls == [(2, 3.5, "m"), (2, 1.0, "cm")]
    assert area.key(2, 3.5, unit="m") == 'area(2,3.5,unit="m")'
    assert area.__wrapped__(1, 1) == {"area": 1, "unit": "cm"}
    # Readable keys in the tracker, the result in the record.
    tracker = area.tracker()
    assert sorted(tracker) == ["area(2)", 'area(2,3.5,unit="m")']
    assert tracker["area(2)"]["result"] == {"area": 2.0, "unit": "cm"}


def test_keys_tell_floats_by_their_exact_text_and_ignore_keyword_order(tmp_path):
    @tastypy.memoize(tmp_path / "memo.tracker")
    def f(*args, **kwargs):
        return [list(args), kwargs]

    assert len({f.key(x) for x in (1, 1.0, True, "1", 0.1, 0.1 + 2**-56, -0.0, 0.0)}) == 8
    assert f.key(0.1) == "f(0.1)" and f.key(1e300) == "f(1e+300)"
    assert f.key(a=1, b=2) == f.key(b=2, a=1) == "f(a=1,b=2)"
    assert f.key({"b": 1, "a": [2.5, None]}) == f.key({"a": [2.5, None], "b": 1})
    assert f.key({"b": 1, "a": [2.5, None]}) == 'f({"a":[2.5,null],"b":1})'
    # Positional and keyword arguments never make the same key.
    assert f.key([1], {"k": 1}) != f.key(1, k=1)
    assert f.key(**{"odd name": 1}) == 'f("odd name"=1)'
    # A tuple is a JSON array, as a list is.
    assert f.key((1, 2)) == f.key([1, 2])
    assert f(0.1, k=2) == [[0.1], {"k": 2}] and f(k=2) == [[], {"k": 2}]


_PLAIN = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=5), inner, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(_PLAIN, max_size=4),
    st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), _PLAIN, max_size=3),
)
def test_the_quick_key_is_the_same_as_the_long_one(tmp_path_factory, args, kwargs):
    # The hit path builds the key of plain arguments in one orjson call; the
    # long way (which names a bad argument) must give the very same text.
    path = tmp_path_factory.mktemp("m") / "memo.tracker"
    seen = []

    @tastypy.memoize(path)
    def f(*a, **k):
        seen.append(1)
        return None

    f(*args, **kwargs)
    assert list(f.tracker()) == [f.key(*args, **kwargs)]
    f(*args, **kwargs)
    assert seen == [1]
    f.tracker().close()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f: f({1, 2}), "argument 'x' of f(): a set cannot be a key; pass a sorted list"),
        (lambda f: f(float("nan")), "argument 'x' of f(): nan cannot be a key"),
        (lambda f: f(1, y=float("inf")), "argument 'y' of f(): inf cannot be a key"),
        (lambda f: f([1, {2: 3}]), "argument 'x'[1] of f(): a dict with an int key (2)"),
        (lambda f: f(b"x"), "argument 'x' of f(): bytes cannot be a key"),
        (lambda f: f(2**70), "argument 'x' of f(): an int beyond 64 bits"),
        (lambda f: f(object()), "argument 'x' of f(): an object cannot be a key"),
        (lambda f: f(1, 2, 3, {4}), r"argument 1 of \*rest of f\(\): a set"),
        (lambda f: f(1, z={"a": [object()]}), r"argument 'z'\['a'\]\[0\] of f\(\): an object"),
        (lambda f: f("\ud800"), "argument 'x' of f(): a str with a lone surrogate"),
    ],
)
def test_an_argument_that_cannot_be_a_key_is_named(tmp_path, call, message):
    @tastypy.memoize(tmp_path / "memo.tracker")
    def f(x, y=0, *rest, **kw):
        raise AssertionError("not run")

    pattern = message if "\\" in message else re.escape(message)
    with pytest.raises(InvalidKeyError, match=pattern):
        call(f)
    assert isinstance(InvalidKeyError("x"), TypeError)


def test_an_error_is_not_kept_and_is_raised(tmp_path):
    calls = []

    @tastypy.memoize(tmp_path / "memo.tracker")
    def g(x):
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first time")
        return x

    with pytest.raises(ValueError, match="first time"):
        g(3)
    assert g.tracker()["g(3)"]["_error"]["message"] == "first time"
    assert g(3) == 3 and g(3) == 3 and calls == [3, 3]


def test_a_subclass_of_a_plain_type_counts_as_its_value(tmp_path):
    import enum

    class Size(enum.IntEnum):
        BIG = 3

    @tastypy.memoize(tmp_path / "memo.tracker")
    def h(x):
        return x * 2

    assert h.key(Size.BIG) == h.key(3) == "h(3)"


USER = """
    import os, sys, time
    import tastypy

    marks = sys.argv[2]

    @tastypy.memoize(sys.argv[1])
    def slow(n, scale=1.0):
        with open(marks, "a") as f:
            f.write(f"{os.getpid()} {n}\\n")
        time.sleep(float(os.environ.get("SLOW", "0")))
        return n * scale

    go = sys.argv[3] if len(sys.argv) > 3 else None
    while go and not os.path.exists(go):
        time.sleep(0.001)
    print(slow(int(os.environ.get("N", "5")), scale=0.5))
"""


def test_processes_asking_for_one_missing_result_compute_it_once(tmp_path):
    from conftest import child_env

    path, marks, go = tmp_path / "memo.tracker", tmp_path / "marks", tmp_path / "go"
    procs = [spawn_python(USER, path, marks, go, env=child_env(SLOW="1")) for _ in range(4)]
    time.sleep(0.5)
    go.write_text("")
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert [o[0].strip() for o in outs] == ["2.5"] * 4
    assert len(marks.read_text().splitlines()) == 1


def test_a_miss_in_memory_sees_what_another_process_stored(tmp_path):
    path, marks = tmp_path / "memo.tracker", tmp_path / "marks"
    calls = []

    @tastypy.memoize(path, name="slow")
    def slow(n, scale=1.0):
        calls.append(n)
        return -1.0

    assert slow(1, scale=0.5) == -1.0  # loaded here, with one result
    out = run_python(USER, path, marks)  # another process stores slow(5, scale=0.5)
    assert out.returncode == 0 and out.stdout.strip() == "2.5", out.stderr
    assert slow(5, scale=0.5) == 2.5 and calls == [1]
    # And a new process hits both without running anything.
    again = run_python(USER, path, marks)
    assert again.stdout.strip() == "2.5"
    assert marks.read_text().splitlines() == [f"{out_pid(marks)} 5"]


def out_pid(marks) -> str:
    return marks.read_text().split()[0]


def test_a_forked_child_opens_the_tracker_again_and_keeps_what_it_knew(tmp_path):
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("fork is not available on this platform")
    path = str(tmp_path / "memo.tracker")
    calls = []

    @tastypy.memoize(path)
    def double(x):
        calls.append(x)
        return 2 * x

    assert double(21) == 42
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    child = fork.Process(target=lambda: queue.put((double(21), double(4), calls)))
    child.start()
    got = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert got == (42, 8, [21, 4])  # 21 known from the parent; 4 computed there
    assert double(4) == 8 and calls == [21]  # stored by the child, seen here


def test_forget_drops_a_result_here_and_on_disk(tmp_path):
    calls = []

    @tastypy.memoize(tmp_path / "memo.tracker")
    def sq(x):
        calls.append(x)
        return x * x

    assert sq(4) == 16 and sq(4) == 16 and calls == [4]
    assert sq.forget(4) is True and sq.forget(4) is False
    assert "sq(4)" not in sq.tracker()
    out = run_python(
        """
        import sys
        from tastypy import Tracker
        with Tracker(sys.argv[1]) as t:
            print(sorted(t))
        """,
        tmp_path / "memo.tracker",
    )
    assert out.stdout.strip() == "[]", out.stderr
    assert sq(4) == 16 and calls == [4, 4]
