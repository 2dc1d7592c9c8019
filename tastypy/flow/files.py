"""datamake's flow files, read and checked.

The format (version ``"1.0"``)::

    {"version": "1.0", "namespace": "examples", "description": "...",
     "tasks": [{"id": "download", "command": "...", "artifact": "...",
                "dependencies": ["other", "ns.task"], "cleanup": false,
                "parameters": {"name": "default"}, "max_attempts": 1}]}

Everything but ``version``, ``tasks`` and each task's ``id`` is optional.
datamake also read ``verify`` and ``rollback`` and never used them; they are
accepted and ignored here too. Any other field is an error (a misspelt
``dependecies`` would otherwise drop a dependency without a word). A comma
before a closing bracket is accepted: the date example of datamake's README
has one.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Final

from tastypy.errors import FlowError
from tastypy.flow.definition import TaskDef, make_task

__all__ = ["read_flow_file"]

_TOP_FIELDS: Final = ("version", "namespace", "description", "tasks")
_TASK_FIELDS: Final = (
    "id",
    "command",
    "artifact",
    "dependencies",
    "cleanup",
    "parameters",
    "max_attempts",
)
#: Read by datamake but never acted on; a description is for people.
_IGNORED_TASK_FIELDS: Final = ("verify", "rollback", "description")

#: Strings, or a comma with only blanks before a closing bracket.
_TRAILING_COMMA: Final = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])')


def read_flow_file(path: str) -> list[TaskDef]:
    """The tasks of the flow file at ``path``, checked; FlowError names
    the file, the task and the field at fault."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            raw = stream.read()
    except OSError as exc:
        raise FlowError(f"cannot read the flow file {name}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlowError(f"{name} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    document = _parse(name, text)
    if not isinstance(document, dict):
        raise FlowError(f"{name}: a flow file holds a JSON object, got {type(document).__name__}")
    _check_fields(f"{name}", document, _TOP_FIELDS, ())
    version = document.get("version")
    if version != "1.0":
        raise FlowError(
            f"{name}, field 'version': must be \"1.0\" (datamake's format), got {version!r}"
        )
    namespace = document.get("namespace") or ""
    if not isinstance(namespace, str):
        raise FlowError(f"{name}, field 'namespace': must be a string, got {namespace!r}")
    description = document.get("description")
    if description is not None and not isinstance(description, str):
        raise FlowError(f"{name}, field 'description': must be a string, got {description!r}")
    tasks = document.get("tasks")
    if not isinstance(tasks, list):
        raise FlowError(f"{name}, field 'tasks': must be a list of tasks, got {tasks!r:.60}")
    out = []
    seen: dict[str, str] = {}
    for index, task in enumerate(tasks, 1):
        out.append(_task(name, namespace, index, task))
        if out[-1].qid in seen:
            raise FlowError(f"{out[-1].source}: the id is used twice (also {seen[out[-1].qid]})")
        seen[out[-1].qid] = out[-1].source
    return out


def _parse(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        first = exc
    lenient = _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)
    if lenient != text:
        try:
            return json.loads(lenient)
        except json.JSONDecodeError:
            pass
    raise FlowError(
        f"{name} is not valid JSON: {first.msg} at line {first.lineno}, column {first.colno}"
    ) from None


def _task(name: str, namespace: str, index: int, task: Any) -> TaskDef:
    if not isinstance(task, dict):
        raise FlowError(f"{name}, task {index}: must be an object, got {task!r:.60}")
    task_id = task.get("id")
    source = f"{name}, task {index}" + (f" ({task_id!r})" if isinstance(task_id, str) else "")
    if "id" not in task:
        raise FlowError(f"{source}: field 'id' is missing; every task needs one")
    _check_fields(source, task, _TASK_FIELDS, _IGNORED_TASK_FIELDS)
    return make_task(
        namespace,
        task_id,
        command=task.get("command"),
        artifact=task.get("artifact"),
        dependencies=task.get("dependencies") or [],
        cleanup=task.get("cleanup", False),
        parameters=task.get("parameters"),
        max_attempts=task.get("max_attempts", 1),
        source=source,
    )


def _check_fields(where: str, obj: dict, known: tuple, ignored: tuple) -> None:
    unknown = [k for k in obj if k not in known and k not in ignored]
    if unknown:
        raise FlowError(f"{where}: unknown field {unknown[0]!r}; the fields are {', '.join(known)}")
