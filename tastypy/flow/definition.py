"""A task of a flow, as defined (before its parameters are put in).

A flow file's task and a task added with :meth:`Flow.add
<tastypy.flow.Flow.add>` both become a :class:`TaskDef`. This module holds
the rules a definition must follow, each checked once, with a message that
names where the definition came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from tastypy.errors import FlowError
from tastypy.flow.templates import is_name, names

__all__ = ["TaskDef", "make_task", "qualify"]

#: A task id: no whitespace (keys and messages show it plainly) and no dot
#: (a dot separates the namespace, as in datamake's ``namespace.id``).
_ID: Final = re.compile(r"^[^\s.]+$")
_NAMESPACE: Final = re.compile(r"^[^\s]+$")


@dataclass(frozen=True)
class TaskDef:
    """One task: its qualified id (``namespace.id``), what it runs (a shell
    ``command`` or a Python ``fn``, or nothing: a task that only gathers
    its dependencies), the ``artifact`` it makes, its ``dependencies``
    (qualified ids), and its parameter defaults (None: no default)."""

    qid: str
    command: str | None = None
    fn: Callable[[dict], Any] | None = None
    artifact: str | None = None
    dependencies: tuple[str, ...] = ()
    cleanup: bool = False
    parameters: dict[str, str | None] = field(default_factory=dict)
    max_attempts: int = 1
    #: Where it was defined, for messages: "diamond.json, task 2 ('grep-name')".
    source: str = ""

    @property
    def namespace(self) -> str:
        return self.qid.rpartition(".")[0]

    def used(self) -> list[str]:
        """The parameters this task itself needs: those its command and
        artifact (and the defaults of those) mention; a Python task
        needs every parameter it declares, since it is handed them."""
        wanted = dict.fromkeys([*names(self.command), *names(self.artifact)])
        if self.fn is not None:
            wanted.update(dict.fromkeys(self.parameters))
        todo = list(wanted)
        while todo:
            default = self.parameters.get(todo.pop())
            for name in names(default):
                if name not in wanted:
                    wanted[name] = None
                    todo.append(name)
        return list(wanted)


def qualify(namespace: str, task_id: str) -> str:
    """A dependency's qualified id: as given if it has a dot (another
    namespace), else in ``namespace`` (datamake's rule)."""
    if "." in task_id or not namespace:
        return task_id
    return f"{namespace}.{task_id}"


def make_task(
    namespace: str,
    task_id: Any,
    *,
    command: Any = None,
    fn: Any = None,
    artifact: Any = None,
    dependencies: Any = (),
    cleanup: Any = False,
    parameters: Any = None,
    max_attempts: Any = 1,
    source: str,
) -> TaskDef:
    """A checked :class:`TaskDef`; FlowError names ``source`` and the field at fault."""

    def bad(field_name: str, what: str, value: Any) -> FlowError:
        shown = orjson.dumps(value, default=repr).decode()
        return FlowError(f"{source}, field {field_name!r}: {what}, got {shown[:80]}")

    if not isinstance(task_id, str) or not _ID.match(task_id):
        raise bad("id", "must be a non-empty string without spaces or dots", task_id)
    if namespace and not _NAMESPACE.match(namespace):
        raise bad("namespace", "must be a non-empty string without spaces", namespace)
    if command is not None and not isinstance(command, str):
        raise bad("command", "must be a shell command (a string) or null", command)
    if fn is not None and not callable(fn):
        raise bad("fn", "must be callable", fn)
    if fn is not None and command is not None:
        raise FlowError(f"{source}: give a command or fn, not both")
    if artifact is not None and (not isinstance(artifact, str) or not artifact):
        raise bad("artifact", "must be a path or URL (a non-empty string) or null", artifact)
    if isinstance(dependencies, str) or not isinstance(dependencies, Iterable):
        raise bad("dependencies", 'must be a list of task ids, e.g. ["download"]', dependencies)
    dependencies = list(dependencies)
    for dependency in dependencies:
        if not isinstance(dependency, str) or not dependency or dependency.split()[0] != dependency:
            raise bad("dependencies", "must hold task ids (strings without spaces)", dependency)
    if type(cleanup) is not bool:
        raise bad("cleanup", "must be true or false", cleanup)
    if type(max_attempts) is not int or max_attempts < 1:
        raise bad("max_attempts", "must be a whole number >= 1", max_attempts)
    qid = f"{namespace}.{task_id}" if namespace else task_id
    return TaskDef(
        qid=qid,
        command=command,
        fn=fn,
        artifact=artifact,
        dependencies=tuple(dict.fromkeys(qualify(namespace, d) for d in dependencies)),
        cleanup=cleanup,
        parameters=_defaults(parameters, bad),
        max_attempts=max_attempts,
        source=source,
    )


def _defaults(parameters: Any, bad: Callable[[str, str, Any], FlowError]) -> dict:
    """Parameter defaults as strings (None: no default). A list of names
    declares parameters without defaults (for Python tasks)."""
    if parameters is None:
        return {}
    if isinstance(parameters, (list, tuple)):
        parameters = dict.fromkeys(parameters)
    if not isinstance(parameters, dict):
        raise bad(
            "parameters", 'must be an object of defaults, e.g. {"date": "2024-05-01"}', parameters
        )
    out: dict[str, str | None] = {}
    for name, value in parameters.items():
        if not is_name(name):
            raise bad("parameters", "names must be letters, digits and _ (not first a digit)", name)
        if value is None or isinstance(value, str):
            out[name] = value
        elif type(value) in (int, float, bool):
            out[name] = orjson.dumps(value).decode()  # true, 3, 1.5: as the file spells them
        else:
            raise bad(f"parameters.{name}", "must be a string, a number, true/false or null", value)
    return out
