""":class:`Flow`: datamake's parameterized task graphs, run on a tracker.

A flow holds task definitions (from datamake flow files, or added in
Python) and a tracker directory, its state. Running a target plans first
(everything that can be wrong with the flow or the parameters is found
before anything runs), then runs what is needed through an executor, each
task claimed, tried and recorded in the tracker, then deletes the artifacts
marked ``cleanup`` of the runs that succeeded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from tastypy.errors import FlowError
from tastypy.executor import as_executor, serving
from tastypy.flow.artifacts import Artifact, artifact_for
from tastypy.flow.definition import TaskDef, make_task
from tastypy.flow.files import read_flow_file
from tastypy.flow.graph import Node, check_graph, expand, find_task, pending, relevant_names
from tastypy.flow.jobs import CallJob, GatherJob, ShellJob, log_path
from tastypy.flow.running import FlowEvent, Inline, Schedule, worker_count
from tastypy.flow.values import param_values
from tastypy.tracker import ProgressTracker

__all__ = ["Flow", "Plan", "default_state"]

#: Where a flow's state goes by default: beside its first flow file.
STATE_DIR: Final = ".tastypy-flow"


def default_state(flow_file: str) -> str:
    """``<flow file's directory>/.tastypy-flow/<flow file's name without .json>``."""
    folder, name = os.path.split(os.path.abspath(os.fspath(flow_file)))
    stem = name[:-5] if name.endswith(".json") and len(name) > 5 else name
    return os.path.join(folder, STATE_DIR, stem)


@dataclass
class Plan:
    """The tasks one call of :meth:`Flow.run` considers: for each set of
    parameter values (``values``), the target's key (``targets``), and the
    target with everything upstream, by key (``nodes``, shared between
    values where the parameters they mention agree)."""

    nodes: dict[str, Node]
    targets: list[str]
    values: list[dict]
    artifacts: dict[str, Artifact]
    base: str


class Flow:
    """A flow: tasks, their dependencies and artifacts, and a tracker.

    ``path`` is the tracker directory that keeps the flow's state (tries,
    errors, times, done marks of tasks without an artifact) and each
    command's log. ``max_tries`` (0: no limit) caps the tries of a task
    over every run; ``lease`` and ``lock`` are the tracker's.

    Example::

        flow = Flow("state")
        flow.add("ex.fetch", "seq 3 > ${name}.txt", artifact="${name}.txt")
        flow.add("ex.count", fn=count_lines, dependencies=["fetch"], parameters=["name"])
        summary = flow.run("ex.count", {"name": "numbers"})
    """

    def __init__(
        self, path: Any, *, max_tries: int | None = 0, lease: float = 3600.0, lock: str = "auto"
    ):
        if max_tries is None:
            max_tries = 0
        if type(max_tries) is not int or max_tries < 0:
            raise FlowError(
                f"max_tries must be a whole number >= 0 (0: no limit), got {max_tries!r}"
            )
        if not isinstance(lease, (int, float)) or isinstance(lease, bool) or not lease > 0:
            raise FlowError(f"lease must be a number of seconds > 0, got {lease!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.max_tries = max_tries
        self.lease = float(lease)
        self.lock = lock
        self._tasks: dict[str, TaskDef] = {}
        self._tracker: ProgressTracker | None = None

    def __repr__(self) -> str:
        return f"<Flow {len(self._tasks)} tasks, state {self.path}>"

    @classmethod
    def from_files(cls, files: Iterable[Any], *, state: Any = None, **options: Any) -> Flow:
        """A flow of the tasks of datamake flow ``files``; its state in
        ``state``, by default :func:`default_state` of the first file."""
        files = [os.fspath(f) for f in files]
        if not files:
            raise FlowError("give at least one flow file")
        flow = cls(state if state is not None else default_state(files[0]), **options)
        for name in files:
            flow.load(name)
        return flow

    # -- tasks ----------------------------------------------------------------------------

    @property
    def tasks(self) -> Mapping[str, TaskDef]:
        """The tasks, by qualified id (``namespace.id``)."""
        return MappingProxyType(self._tasks)

    def load(self, flow_file: Any) -> list[str]:
        """Add the tasks of a datamake flow file; returns their qualified ids."""
        return self._add_all(read_flow_file(flow_file))

    def add(
        self,
        task_id: str,
        command: str | None = None,
        *,
        fn: Callable[[dict], Any] | None = None,
        artifact: str | None = None,
        dependencies: Iterable[str] = (),
        parameters: Mapping[str, Any] | Iterable[str] | None = None,
        cleanup: bool = False,
        max_attempts: int = 1,
    ) -> str:
        """Add a task ``namespace.id`` (or a bare ``id``, in no namespace):
        a shell ``command``, or a Python ``fn`` called with the dict of its
        ``parameters`` (names, or names with defaults) and returning a JSON
        value kept in its record, or neither (a task that gathers its
        dependencies). Returns its qualified id."""
        if not isinstance(task_id, str):
            raise FlowError(f"a task id is a string like 'examples.download', got {task_id!r}")
        namespace, _, bare = task_id.rpartition(".")
        task = make_task(
            namespace,
            bare,
            command=command,
            fn=fn,
            artifact=artifact,
            dependencies=dependencies,
            cleanup=cleanup,
            parameters=parameters,
            max_attempts=max_attempts,
            source=f"Flow.add({task_id!r})",
        )
        return self._add_all([task])[0]

    def _add_all(self, tasks: list[TaskDef]) -> list[str]:
        for task in tasks:
            if task.qid in self._tasks:
                raise FlowError(
                    f"task {task.qid} is defined twice: {self._tasks[task.qid].source} and "
                    f"{task.source}; give one of them another namespace"
                )
        for task in tasks:
            self._tasks[task.qid] = task
        return [task.qid for task in tasks]

    # -- state ----------------------------------------------------------------------------

    @property
    def tracker(self) -> ProgressTracker:
        """The flow's tracker (opened, or created, on first use)."""
        if self._tracker is None or self._tracker.closed:
            self._tracker = ProgressTracker(self.path, **self._options())
        return self._tracker

    def _options(self) -> dict:
        return {"max_tries": self.max_tries, "lock": self.lock, "lease": self.lease}

    def close(self) -> None:
        """Close the tracker (it is written at exit anyway)."""
        if self._tracker is not None:
            self._tracker.close()

    def __enter__(self) -> Flow:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- planning -------------------------------------------------------------------------

    def plan(self, target: str, params: Mapping[str, str] | list | None = None) -> Plan:
        """Check the flow and resolve ``target`` and its upstream for
        ``params`` (one dict of values, or a list of them: one run each).
        Raises FlowError, naming the problem, before anything runs."""
        values = _values_list(params)
        check_graph(self._tasks)
        qid = find_task(self._tasks, target)
        relevant = relevant_names(self._tasks)
        nodes: dict[str, Node] = {}
        targets = [expand(self._tasks, relevant, qid, v, nodes) for v in values]
        base = os.getcwd()
        artifacts = {k: artifact_for(n.artifact, base) for k, n in nodes.items() if n.artifact}
        return Plan(nodes, targets, values, artifacts, base)

    def pending(
        self, target: str, params: Mapping[str, str] | list | None = None, *, rerun: bool = False
    ) -> list[dict]:
        """For each set of values, the keys of the tasks a run would run
        (``to_run``, in order) and of those it would find done (``found``),
        and the tasks by key (``nodes``); runs nothing, creates no state."""
        plan = self.plan(target, params)
        exists = self._tracker is not None or os.path.exists(self.path)
        finished = _finished(plan, self.tracker if exists else None, rerun)
        out = []
        for value, key in zip(plan.values, plan.targets):
            to_run, found = pending(plan.nodes, [key], finished)
            out.append(
                {
                    "params": value,
                    "target": key,
                    "to_run": to_run,
                    "found": found,
                    "nodes": plan.nodes,
                }
            )
        return out

    # -- running --------------------------------------------------------------------------

    def run(
        self,
        target: str,
        params: Mapping[str, str] | list | None = None,
        *,
        executor: Any = None,
        rerun: bool = False,
        on_event: Callable[[FlowEvent], Any] | None = None,
    ) -> dict:
        """Run ``target`` and what it needs of its upstream, for ``params``
        (one dict of values, or a list: one run each, all planned before
        any runs).

        ``executor``: any ``concurrent.futures.Executor`` or a dask
        ``Client``; None runs the tasks here, one after the other.
        ``rerun=True`` runs tasks without an artifact again even if done
        (datamake's behaviour). ``on_event`` is called with a
        :class:`~tastypy.flow.running.FlowEvent` as tasks start and end.

        Returns a summary: ``ok``, ``ran`` (tasks run to success now),
        ``found`` (needed but already done: their artifact exists, or done
        before, or done by another run meanwhile), ``failed`` (key: why), ``not_run`` (waiting on a
        failure), ``cleaned`` (artifacts deleted), ``values`` (per set of
        values: ``params``, ``target``, ``ok``), ``seconds``, ``state``.
        """
        started = time.monotonic()
        plan = self.plan(target, params)
        tracker = self.tracker
        tracker.refresh()
        order, found, needed_by = self._pending_all(plan, tracker, rerun, on_event)
        self._prepare(plan, order, tracker)
        schedule = Schedule(
            plan.nodes,
            order,
            needed_by,
            lambda node: self._job(node, plan),
            tracker,
            self._options(),
            self.lease,
            on_event,
        )
        if order:
            if executor is None:
                pool, at_once = Inline(), 1
            else:  # a few more than the workers, so none waits for the next task
                pool, at_once = as_executor(executor), 2 * worker_count(executor)
            with serving(tracker):
                schedule.run(pool, at_once)
        tracker.refresh()
        cleaned = self._cleanup(plan, [*order, *found], needed_by, schedule, on_event)
        summary = _summary(plan, order, found, schedule)
        summary.update(cleaned=cleaned, seconds=round(time.monotonic() - started, 3))
        summary["state"] = self.path
        return summary

    def _pending_all(
        self, plan: Plan, tracker: ProgressTracker, rerun: bool, on_event: Any
    ) -> tuple[list[str], list[str], dict[str, set]]:
        """The tasks to run for every set of values (in one order), those
        found done, and which sets of values need each."""
        finished = _finished(plan, tracker, rerun)
        needed_by: dict[str, set] = {}
        for i, key in enumerate(plan.targets):
            to_run, found = pending(plan.nodes, [key], finished)
            for needed in (*to_run, *found):
                needed_by.setdefault(needed, set()).add(i)
            if on_event is not None:
                on_event(
                    FlowEvent(
                        "planned", None, params=plan.values[i], to_run=len(to_run), found=len(found)
                    )
                )
        order, found = pending(plan.nodes, plan.targets, finished)
        return order, found, needed_by

    def _prepare(self, plan: Plan, order: list[str], tracker: ProgressTracker) -> None:
        """Add the tasks to run to the tracker, with what they are, before
        any worker looks; a task done before whose artifact is gone (or
        that runs again with ``rerun``) starts afresh."""
        if not order:
            return
        with tracker.holding():
            tracker.add_many_if_absent(order)
            tracker.update({key: self._describe(plan.nodes[key]) for key in order})
            for key in order:
                if tracker.done(key):
                    tracker.mark_not_done(key)
                    tracker.reset_tries(key)
        tracker.sync()

    def _describe(self, node: Node) -> dict:
        task = node.task
        out: dict = {"task": task.qid, "params": node.params}
        if node.command is not None:
            out["command"] = node.command
            out["log"] = os.path.relpath(log_path(self.path, node.key), self.path)
        if task.fn is not None:
            name = getattr(task.fn, "__qualname__", None) or repr(task.fn)
            out["function"] = f"{getattr(task.fn, '__module__', '?')}.{name}"
        if node.artifact is not None:
            out["artifact"] = node.artifact
        return out

    def _job(self, node: Node, plan: Plan) -> Any:
        common = (
            node.task.qid,
            self.tracker.path,  # the key under which this process serves it to its threads
            self._options(),
            self.lease,
            plan.artifacts.get(node.key),
        )
        if node.command is not None:
            return ShellJob(*common, command=node.command, cwd=plan.base)
        if node.task.fn is not None:
            params = {name: node.values[name] for name in node.task.used()}
            return CallJob(*common, fn=node.task.fn, params=params)
        return GatherJob(*common)

    def _cleanup(
        self, plan: Plan, keys: list[str], needed_by: dict, schedule: Schedule, on_event: Any
    ) -> list[str]:
        """Delete the artifacts marked ``cleanup`` that only succeeded runs needed."""
        cleaned = []
        ran = set(schedule.done)
        for key in keys:
            node = plan.nodes[key]
            artifact = plan.artifacts.get(key)
            if not node.task.cleanup or artifact is None or needed_by[key] & schedule.failed_values:
                continue
            if key in schedule.failed or (key not in ran and not artifact.exists()):
                continue
            artifact.delete()
            cleaned.append(artifact.uri)
            if on_event is not None:
                on_event(FlowEvent("cleanup", node))
        return cleaned

    def delete_artifacts(
        self, target: str, params: Mapping[str, str] | list | None = None
    ) -> list[str]:
        """Delete the artifacts of ``target`` and everything upstream (datamake's
        ``--delete-artifacts``); returns those that existed."""
        plan = self.plan(target, params)
        deleted = []
        for artifact in plan.artifacts.values():
            if artifact.exists():
                artifact.delete()
                deleted.append(artifact.uri)
        return deleted


def _summary(plan: Plan, order: list[str], found: list[str], schedule: Schedule) -> dict:
    done = set(schedule.done).union(found, schedule.done_elsewhere)
    values = [
        {"params": value, "target": key, "ok": i not in schedule.failed_values and key in done}
        for i, (value, key) in enumerate(zip(plan.values, plan.targets))
    ]
    return {
        "ok": all(v["ok"] for v in values),
        "ran": len(schedule.done),
        "found": len(found) + len(schedule.done_elsewhere),
        "failed": dict(schedule.failed),
        "not_run": len(order) - len(done.intersection(order)) - len(schedule.failed),
        "values": values,
    }


def _values_list(params: Any) -> list[dict]:
    if params is None:
        return [{}]
    if isinstance(params, Mapping):
        params = [params]
    if not isinstance(params, list) or not params:
        raise FlowError(
            f"params must be a dict of values or a non-empty list of them, got {params!r:.80}"
        )
    out = []
    for value in params:
        if not isinstance(value, Mapping):
            raise FlowError(f"params must be a dict of values or a list of them, got {value!r:.80}")
        out.extend(param_values(dict(value)))
    return out


def _finished(plan: Plan, tracker: ProgressTracker | None, rerun: bool) -> Callable[[Node], bool]:
    """Whether a task need not run: its artifact exists; or, without one,
    the tracker has it done (unless ``rerun``). Each is asked once."""
    known: dict[str, bool] = {}

    def finished(node: Node) -> bool:
        answer = known.get(node.key)
        if answer is None:
            artifact = plan.artifacts.get(node.key)
            if artifact is not None:
                answer = artifact.exists()
            else:
                answer = not rerun and tracker is not None and tracker.done(node.key)
            known[node.key] = answer
        return answer

    return finished
