"""A POD directory written by others: arbitrary bytes, arbitrary JSON and
arbitrary kinds of file where tastypy keeps its files.

Hypothesis builds a real POD (local or shared store, with or without a
snapshot), then puts hostile content in place of one or more of its files:
random bytes; JSON lines of any shape (nested deeper than orjson writes,
integers beyond 64 bits, lone surrogates, duplicate names in objects, odd
spacing, commit lines with right and wrong counts, with or without the final
newline); or another kind of file (a FIFO, a socket, a directory, a device,
links to a file or a FIFO outside the directory, to /dev/zero, to nowhere).
Then it opens the POD, checks it and repairs it, each under a time limit,
and asserts:

* nothing hangs (a FIFO opened for reading waits for a writer for ever);
* nothing raises but a ``tastypy`` error;
* no file outside the directory is read (the planted links point to a file
  holding a canary record, and to a FIFO outside that would block) or
  written (those files are unchanged, nothing new appears beside the POD);
* opening and checking change nothing on disk;
* what loaded equals, value for value and type for type, what a strict JSON
  reader (the standard library's, refusing NaN, infinities and lone
  surrogates) reads from the same committed lines.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import stat
import tempfile
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tastypy
from tastypy.errors import TastypyError
from tastypy.storage import commits, journal, layout

#: Seconds any one open, check or repair may take before it counts as a hang.
TIME_LIMIT = 20

CANARY = b'["canary-outside",{"secret":"of another user"}]\n{"sync":1}\n'


class Hung(BaseException):
    """Raised by the alarm: not an ``Exception``, so that no ``except
    Exception`` in the code under test can swallow it."""


@contextmanager
def time_limit(what: str):
    def ring(signum, frame):
        raise Hung(f"{what} took more than {TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# -- strategies: JSON of any shape, rendered by hand ---------------------------------------

#: Integers around and beyond what orjson reads exactly.
BOUNDARY_INTS = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, -(10**25)]

#: Text with lone surrogates (escaped in the JSON) and the odd characters.
texts = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=8
) | st.sampled_from(["", "a", "ç", "\ud800", "\udfff", "\x00", "\u2028", '"', "\\", "1" * 25])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(BOUNDARY_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
)


def _object(children):
    # A list of pairs, not a dict: the same name may come twice.
    return st.lists(st.tuples(texts, children), max_size=4).map(lambda pairs: ("obj", pairs))


values = st.recursive(
    scalars.map(lambda v: ("val", v)),
    lambda children: (
        st.lists(children, max_size=4).map(lambda items: ("arr", items)) | _object(children)
    ),
    max_leaves=12,
)


#: A value nested around and beyond what orjson writes (254) and reads (1024),
#: in lists, in objects, or both in turn.
deep_values = st.tuples(
    st.sampled_from([252, 253, 254, 255, 300, 1023, 1100]),
    st.sampled_from([("[", "]"), ('{"k":', "}"), ('[{"k":', "}]")]),
    values,
).map(lambda deep: ("deep", deep))


def render(node: Any, ascii_only: bool, space: str) -> str:
    kind, body = node
    if kind == "deep":
        depth, (opening, closing), inner = body
        levels = depth // opening.count("k") if "k" in opening else depth
        return opening * levels + render(inner, ascii_only, space) + closing * levels
    if kind == "val":
        if isinstance(body, float) and not math.isfinite(body):
            return "1e400"
        return json.dumps(body, ensure_ascii=ascii_only)
    if kind == "arr":
        return "[" + ("," + space).join(render(item, ascii_only, space) for item in body) + "]"
    return (
        "{"
        + ("," + space).join(
            json.dumps(name, ensure_ascii=ascii_only) + ":" + space + render(v, ascii_only, space)
            for name, v in body
        )
        + "}"
    )


keys = (
    st.recursive(
        st.one_of(
            texts,
            st.integers(min_value=-(2**66), max_value=2**66),
            st.sampled_from(BOUNDARY_INTS),
        ).map(lambda k: ("val", k)),
        lambda children: st.lists(children, max_size=3).map(lambda parts: ("arr", parts)),
        max_leaves=4,
    )
    | values
)  # now and then a key that is no key (a float, null, an object)


@st.composite
def json_lines(draw) -> bytes:
    """Record lines and commit lines, mostly well framed, sometimes not."""
    ascii_only = draw(st.booleans())
    space = draw(st.sampled_from(["", "", " "]))
    out = []
    count = 0
    for _ in range(draw(st.integers(0, 8))):
        choice = draw(st.integers(0, 9))
        if choice <= 5:
            key = render(draw(keys), ascii_only, space)
            value = draw(st.one_of(values, deep_values) if choice == 5 else values)
            line = "[" + key + "," + space + render(value, ascii_only, space) + "]"
            count += 1
        elif choice == 6:
            line = "[" + render(draw(keys), ascii_only, space) + "]"  # a deletion
            count += 1
        elif choice <= 8:
            right = draw(st.booleans()) or choice == 7
            line = f'{{"sync":{count if right else draw(st.integers(0, 9))}}}'
            count = 0
        else:
            line = render(draw(values), ascii_only, space)  # no record at all
        out.append(line.encode("utf-8", "surrogatepass"))
    text = b"\n".join(out)
    if out and draw(st.booleans()):
        text += b"\n"
    return text + draw(st.sampled_from([b"", b"", b'["torn",', b"\0" * 8]))


contents = st.one_of(
    st.binary(max_size=64).map(lambda b: ("bytes", b)),
    json_lines().map(lambda b: ("json", b)),
    st.sampled_from(
        [
            "FIFO",
            "socket",
            "directory",
            "link to a file outside",
            "link to a FIFO outside",
            "link to /dev/zero",
            "dangling link",
        ]
        + (["character device"] if os.geteuid() == 0 else [])
    ).map(lambda kind: ("kind", kind)),
)


@st.composite
def plans(draw):
    """A POD to build, and what to put in place of which of its files."""
    shared = draw(st.booleans())
    compacted = draw(st.booleans())
    gzipped = draw(st.booleans())
    names = ["manifest.json", "tastypy.lock", "stray.jsonl"]
    gz = ".gz" if gzipped else ""
    if compacted:
        names.append("snapshot-000001.jsonl" + gz)
    log = "commits-000001" if compacted else "commits-000000"
    if shared:
        names += [log, f"{log}/0000000000.jsonl{gz}", f"{log}/0000000001.jsonl{gz}"]
    else:
        names.append(("journal-000001.jsonl" if compacted else "journal-000000.jsonl") + gz)
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    return (shared, gzipped), compacted, [(name, draw(contents)) for name in chosen]


# -- building, planting, reading -----------------------------------------------------------


def build(path: str, store: tuple, compacted: bool) -> None:
    shared, gzipped = store
    with tastypy.POD(path, storage="shared" if shared else "local", gzipped=gzipped) as pod:
        pod["a"] = 1
        pod[("t", 2)] = {"x": [1.5, None]}
        if compacted:
            pod.compact()
        pod["b"] = "two"
        pod.sync()
        pod["c"] = [3]


def plant(target: str, content: tuple, outside: dict) -> None:
    parent = os.path.dirname(target)
    if os.path.lexists(parent) and (os.path.islink(parent) or not os.path.isdir(parent)):
        return  # its log directory was replaced by something else already
    if os.path.lexists(target):
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
    how, what = content
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if how == "json" and target.endswith(".gz"):
        how, what = "bytes", journal.gzip_member(what)  # as a gzipped POD holds its lines
    if how in ("bytes", "json"):
        with open(target, "wb") as f:
            f.write(what)
    elif what == "FIFO":
        os.mkfifo(target)
    elif what == "socket":
        sock = socket.socket(socket.AF_UNIX)
        try:
            sock.bind(target)
        finally:
            sock.close()
    elif what == "directory":
        os.mkdir(target)
        with open(os.path.join(target, "0000000000.jsonl"), "wb") as f:
            f.write(b'["inside",1]\n{"sync":1}\n')
    elif what == "link to a file outside":
        os.symlink(outside["file"], target)
    elif what == "link to a FIFO outside":
        os.symlink(outside["fifo"], target)
    elif what == "link to /dev/zero":
        os.symlink("/dev/zero", target)
    elif what == "dangling link":
        os.symlink(outside["nowhere"], target)
    elif what == "character device":
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 5))


def tree_of(path: str) -> dict:
    """Every name under ``path``, with the bytes of regular files and the
    kind of the rest (links are not followed, FIFOs not opened). The lock's
    own files are left out: taking the lock may make them."""
    out = {}
    for root, dirs, names in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(layout.LOCK_FILE)]
        for name in dirs + names:
            if name.startswith(layout.LOCK_FILE + "."):
                continue
            full = os.path.join(root, name)
            mode = os.lstat(full).st_mode
            if stat.S_ISREG(mode):
                with open(full, "rb") as f:
                    out[os.path.relpath(full, path)] = f.read()
            elif stat.S_ISLNK(mode):
                out[os.path.relpath(full, path)] = ("link", os.readlink(full))
            else:
                out[os.path.relpath(full, path)] = ("kind", stat.S_IFMT(mode))
    return out


# -- the strict reader ------------------------------------------------------------------------


class NotStrictJSON(ValueError):
    pass


def _refuse_constant(name):
    raise NotStrictJSON(name)


def _strict_value(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise NotStrictJSON("a number too large for a double")
    if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise NotStrictJSON("a lone surrogate")
    if isinstance(value, list):
        for item in value:
            _strict_value(item)
    if isinstance(value, dict):
        for name, item in value.items():
            _strict_value(name)
            _strict_value(item)


def strict(line: bytes) -> Any:
    """What a strict JSON reader reads from one line (ValueError if it refuses)."""
    value = json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)
    _strict_value(value)
    return value


def typed(value: Any) -> Any:
    """``value`` with every type spelled out (``1``, ``1.0`` and ``True`` differ)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(item) for item in value])
    return ("dict", [(name, typed(item)) for name, item in value.items()])


def _key(obj: Any) -> Any:
    return tuple(_key(part) for part in obj) if isinstance(obj, list) else obj


def replay(text: bytes, data: dict) -> None:
    """Apply the committed lines ``text`` (as tastypy framed them) to ``data``,
    each line read by the strict reader."""
    for line in text.split(b"\n")[:-1]:
        item = strict(line)
        if isinstance(item, dict):
            assert "sync" in item, line
            continue
        assert isinstance(item, list) and len(item) in (1, 2), line
        if len(item) == 2:
            data[_key(item[0])] = item[1]
        else:
            data.pop(_key(item[0]), None)


def strict_reading(path: str) -> dict:
    """What the POD at ``path`` holds, every line read by the strict reader."""
    with open(os.path.join(path, layout.MANIFEST), "rb") as f:
        manifest = strict(f.read().replace(b"\n", b" "))
    data: dict = {}
    gzipped = bool(manifest.get("gzipped"))
    if manifest.get("snapshot"):
        text = journal.read_from(os.path.join(path, manifest["snapshot"]), 0, gzipped)[0]
        replay(text, data)
    log = os.path.join(path, manifest["journal"])
    if not layout.is_shared(manifest):
        if os.path.lexists(log):
            replay(journal.read_from(log, 0, gzipped)[0], data)
        return data
    number = 0
    while True:
        got = commits.read(log, number, gzipped)
        if got is None:
            return data
        assert not isinstance(got, commits.Sealed), "this test plants no seal"
        replay(got[0], data)
        number += 1


# -- the property -------------------------------------------------------------------------------


def attempt(what: str, call):
    """``call()`` under the time limit: its result, or the tastypy error it raised."""
    try:
        with time_limit(what):
            return call()
    except TastypyError as exc:
        return exc


@settings(
    max_examples=int(os.environ.get("TASTYPY_HOSTILE_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(plan=plans())
@example(
    plan=((False, False), False, [("journal-000000.jsonl", ("kind", "link to a file outside"))])
)
@example(plan=((False, False), True, [("snapshot-000001.jsonl", ("kind", "FIFO"))]))
@example(plan=((True, False), False, [("commits-000000", ("kind", "link to a file outside"))]))
@example(
    plan=(
        (True, False),
        False,
        [("commits-000000/0000000001.jsonl", ("kind", "link to /dev/zero"))],
    )
)
@example(plan=((False, False), False, [("manifest.json", ("kind", "link to a FIFO outside"))]))
@example(plan=((False, False), False, [("journal-000000.jsonl", ("json", b'["a",1]\n{"sync":1}'))]))
@example(
    plan=(
        (False, False),
        False,
        [("journal-000000.jsonl", ("json", b'["n",18446744073709551616]\n{"sync":1}\n'))],
    )
)
@example(
    plan=(
        (False, False),
        False,
        [
            (
                "journal-000000.jsonl",
                ("json", b'["d",' + b"[" * 254 + b"]" * 254 + b']\n{"sync":1}\n'),
            )
        ],
    )
)
@example(plan=((False, False), False, [("tastypy.lock", ("bytes", b"soft\n"))]))
def test_a_hostile_directory_never_hangs_crashes_leaks_or_misreads(plan):
    store, compacted, planted = plan
    sandbox = tempfile.mkdtemp(prefix="tastypy-hostile-")
    try:
        path = os.path.join(sandbox, "pod")
        build(path, store, compacted)
        outside = {
            "file": os.path.join(sandbox, "outside.jsonl"),
            "fifo": os.path.join(sandbox, "outside.fifo"),
            "nowhere": os.path.join(sandbox, "nowhere"),
        }
        with open(outside["file"], "wb") as f:
            f.write(CANARY)
        os.mkfifo(outside["fifo"])
        for name, content in planted:
            plant(os.path.join(path, name), content, outside)
        beside_outside = {k: v for k, v in tree_of(sandbox).items() if not k.startswith("pod")}

        before = tree_of(path)
        opened = attempt("opening", lambda: _load(path))
        assert tree_of(path) == before, "opening changed the directory"
        if not isinstance(opened, TastypyError):
            assert "canary-outside" not in repr(opened)
            # Loaded: exactly what a strict JSON reader reads, in order.
            assert typed(list(opened.items())) == typed(list(strict_reading(path).items()))
        else:
            assert "secret" not in str(opened)

        report = attempt("check", lambda: tastypy.check(path))
        assert tree_of(path) == before, "check changed the directory"
        assert "secret" not in str(report)

        repaired = attempt("repair", lambda: tastypy.repair(path))
        assert "secret" not in str(repaired)
        after = attempt("opening after the repair", lambda: _load(path))
        assert "canary-outside" not in repr(after)

        # Nothing outside the POD directory was written, created or read
        # through (the canary never shows, the FIFO outside never blocked).
        now = tree_of(sandbox)
        assert {k: v for k, v in now.items() if not k.startswith("pod")} == beside_outside
        for name, content in tree_of(path).items():
            # repair sets files aside; it never copies one through a link
            assert not (isinstance(content, bytes) and b"canary-outside" in content), name
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


def _load(path: str) -> dict:
    with tastypy.POD(path) as pod:
        return dict(pod.items())


def test_the_strict_reader_refuses_what_tastypy_must_not_load_silently():
    # The oracle above is only as good as its refusals: check them once.
    for line in (b"[1e400]", b'["\\ud800"]', b"[NaN]", b'["a",Infinity]'):
        try:
            strict(line)
        except ValueError:
            continue
        raise AssertionError(f"the strict reader took {line!r}")
    assert typed(strict(b"[18446744073709551616, 1.0, 1, true]")) == (
        "list",
        [("int", 2**64), ("float", (1.0).hex()), ("int", 1), True],
    )
