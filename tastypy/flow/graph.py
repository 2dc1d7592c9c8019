"""From task definitions to the tasks one run needs, in a real topological order.

Three steps, each before anything runs:

1. :func:`check_graph`: every dependency names a task, and no task depends
   on itself through others (the cycle is named).
2. :func:`expand`: the target and everything upstream of it, for one set of
   parameter values, as :class:`Node` s. Parameters flow upstream, as in
   datamake: a task's values are its defaults, overridden by those of the
   task that needs it, overridden by the run's own (``--param``).
3. :func:`pending`: which of those run (their artifact is missing, or, for
   a task without one, the tracker has no done mark), walking down from the
   target and stopping at every task that need not run, so what only such a
   task needed does not run either; in an order where each task comes after
   all of its dependencies (Kahn's algorithm; datamake's reversed
   breadth-first walk ran a task before a dependency reached by a longer path).

A task's key in the tracker names it and the values of the parameters it
or anything upstream of it mentions: ``examples.download
{"username":"tims"}``. A task that mentions no parameter, nor does anything
upstream of it, has one key whatever the run's values, so a flow over ten
dates runs it once.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from typing import Any

import orjson

from tastypy.errors import FlowError
from tastypy.flow.definition import TaskDef
from tastypy.flow.templates import names, substitute

__all__ = ["Node", "check_graph", "expand", "find_task", "pending", "task_key"]


@dataclass
class Node:
    """One task with its parameter values put in: what the tracker calls one
    task, under :attr:`key`."""

    key: str
    task: TaskDef
    #: The values of the parameters in the key (what makes this task itself).
    params: dict[str, str]
    #: Every value this task has (passed on to its dependencies).
    values: dict[str, str]
    command: str | None
    artifact: str | None
    deps: list[str] = field(default_factory=list)


def check_graph(tasks: Mapping[str, TaskDef]) -> None:
    """FlowError for a dependency naming no task, or for a cycle."""
    for task in tasks.values():
        for dep in task.dependencies:
            if dep not in tasks:
                raise FlowError(
                    f"{task.source}: unknown dependency {dep!r}{_suggest(dep, tasks)}; "
                    "a dependency in another namespace is written namespace.id, and its "
                    "flow file must be given too"
                )
    cycle = _find_cycle(tasks)
    if cycle:
        raise FlowError(
            "the tasks depend on each other in a cycle: "
            + " -> ".join(cycle)
            + "; remove one of these dependencies"
        )


def _find_cycle(tasks: Mapping[str, TaskDef]) -> list[str]:
    """A cycle as ``[a, b, ..., a]`` (each depends on the next), or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for root in tasks:
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(tasks[root].dependencies)]
        state[root] = 1
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(dep) == 1:
                return path[path.index(dep) :] + [dep]
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(tasks[dep].dependencies))
    return []


def find_task(tasks: Mapping[str, TaskDef], target: str) -> str:
    """The qualified id of ``target``: ``namespace.id``, or a bare id that
    only one namespace holds."""
    if target in tasks:
        return target
    if "." not in target:
        matches = [qid for qid in tasks if qid.rpartition(".")[2] == target]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise FlowError(
                f"target {target!r} is ambiguous: {', '.join(sorted(matches))}; give namespace.id"
            )
    shown = ", ".join(sorted(tasks)[:20]) + (", ..." if len(tasks) > 20 else "")
    raise FlowError(
        f"unknown target {target!r}{_suggest(target, tasks)}; the tasks are: {shown or 'none'}"
    )


def _suggest(name: str, tasks: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(tasks), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def task_key(qid: str, params: Mapping[str, str]) -> str:
    """The tracker key of task ``qid`` with ``params`` (sorted, as JSON)."""
    if not params:
        return qid
    return f"{qid} " + orjson.dumps(dict(sorted(params.items()))).decode()


def relevant_names(tasks: Mapping[str, TaskDef]) -> dict[str, frozenset]:
    """For each task, the parameters it or anything upstream of it mentions."""
    out: dict[str, frozenset] = {}
    for qid in _upstream_first(tasks, list(tasks)):
        task = tasks[qid]
        found = set(task.used())
        for value in task.parameters.values():
            found.update(names(value))
        for dep in task.dependencies:
            found |= out[dep]
        out[qid] = frozenset(found)
    return out


def _upstream_first(tasks: Mapping[str, TaskDef], roots: list[str]) -> list[str]:
    """``roots`` and everything upstream, each after its dependencies (no cycles)."""
    order: list[str] = []
    seen: set[str] = set()
    for root in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(tasks[root].dependencies))]
        while stack:
            qid, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                order.append(qid)
                stack.pop()
            elif dep not in seen:
                seen.add(dep)
                stack.append((dep, iter(tasks[dep].dependencies)))
    return order


def expand(
    tasks: Mapping[str, TaskDef],
    relevant: Mapping[str, frozenset],
    target: str,
    run_values: Mapping[str, str],
    nodes: dict[str, Node],
) -> str:
    """Add ``target`` and everything upstream, for ``run_values``, to
    ``nodes`` (by key; a task already there is shared), and return the
    target's key. FlowError for a parameter a task needs and has no value of."""
    first = _node(tasks[target], {}, run_values, relevant)
    if first.key not in nodes:
        nodes[first.key] = first
        stack = [first]
        while stack:
            node = stack.pop()
            for dep in node.task.dependencies:
                upstream = _node(tasks[dep], node.values, run_values, relevant)
                node.deps.append(upstream.key)
                if upstream.key not in nodes:
                    nodes[upstream.key] = upstream
                    stack.append(upstream)
    return first.key


def _node(
    task: TaskDef,
    inherited: Mapping[str, str],
    run_values: Mapping[str, str],
    relevant: Mapping[str, frozenset],
) -> Node:
    values = _resolve_defaults(task, inherited, run_values)
    params = {name: values[name] for name in relevant[task.qid] if name in values}
    key = task_key(task.qid, params)

    def missing(where: str) -> Callable[[str], FlowError]:
        return lambda name: FlowError(
            f"task {task.qid} ({task.source}) needs the parameter {name!r} in its {where}, "
            f"and it has no value: give --param {name}=VALUE, or a default in the task's "
            '"parameters" (write $$ for a literal $)'
        )

    if task.fn is not None:
        for name in task.used():
            if name not in values:
                raise missing("parameters")(name)
    command = substitute(task.command, values, missing("command")) if task.command else None
    artifact = substitute(task.artifact, values, missing("artifact")) if task.artifact else None
    return Node(key, task, params, values, command, artifact)


def _resolve_defaults(
    task: TaskDef, inherited: Mapping[str, str], run_values: Mapping[str, str]
) -> dict[str, str]:
    """The task's values: its defaults (which may mention other parameters)
    under those of the task that needs it, under the run's."""
    given = {**inherited, **run_values}
    own = {k: v for k, v in task.parameters.items() if k not in given and v is not None}
    values = dict(given)
    resolving: list[str] = []

    def resolve(name: str) -> str:
        if name in values:
            return values[name]
        if name in resolving:
            loop = " -> ".join(resolving[resolving.index(name) :] + [name])
            raise FlowError(
                f"task {task.qid} ({task.source}): its parameters refer to each other: {loop}"
            )
        if name not in own:
            raise KeyError(name)
        resolving.append(name)

        def missing(ref: str) -> FlowError:
            return FlowError(
                f"task {task.qid} ({task.source}): the default of parameter {name!r} mentions "
                f"{ref!r}, which has no value: give --param {ref}=VALUE"
            )

        values[name] = substitute(own[name], _Lookup(resolve), missing)
        resolving.pop()
        return values[name]

    for name in own:
        resolve(name)
    return values


class _Lookup(Mapping):
    """A mapping whose items are resolved when asked for."""

    def __init__(self, get: Callable[[str], str]):
        self._get = get

    def __getitem__(self, name: str) -> str:
        return self._get(name)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


def pending(
    nodes: Mapping[str, Node],
    targets: list[str],
    finished: Callable[[Node], bool],
) -> tuple[list[str], list[str]]:
    """``(to_run, found)``: the keys that run, each after its dependencies
    (the earlier target's first), and those that need not run though
    something to run (or a target) needs them, per ``finished``."""
    to_run: dict[str, None] = {}
    found: dict[str, None] = {}
    seen: set[str] = set()
    for target in targets:
        stack = [target]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            node = nodes[key]
            if finished(node):
                found[key] = None
            else:
                to_run[key] = None
                stack.extend(reversed(node.deps))
    return _topological(nodes, list(to_run)), list(found)


def _topological(nodes: Mapping[str, Node], keys: list[str]) -> list[str]:
    """``keys`` with each after its dependencies among them; of the tasks
    ready at once, the one found first walking from the targets goes first
    (so the first target's tasks before the next one's)."""
    rank = {key: i for i, key in enumerate(keys)}
    waiting = dict.fromkeys(keys, 0)
    users: dict[str, list[str]] = {key: [] for key in keys}
    for key in keys:
        for dep in dict.fromkeys(nodes[key].deps):
            if dep in rank:
                waiting[key] += 1
                users[dep].append(key)
    heap = [(rank[k], k) for k in keys if waiting[k] == 0]
    heapify(heap)
    order = []
    while heap:
        _, key = heappop(heap)
        order.append(key)
        for user in users[key]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heappush(heap, (rank[user], user))
    return order
