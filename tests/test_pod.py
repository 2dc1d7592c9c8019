"""PersistentOrderedDict: the mapping, dirty tracking and sync, in one process."""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
import threading
from collections.abc import MutableMapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

import tastypy
from tastypy import POD, PersistentOrderedDict
from tastypy.errors import PersistentOrderedDictException


def journal_size(path: Path) -> int:
    name = json.loads((path / "manifest.json").read_text())["journal"]
    try:
        return (path / name).stat().st_size
    except FileNotFoundError:
        return 0


def on_disk(path: Path) -> dict:
    """What a fresh process would read (an independent handle: one sharing
    this process's state would show what is not written yet)."""
    with POD(path, clone=False) as pod:
        return dict(pod)


# -- a real mapping ---------------------------------------------------------------


def test_pod_is_a_mutable_mapping_and_the_aliases_match():
    assert POD is PersistentOrderedDict
    assert tastypy.POD is tastypy.PersistentOrderedDict
    assert issubclass(POD, MutableMapping)


def test_get_set_del_contains_len_iter(pod_path):
    with POD(pod_path) as pod:
        assert len(pod) == 0 and list(pod) == [] and "a" not in pod
        pod["a"] = 1
        pod["b"] = [2]
        assert pod["a"] == 1 and "a" in pod and len(pod) == 2
        assert pod.get("a") == 1 and pod.get("zz") is None and pod.get("zz", 5) == 5
        del pod["a"]
        assert "a" not in pod and len(pod) == 1
        with pytest.raises(KeyError):
            pod["a"]
        with pytest.raises(KeyError):
            del pod["a"]
    assert on_disk(pod_path) == {"b": [2]}


def test_views_behave_like_dict_views(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1, "b": {"x": 2}, "c": [3]})
        assert list(pod.keys()) == ["a", "b", "c"]
        assert list(pod.values()) == [1, {"x": 2}, [3]]
        assert list(pod.items()) == [("a", 1), ("b", {"x": 2}), ("c", [3])]
        assert "b" in pod.keys() and ("a", 1) in pod.items() and [3] in pod.values()
        assert pod.keys() == {"a", "b", "c"}
        assert len(pod.items()) == 3


def test_pop_popitem_setdefault(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1, "b": 2, "c": 3})
        assert pod.pop("a") == 1
        assert pod.pop("a", "gone") == "gone"
        with pytest.raises(KeyError):
            pod.pop("a")
        assert pod.popitem() == ("c", 3)  # last inserted, like dict
        assert pod.setdefault("b", 99) == 2
        assert pod.setdefault("d", [4]) == [4]
        pod.setdefault("d", []).append(5)
        assert dict(pod) == {"b": 2, "d": [4, 5]}
    assert on_disk(pod_path) == {"b": 2, "d": [4, 5]}
    with POD(pod_path) as pod:
        pod.clear()
        with pytest.raises(KeyError):
            pod.popitem()


def test_setdefault_of_a_new_key_returns_the_stored_value_and_tracks_it(pod_path):
    with POD(pod_path) as pod:
        pod.setdefault("new", []).append(1)
        pod.setdefault("d", {})["x"] = 1
        pod.setdefault("none")
        assert dict(pod) == {"new": [1], "d": {"x": 1}, "none": None}
    assert on_disk(pod_path) == {"new": [1], "d": {"x": 1}, "none": None}


def test_iterating_items_survives_a_deletion_taken_in_by_a_sync(pod_path):
    with POD(pod_path) as a, POD(pod_path, sync_at=2) as b:
        a.update({f"k{i}": {"i": i} for i in range(10)})
        a.sync()
        b.refresh()
        del a["k9"]
        a.sync()
        # Reading b's values triggers syncs, which take in a's deletion.
        items = list(b.items())
        values = list(b.values())
        assert [k for k, _ in items] == [f"k{i}" for i in range(9)]
        assert values == [{"i": i} for i in range(9)]


def test_update_forms_and_clear(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1})
        pod.update([("b", 2), (("t", 1), 3)])
        pod.update(c=4)
        pod.update({"a": 10}, d=5)
        assert dict(pod) == {"a": 10, "b": 2, ("t", 1): 3, "c": 4, "d": 5}
        pod.sync()
        pod.clear()
        assert len(pod) == 0 and dict(pod) == {}
    assert on_disk(pod_path) == {}


def test_equality_with_dicts_and_pods(tmp_path):
    with POD(tmp_path / "a") as a, POD(tmp_path / "b") as b:
        a.update({"x": 1, "y": [2]})
        b.update({"y": [2], "x": 1})
        assert a == {"x": 1, "y": [2]} and {"x": 1, "y": [2]} == a
        assert a == b
        assert a != {"x": 1}
        assert a != [("x", 1), ("y", [2])]
        b["x"] = 2
        assert a != b
        with pytest.raises(TypeError):
            hash(a)


def test_copy_and_to_dict_are_plain_dicts(pod_path):
    with POD(pod_path) as pod:
        pod["a"] = {"b": 1}
        assert type(pod.copy()) is dict and pod.copy() == {"a": {"b": 1}}
        assert type(pod.to_dict()) is dict


def test_iter_aliases_of_tastypy_003(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1, "b": 2})
        assert list(pod.iterkeys()) == ["a", "b"]
        assert list(pod.itervalues()) == [1, 2]
        assert list(pod.iteritems()) == [("a", 1), ("b", 2)]


def test_iterating_while_deleting_is_allowed(pod_path):
    with POD(pod_path) as pod:
        pod.update({i: i for i in range(10)})
        for key in pod:
            if key % 2:
                del pod[key]
        assert list(pod) == [0, 2, 4, 6, 8]


# -- order ----------------------------------------------------------------------------


def test_insertion_order_survives_reopen(pod_path):
    keys = [f"k{i}" for i in range(200)]
    keys.reverse()
    with POD(pod_path) as pod:
        for i, k in enumerate(keys):
            pod[k] = i
            if i % 37 == 0:
                pod.sync()
    with POD(pod_path) as pod:
        assert list(pod) == keys


def test_delete_then_reinsert_moves_the_key_last(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1, "b": 2, "c": 3})
        pod.sync()
        del pod["a"]
        pod["d"] = 4
        pod["a"] = 5
        pod["b"] = 20  # an overwrite keeps its place
        expected = ["b", "c", "d", "a"]
        assert list(pod) == expected
    with POD(pod_path) as pod:
        assert list(pod) == expected
        assert dict(pod) == {"b": 20, "c": 3, "d": 4, "a": 5}


def test_delete_and_reinsert_within_one_batch_keeps_order(pod_path):
    with POD(pod_path) as pod:
        pod["a"] = 1
        pod["b"] = 2
        del pod["a"]
        pod["a"] = 3
        assert list(pod) == ["b", "a"]
    with POD(pod_path) as pod:
        assert list(pod) == ["b", "a"]


# -- nested changes -------------------------------------------------------------------


def test_nested_mutation_through_the_pod_is_persisted(pod_path):
    with POD(pod_path) as pod:
        pod["key"] = {}
        pod.sync()
        pod["key"]["subkey1"] = 1
        pod["key"]["subkey2"] = []
        pod["key"]["subkey2"].append(1)
        pod["list"] = [1]
        pod.sync()
        pod["list"].append(2)
        pod["list"] += [3]
        pod["list"][0] = 0
    assert on_disk(pod_path) == {"key": {"subkey1": 1, "subkey2": [1]}, "list": [0, 2, 3]}


def test_deep_setter_marks_the_top_key(pod_path):
    with POD(pod_path) as pod:
        pod["a"] = {"b": {"c": 1}, "n": 1, "l": [1]}
        pod.sync()
        pod.set["a"]["b"]["c"] = 2
        pod.set["a"]["n"] += 5
        pod.set["a"]["l"].append(2)
        pod.set["a"]["l"] += [3]
        pod.set["a"]["new"] = "x"
        del pod.set["a"]["b"]["c"]
        pod.set["top"] = 1  # a plain assignment through .set
        assert pod.set["a"]["n"] == 6
        assert len(pod.set["a"]["l"]) == 3 and 2 in pod.set["a"]["l"]
        with pytest.raises(KeyError):
            pod.set["missing"]
        with pytest.raises(KeyError):
            pod.set["a"]["missing"]
    assert on_disk(pod_path) == {
        "a": {"b": {}, "n": 6, "l": [1, 2, 3], "new": "x"},
        "top": 1,
    }


def test_change_through_an_outside_reference_needs_mark_dirty(pod_path):
    with POD(pod_path) as pod:
        value = {"n": 1}
        pod["k"] = value
        pod.sync()
        value["n"] = 2  # the POD cannot see this line
        pod.sync()
        assert on_disk(pod_path) == {"k": {"n": 1}}
        pod.mark_dirty("k")
        assert "k" in pod.dirty()
        pod.sync()
        assert on_disk(pod_path) == {"k": {"n": 2}}
        with pytest.raises(KeyError):
            pod.mark_dirty("missing")


def test_reassigning_the_stored_object_after_changing_it_is_written(pod_path):
    with POD(pod_path) as pod:
        rec = pod.setdefault("k", {"n": 0})
        pod.sync()
        rec["n"] = 1  # through a reference kept since the last sync
        pod["k"] = rec  # ... then handed back: must be written
    assert on_disk(pod_path) == {"k": {"n": 1}}


def test_read_then_replace_then_change_back_is_written(pod_path):
    with POD(pod_path) as pod:
        pod["k"] = [1]
        pod.sync()
        pod["k"]  # read: the POD remembers [1]
        pod["k"] = [2]
        pod["k"].pop()
        pod["k"].append(1)  # back to what was read, but not what is queued
        assert pod["k"] == [1]
    assert on_disk(pod_path) == {"k": [1]}


def test_a_read_that_triggers_a_sync_still_tracks_the_change_after_it(pod_path):
    with POD(pod_path, sync_at=2) as pod:
        pod["a"] = [1]
        pod.sync()
        pod["b"] = 1  # one pending change: the next read reaches sync_at
        pod["a"].append(2)
    assert on_disk(pod_path) == {"a": [1, 2], "b": 1}


def test_sync_key_and_update_with_a_key(pod_path):
    with POD(pod_path) as pod:
        ref = [1, 2, 3]
        pod["mutable"] = ref
        pod.sync()
        ref.append(4)
        pod.sync_key("mutable")
        assert on_disk(pod_path)["mutable"] == [1, 2, 3, 4]
        ref.append(5)
        pod.update("mutable")  # the 0.0.3 manual's spelling
        assert on_disk(pod_path)["mutable"] == [1, 2, 3, 4, 5]
        del pod["mutable"]
        pod.sync_key("mutable")
        assert on_disk(pod_path) == {}


def test_dirty_lists_changed_and_read_keys_and_sync_empties_it(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1, "b": [1], "c": "s"})
        assert pod.dirty() == {"a", "b", "c"}
        pod.sync()
        assert pod.dirty() == set()
        pod["b"]  # may be changed in place
        pod["c"]  # a str cannot be
        del pod["a"]
        assert pod.dirty() == {"a", "b"}
        pod.sync()
        assert pod.dirty() == set()


# -- when a sync happens ----------------------------------------------------------------


def test_sync_happens_every_sync_at_changed_keys(pod_path):
    with POD(pod_path, sync_at=3) as pod:
        pod["a"] = 1
        pod["b"] = 2
        assert on_disk(pod_path) == {}
        pod["c"] = 3
        assert on_disk(pod_path) == {"a": 1, "b": 2, "c": 3}


def test_hold_unhold_and_holding(pod_path):
    with POD(pod_path, sync_at=2) as pod:
        pod.hold()
        for i in range(5):
            pod[i] = i
        assert on_disk(pod_path) == {}
        pod.sync()  # an explicit sync still happens while held
        assert len(on_disk(pod_path)) == 5
        pod[5] = 5
        pod[6] = 6
        assert len(on_disk(pod_path)) == 5
        pod.unhold()  # resumes, and syncs the backlog
        assert len(on_disk(pod_path)) == 7
        with pod.holding():
            for i in range(7, 12):
                pod[i] = i
            assert len(on_disk(pod_path)) == 7
        assert len(on_disk(pod_path)) == 12


def test_holding_nested_inside_hold_keeps_holding(pod_path):
    with POD(pod_path, sync_at=1) as pod:
        pod.hold()
        with pod.holding():
            pod["a"] = 1
        pod["b"] = 2
        assert on_disk(pod_path) == {}
        pod.unhold()
        assert on_disk(pod_path) == {"a": 1, "b": 2}


def test_revert_drops_unsynced_changes(pod_path):
    with POD(pod_path) as pod:
        pod.update({"a": 1, "b": {"x": 1}})
        pod.sync()
        pod["a"] = 2
        pod["b"]["x"] = 2
        pod["c"] = 3
        del pod["a"]
        pod.revert()
        assert pod.dirty() == set()
        assert dict(pod) == {"a": 1, "b": {"x": 1}}
        assert list(pod) == ["a", "b"]
    assert on_disk(pod_path) == {"a": 1, "b": {"x": 1}}


def test_refresh_takes_in_what_another_handle_synced(pod_path):
    with POD(pod_path) as a, POD(pod_path, clone=False) as b:
        a.update({"x": 1, "y": 2})
        a.sync()
        assert dict(b) == {}
        b["mine"] = "unsynced"
        b.refresh()
        assert dict(b) == {"mine": "unsynced", "x": 1, "y": 2}
        del a["x"]
        a["y"] = 20
        a.sync()
        b.refresh()
        assert dict(b) == {"mine": "unsynced", "y": 20}
        b.sync()
        a.refresh()
        assert dict(a) == {"y": 20, "mine": "unsynced"}


def test_sync_takes_in_others_changes_and_wins_for_its_own_keys(pod_path):
    with POD(pod_path) as a, POD(pod_path, clone=False) as b:
        a["shared"] = "from a"
        a["only a"] = 1
        b["shared"] = "from b"
        b["only b"] = 2
        a.sync()
        b.sync()  # the later sync wins for "shared"
        assert dict(b) == {"shared": "from b", "only b": 2, "only a": 1}
        a.refresh()
        assert a["shared"] == "from b"
    assert on_disk(pod_path) == {"shared": "from b", "only a": 1, "only b": 2}


def test_unsynced_local_change_is_not_overwritten_by_refresh(pod_path):
    with POD(pod_path) as a, POD(pod_path, clone=False) as b:
        a["k"] = {"n": 0}
        a.sync()
        b.refresh()
        b["k"]["n"] = 1  # an unsynced nested change in b
        a["k"] = {"n": 2}
        a.sync()
        b.refresh()
        assert b["k"] == {"n": 1}
        b.sync()
    assert on_disk(pod_path) == {"k": {"n": 1}}


# -- lifetime ----------------------------------------------------------------------------


def test_close_syncs_and_later_writes_raise(pod_path):
    pod = POD(pod_path)
    pod["a"] = [1]
    pod.close()
    assert on_disk(pod_path) == {"a": [1]}
    assert pod["a"] == [1]  # reading a closed POD still works
    for _ in range(3000):  # ... and never tries to sync
        pod["a"]
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        pod["b"] = 2
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        del pod["a"]
    assert pod["a"] == [1]
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        pod.sync()
    with pytest.raises(PersistentOrderedDictException, match="closed"):
        pod.refresh()
    pod.close()  # closing twice is fine


def test_context_manager_syncs_on_exception(pod_path):
    with pytest.raises(RuntimeError):
        with POD(pod_path) as pod:
            pod["a"] = 1
            raise RuntimeError("boom")
    assert on_disk(pod_path) == {"a": 1}


def test_garbage_collected_pod_is_synced(pod_path):
    pod = POD(pod_path)
    pod["a"] = 1
    del pod
    assert on_disk(pod_path) == {"a": 1}


def test_repr_names_the_path_and_size(pod_path):
    with POD(pod_path) as pod:
        pod["a"] = 1
        assert repr(pod) == f"PersistentOrderedDict({str(pod_path)!r}, 1 keys)"
        assert pod.path == str(pod_path)


# -- the constructor of 0.0.3 -------------------------------------------------------------


def test_init_only_fills_absent_keys(pod_path):
    with POD(pod_path, init={"a": 1, "b": 2}) as pod:
        assert dict(pod) == {"a": 1, "b": 2}
        pod["a"] = 10
    with POD(pod_path, init={"a": 1, "c": 3}) as pod:
        assert dict(pod) == {"a": 10, "b": 2, "c": 3}
    with POD(pod_path, init=[("d", 4)]) as pod:
        assert pod["d"] == 4
    size = journal_size(pod_path)
    with POD(pod_path, init={"a": 1, "b": 2, "c": 3, "d": 4}) as pod:
        assert pod["a"] == 10
    assert journal_size(pod_path) == size  # reopening with init wrote nothing


def test_original_call_positionally_and_by_keyword(tmp_path):
    with POD(str(tmp_path / "pos"), {"a": 1}, False, 1000, 1000, True) as pod:
        assert dict(pod) == {"a": 1}
    with POD(
        tmp_path / "kw", init={}, gzipped=False, file_size=1000, sync_at=1000, clone=True
    ) as pod:
        pod["b"] = 2
    with POD(tmp_path / "small", init={"x": 1}, gzipped=True, file_size=10, sync_at=1) as pod:
        assert dict(pod) == {"x": 1}
    assert on_disk(tmp_path / "kw") == {"b": 2}
    assert on_disk(tmp_path / "small") == {"x": 1}


def test_gzipped_round_trip(pod_path):
    with POD(pod_path, gzipped=True) as pod:
        pod.update({"a": {"b": [1, 2]}, ("t", 1): "é"})
        pod.sync()
        del pod["a"]
        pod["c"] = None
    with POD(pod_path, gzipped=True) as pod:
        assert dict(pod) == {("t", 1): "é", "c": None}
        assert list(pod) == [("t", 1), "c"]


# -- what is written -----------------------------------------------------------------------


def test_unchanged_value_is_not_rewritten(pod_path):
    with POD(pod_path) as pod:
        pod.update({"s": "x", "n": 1, "d": {"a": [1, 2]}, "l": [1]})
        pod.sync()
        size = journal_size(pod_path)
        pod["s"] = "x"
        pod["n"] = 1
        pod["d"] = {"a": [1, 2]}  # an equal copy
        pod["l"] = copy.deepcopy(pod["l"])
        pod["d"]["a"].append(3)
        pod["d"]["a"].pop()  # changed and changed back
        pod.sync()
        assert journal_size(pod_path) == size
        pod["n"] = 1.0  # equal, but not the same JSON
        pod.sync()
        assert journal_size(pod_path) > size
    assert on_disk(pod_path)["n"] == 1.0


def test_a_value_equal_but_written_differently_is_written(pod_path):
    """Python calls ``1 == True`` and ``{"a": 1} == {"a": 1.0}``; JSON does
    not: each such assignment reaches the file, with its type."""
    with POD(pod_path) as pod:
        pod.update({"b": 1, "f": 2, "nested": {"a": 1}, "same": {"k": 1}})
        pod.sync()
        pod["b"] = True
        pod["f"] = 2.0
        pod["nested"] = {"a": 1.0}
        stored = pod["same"]
        pod.sync()  # the read is forgotten: only the assignment says it changed
        stored["k"] = 2  # the stored object itself, changed, then assigned
        pod["same"] = stored
    with POD(pod_path) as pod:
        assert pod["b"] is True
        assert type(pod["f"]) is float
        assert type(pod["nested"]["a"]) is float
        assert pod["same"] == {"k": 2}


def test_reading_many_keys_does_not_inflate_writes(pod_path):
    with POD(pod_path, sync_at=100) as pod:
        for i in range(1000):
            pod[i] = {"n": i, "l": [i]}
        pod.sync()
        size = journal_size(pod_path)
        total = 0
        for i in range(1000):
            total += pod[i]["n"]  # marks each key dirty: it could be mutated
        for value in pod.values():
            total += len(value["l"])
        assert total == sum(range(1000)) + 1000
        pod.sync()
        assert journal_size(pod_path) == size
        pod[5]["n"] = -5
        pod.sync()
    lines = (pod_path / "journal-000000.jsonl").read_text().splitlines()
    assert lines[-2:] == ['[5,{"n":-5,"l":[5]}]', '{"sync":1}']


def test_threads_writing_distinct_keys_lose_nothing(pod_path):
    n_threads, per_thread = 8, 400
    barrier = threading.Barrier(n_threads)
    errors = []

    with POD(pod_path, sync_at=37) as pod:

        def work(t):
            try:
                barrier.wait()
                for i in range(per_thread):
                    pod[(t, i)] = {"t": t, "i": i}
                    if i % 3 == 0:
                        pod[(t, i)]["read"] = True
                    if i % 50 == 0:
                        pod.sync()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        assert len(pod) == n_threads * per_thread
    back = on_disk(pod_path)
    assert len(back) == n_threads * per_thread
    for (t, i), value in back.items():
        expected = {"t": t, "i": i}
        if i % 3 == 0:
            expected["read"] = True
        assert value == expected


# -- a stateful test against a dict ---------------------------------------------------------

KEYS = st.one_of(
    st.sampled_from(["a", "b", 1, ("t", 1)]),  # few keys: steps meet the same ones
    st.text(max_size=3),
    st.integers(-3, 3),
    st.tuples(st.integers(0, 2), st.text(max_size=1)),
)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
CONTAINERS = st.recursive(
    st.one_of(
        st.lists(LEAVES, max_size=2), st.dictionaries(st.text(max_size=3), LEAVES, max_size=2)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
# Mostly dicts and lists: those are what can be changed in place.
VALUES = st.one_of(CONTAINERS, LEAVES)


def as_json(value):
    """What a value reads back as after a reopen."""
    return json.loads(json.dumps(value))


class PODMachine(RuleBasedStateMachine):
    """A POD and a plain dict (the model) take the same steps; ``synced`` is the
    model of what is on disk. ``sync_at`` is out of reach, so the only syncs
    are the ones the rules ask for, and ``synced`` is exact."""

    SYNC_AT = 10**9
    keys = Bundle("keys")

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tastypy-stateful-"))
        self.pod = POD(self.dir / "p", sync_at=self.SYNC_AT)
        self.model: dict = {}
        self.synced: dict = {}

    def teardown(self):
        try:
            self.pod.close()
            assert on_disk(self.dir / "p") == self.model
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(target=keys, key=KEYS)
    def new_key(self, key):
        return key

    @rule(key=keys, value=VALUES)
    def set(self, key, value):
        self.pod[key] = copy.deepcopy(value)
        self.model[key] = as_json(value)

    @rule(key=keys)
    def delete(self, key):
        if key in self.model:
            del self.pod[key]
            del self.model[key]
        else:
            with pytest.raises(KeyError):
                del self.pod[key]

    @rule(key=keys, value=LEAVES, sub=st.text(max_size=2))
    def nested_set(self, key, value, sub):
        if isinstance(self.model.get(key), dict):
            self.pod[key][sub] = value
            self.model[key][sub] = as_json(value)

    @rule(key=keys, value=LEAVES)
    def nested_append(self, key, value):
        if isinstance(self.model.get(key), list):
            self.pod[key].append(value)
            self.model[key].append(as_json(value))

    @rule(key=keys, value=LEAVES, sub=st.text(max_size=2))
    def deep_set(self, key, value, sub):
        if isinstance(self.model.get(key), dict):
            self.pod.set[key][sub] = value
            self.model[key][sub] = as_json(value)

    @rule(key=consumes(keys))
    def pop(self, key):
        assert self.pod.pop(key, "absent") == self.model.pop(key, "absent")

    @rule()
    def sync(self):
        self.pod.sync()
        self.synced = copy.deepcopy(self.model)

    @rule()
    def revert(self):
        self.pod.revert()
        self.model = copy.deepcopy(self.synced)

    @rule()
    def reopen(self):
        self.pod.close()
        self.synced = copy.deepcopy(self.model)
        self.pod = POD(self.dir / "p", sync_at=self.SYNC_AT)

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def compact(self):
        self.pod.compact()
        self.synced = copy.deepcopy(self.model)

    @invariant()
    def same_items_in_the_same_order(self):
        # copy() reads without marking keys dirty, as a user's reads would:
        # the rules then meet keys read for the first time since a sync.
        assert list(self.pod.copy().items()) == list(self.model.items())
        assert len(self.pod) == len(self.model)


class AutoSyncPODMachine(PODMachine):
    """The same with ``sync_at=2``: syncs also happen by themselves, so after
    ``revert`` the model is what a fresh handle reads from disk."""

    SYNC_AT = 2

    @rule()
    def revert(self):
        before = on_disk(self.dir / "p")
        self.pod.revert()
        self.model = before
        assert dict(self.pod) == before


_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PODMachine.TestCase.settings = _SETTINGS
AutoSyncPODMachine.TestCase.settings = _SETTINGS
test_pod_against_a_dict = PODMachine.TestCase
test_pod_against_a_dict_with_automatic_syncs = AutoSyncPODMachine.TestCase


_DELETED = object()


class TwoHandlesMachine(RuleBasedStateMachine):
    """Two handles on one directory, as two processes would have: the model
    says what is on disk (the synced batches, in order; for one key the last
    sync wins) and what each handle holds (what it last saw on disk, under
    its own unsynced changes). Every value written is new, so no change is
    ever an equal rewrite."""

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tastypy-two-"))
        self.path = self.dir / "p"
        self.pods = [POD(self.path, sync_at=10**9, clone=False) for _ in range(2)]
        self.disk: dict = {}
        self.seen = [{}, {}]  # the disk as each handle last took it in
        self.pending: list[dict] = [{}, {}]  # key -> value or _DELETED
        self.counter = 0

    def teardown(self):
        try:
            for pod in self.pods:
                pod.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _next(self):
        self.counter += 1
        return self.counter

    def local(self, h: int) -> dict:
        view = dict(self.seen[h])
        for key, value in self.pending[h].items():
            if value is _DELETED:
                view.pop(key, None)
            else:
                view[key] = value
        return view

    def _changed(self, h, key, value):
        self.pending[h].pop(key, None)  # the latest change comes last
        self.pending[h][key] = value if value is _DELETED else copy.deepcopy(value)

    @rule(h=st.integers(0, 1), key=st.sampled_from("abcde"), as_list=st.booleans())
    def set(self, h, key, as_list):
        n = self._next()
        value = [n] if as_list else {"n": n}
        self.pods[h][key] = value
        self._changed(h, key, value)

    @rule(h=st.integers(0, 1), key=st.sampled_from("abcde"))
    def delete(self, h, key):
        if key in self.local(h):
            del self.pods[h][key]
            self._changed(h, key, _DELETED)
        else:
            with pytest.raises(KeyError):
                del self.pods[h][key]

    @rule(h=st.integers(0, 1), key=st.sampled_from("abcde"))
    def nested_change(self, h, key):
        value = self.local(h).get(key)
        n = self._next()
        if isinstance(value, list):
            self.pods[h][key].append(n)
            self._changed(h, key, value + [n])
        elif isinstance(value, dict):
            self.pods[h][key][f"x{n}"] = n
            self._changed(h, key, {**value, f"x{n}": n})

    @rule(h=st.integers(0, 1))
    def sync(self, h):
        self.pods[h].sync()
        for key, value in self.pending[h].items():
            if value is _DELETED:
                self.disk.pop(key, None)
            else:
                self.disk[key] = copy.deepcopy(value)
        self.pending[h] = {}
        self.seen[h] = copy.deepcopy(self.disk)

    @rule(h=st.integers(0, 1))
    def refresh(self, h):
        self.pods[h].refresh()
        self.seen[h] = copy.deepcopy(self.disk)

    @rule(h=st.integers(0, 1))
    def revert(self, h):
        self.pods[h].revert()
        self.pending[h] = {}
        self.seen[h] = copy.deepcopy(self.disk)

    @rule(h=st.integers(0, 1))
    def compact(self, h):
        self.sync(h)
        self.pods[h].compact()

    @rule(h=st.integers(0, 1))
    def reopen(self, h):
        self.sync(h)
        self.pods[h].close()
        self.pods[h] = POD(self.path, sync_at=10**9, clone=False)

    @invariant()
    def handles_hold_what_the_model_says(self):
        for h in (0, 1):
            assert self.pods[h].copy() == self.local(h), h

    @invariant()
    def the_disk_holds_what_the_model_says(self):
        assert on_disk(self.path) == self.disk


TwoHandlesMachine.TestCase.settings = _SETTINGS
test_two_handles_against_a_model = TwoHandlesMachine.TestCase
