"""Flows: datamake's parameterized task graphs, resumable, on the tracker.

A flow is a set of tasks, each a shell command (or a Python callable) with
an artifact whose existence means it is done, dependencies and parameters.
Running a target runs it and what it needs upstream, each task after its
dependencies, each tried and recorded in a tracker, so a flow that failed
or was killed resumes where it stopped. See ``docs/flows.md``; the command
is ``tastypy flow TARGET FLOWFILE...``.
"""

from tastypy.errors import FlowError
from tastypy.flow.artifacts import Artifact, LocalArtifact, UrlArtifact, register_artifact
from tastypy.flow.core import Flow, Plan, default_state
from tastypy.flow.definition import TaskDef
from tastypy.flow.files import read_flow_file
from tastypy.flow.graph import Node
from tastypy.flow.jobs import TaskFailed, log_path, task_dir
from tastypy.flow.running import FlowEvent
from tastypy.flow.values import (
    HELPERS,
    date_days_delta,
    date_now,
    days_range,
    eval_param,
    param_values,
)

__all__ = [
    "HELPERS",
    "Artifact",
    "Flow",
    "FlowError",
    "FlowEvent",
    "LocalArtifact",
    "Node",
    "Plan",
    "TaskDef",
    "TaskFailed",
    "UrlArtifact",
    "date_days_delta",
    "date_now",
    "days_range",
    "default_state",
    "eval_param",
    "log_path",
    "param_values",
    "read_flow_file",
    "register_artifact",
    "task_dir",
]
