"""A task's own files: :meth:`storage` and :meth:`paths`.

Each task may keep files in a directory of its own, inside the tracker's
directory: ``<tracker>/tasks/<slug>-<hash>/``, named safely from the key by
:mod:`tastypy.storage.taskfiles`. For a tracker in parts it is under the
top directory (the one the tracker was opened with), whichever part holds
the record, so resharding does not move it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tastypy.storage import taskfiles

__all__ = ["TaskFilesMixin"]


class TaskFilesMixin:
    """``storage(key)`` and ``paths(key)``, for a tracker and a parted one."""

    #: Where the ``tasks/`` directory is: the tracker's own directory, or,
    #: for a part of a parted tracker, the top directory (set as it opens).
    _files_root: str | None = None

    def _tasks_root(self) -> str:
        return self._files_root or self.path  # type: ignore[attr-defined]

    def _task_dir(self, key: Any) -> str:
        """``key``'s directory, made if need be."""
        return taskfiles.ensure(self._tasks_root(), key)

    def storage(self, key: Any) -> Path:
        """The directory where the task ``key`` keeps its files, made on first use.

        It is ``storage/`` in the task's directory ``<tracker>/tasks/<name>/``,
        whose name is a readable part of the key and a hash of it, safe on any
        filesystem: a key holding ``/``, ``..``, NUL, a reserved Windows name
        or any unicode cannot lead outside it, and two keys never share one.
        The key need not be in the tracker yet. Example::

            with tracker.attempt("page-7") as task:
                if task:
                    (tracker.storage("page-7") / "page.html").write_text(fetch(7))
        """
        return Path(self._task_dir(key), taskfiles.STORAGE_DIR)

    def paths(self, key: Any) -> dict:
        """Everything stored for the task ``key``, made or not yet::

            {"base": Path,      # the task's directory, holding all of it
             "storage": Path,   # tracker.storage(key): the task's own files
             "logs": [Path],    # the captured log of each attempt, oldest first
             "log": Path|None,  # the last of them (None: none captured)
             "key": Path}       # key.json: the key the directory belongs to

        Nothing is made; a path of something not made yet does not exist.
        """
        base = taskfiles.find(self._tasks_root(), key)
        logs = [Path(p) for p in taskfiles.logs(base)]
        return {
            "base": Path(base),
            "storage": Path(base, taskfiles.STORAGE_DIR),
            "logs": logs,
            "log": logs[-1] if logs else None,
            "key": Path(base, taskfiles.KEY_FILE),
        }
