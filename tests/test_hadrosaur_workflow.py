"""hadrosaur's README workflow, run as written against tastypy's calls.

hadrosaur (computed resource management): ``Project(basedir)``, a
collection decorated on ``f(ident, args, subdir)``, ``proj.fetch(name,
ident, args)`` computing once and returning the result, the status
(completed / pending / error) and the paths (base, error and output logs,
storage). Adapted to our names: a collection is a tracker, ``fetch`` is
``tracker.fetch(ident, fn, ...)``, ``subdir`` is ``tracker.storage(ident)``,
the status is the record, the paths are ``tracker.paths(ident)``. Also its
two bugs, fixed here: a resource interrupted by Ctrl-C is not left pending
forever, and log handlers do not leak from one resource to the next.
See ``docs/recipes/computed-resources.md``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from tastypy import Tracker

_worker_tracker: dict = {}


def compute_resource(ident, args, subdir):
    # Run some things... maybe save stuff into subdir.
    print(f"computing {ident} with {args}")
    sys.stderr.write(f"a note on {ident}\n")
    logging.getLogger("resources").warning("logged for %s", ident)
    time.sleep(0.05)
    (subdir / "output.txt").write_text(f"output of {ident}")
    if args.get("fail"):
        raise ValueError(f"{ident} cannot be computed")
    # Return metadata for the resource, such as run results, file paths, etc.
    return {"ts": time.time(), "file": str(subdir / "output.txt")}


def fetch(collection, ident, args):
    """``proj.fetch('collection_name', ident, args)``."""
    return collection.fetch(ident, compute_resource, ident, args, collection.storage(ident))


def status(collection, ident):
    """hadrosaur's status of a resource, from its record."""
    info = collection.lease_info([ident])[ident]
    rec = collection[ident]
    return {
        "completed": rec["_done"],
        "pending": info.lease_left is not None and info.lease_left > 0,
        "error": not rec["_done"] and "_error" in rec,
    }


def test_the_readme_workflow(tmp_path):
    handlers = list(logging.getLogger().handlers)
    proj = Tracker(tmp_path / "base_directory" / "collection_name")
    # The resource has not been computed yet: the function is run.
    first = fetch(proj, "uniq_ident123", {"size": 3})
    assert status(proj, "uniq_ident123") == {"completed": True, "pending": False, "error": False}
    # Computed in the past: the saved result comes back at once, not run again.
    started = time.monotonic()
    assert fetch(proj, "uniq_ident123", {"size": 3}) == first
    assert time.monotonic() - started < 0.05
    assert proj.tries("uniq_ident123") == 1
    paths = proj.paths("uniq_ident123")
    assert (paths["storage"] / "output.txt").read_text() == "output of uniq_ident123"
    assert first["file"] == str(paths["storage"] / "output.txt")
    log = paths["log"].read_text()
    assert "computing uniq_ident123 with {'size': 3}" in log  # stdout
    assert "a note on uniq_ident123" in log  # stderr
    assert "WARNING resources: logged for uniq_ident123" in log  # logging
    # An error: the log is saved and the status updated.
    with pytest.raises(ValueError, match="cannot be computed"):
        fetch(proj, "broken", {"fail": True})
    assert status(proj, "broken") == {"completed": False, "pending": False, "error": True}
    assert "ValueError: broken cannot be computed" in proj.paths("broken")["log"].read_text()
    assert proj.errors()["broken"]["type"] == "ValueError"
    # find_by_status and stats.
    assert [k for k in proj if proj.done(k)] == ["uniq_ident123"]
    assert list(proj.errors()) == ["broken"]
    assert proj.stats()["done"] == 1 and proj.stats()["total"] == 2
    # hadrosaur's leak: no handler left after the resources.
    assert logging.getLogger().handlers == handlers
    proj.close()


def test_ctrl_c_does_not_leave_a_resource_pending(tmp_path):
    def interrupted(ident, args, subdir):
        raise KeyboardInterrupt

    proj = Tracker(tmp_path / "collection")
    with pytest.raises(KeyboardInterrupt):
        proj.fetch("r1", interrupted, "r1", {}, proj.storage("r1"))
    assert status(proj, "r1") == {"completed": False, "pending": False, "error": False}
    assert proj.tries("r1") == 0
    assert fetch(proj, "r1", {})["file"].endswith("output.txt")
    proj.close()


def _resource(ident: str) -> dict:
    """A worker's call: the collection opened once per process."""
    path = os.environ["COLLECTION"]
    collection = _worker_tracker.get(path)
    if collection is None:
        collection = _worker_tracker[path] = Tracker(path)
    return compute_resource(ident, {"n": ident}, collection.storage(ident))


def _processes(n: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"))


@pytest.mark.parametrize("pool", [ThreadPoolExecutor, _processes], ids=["threads", "processes"])
def test_thousands_of_resources_in_parallel(tmp_path, monkeypatch, pool):
    path = tmp_path / "collection"
    monkeypatch.setenv("COLLECTION", str(path))
    idents = [f"res-{i}" for i in range(40)]
    with Tracker(path) as proj, pool(4) as executor:
        summary = proj.run(_resource, idents, executor=executor, capture=True)
        assert summary["done"] == 40
        for ident in idents:
            paths = proj.paths(ident)
            assert (paths["storage"] / "output.txt").read_text() == f"output of {ident}"
            log = paths["log"].read_text()
            assert f"computing {ident} " in log and log.count("computing") == 1
            assert proj[ident]["result"]["file"] == str(paths["storage"] / "output.txt")
        # Fetching them now returns the stored results, running nothing.
        assert fetch(proj, "res-7", {}) == proj["res-7"]["result"]
    _worker_tracker.clear()
