"""``tastypy flow TARGET FLOWFILE...``: datamake's command line, on a tracker.

The arguments are datamake's (``--param``, ``--eval-param``, ``--dryrun``,
``--showgraph``, ``--delete-artifacts``), plus ``--jobs``, ``--state``,
``--max-tries``, ``--rerun`` and ``--quiet``. Exit status: 0 when every
run succeeded, 1 when a task failed (the failed tasks are named), 2 when
the flow or the arguments are wrong (nothing ran), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Final

__all__ = ["add_parser", "main"]

#: Lines of a task's output shown on the terminal (the log keeps them all).
SHOWN_LINES: Final = 200


def add_parser(sub: Any) -> None:
    """The ``flow`` subcommand's arguments, on the ``tastypy`` parser's subparsers."""
    flow = sub.add_parser(
        "flow",
        help="run a datamake flow's TARGET and what it needs; run again to resume",
        description="Run TARGET (namespace.id) of the datamake flow files, after everything "
        "upstream of it that is not done, each task once its dependencies are. A task whose "
        "artifact exists does not run, nor what only it needed. State (tries, errors, logs) "
        "is kept in a tracker: by default .tastypy-flow/NAME beside the first flow file. "
        "See docs/flows.md.",
    )
    flow.add_argument("target", metavar="TARGET", help="the task to run: namespace.id")
    flow.add_argument("flow_files", metavar="FLOWFILE", nargs="+", help="datamake flow files")
    flow.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter value for every task (repeat for more)",
    )
    flow.add_argument(
        "--eval-param",
        action="append",
        default=[],
        metavar="KEY=EXPRESSION",
        help="run the flow once per value of EXPRESSION: days_range(-7,0), date_now(), "
        "date_days_delta('2024-05-01',-1), range(1,4), or a list ['a','b']",
    )
    _add_options(flow)


def _add_options(flow: Any) -> None:
    flow.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        metavar="N",
        help="run up to N independent tasks at once, in a process pool",
    )
    flow.add_argument("--state", metavar="DIR", help="the tracker directory of the flow's state")
    flow.add_argument(
        "--max-tries",
        type=int,
        default=0,
        metavar="N",
        help="stop trying a task after N failed tries over all runs (0: no limit)",
    )
    flow.add_argument(
        "--rerun",
        action="store_true",
        help="run tasks without an artifact again even if done (as datamake did)",
    )
    flow.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="show only failures and the summary, not each task and its output",
    )
    flow.add_argument("--dryrun", action="store_true", help="show what would run; run nothing")
    flow.add_argument(
        "--showgraph",
        action="store_true",
        help="show the dependencies upstream of TARGET; run nothing",
    )
    flow.add_argument(
        "--delete-artifacts",
        action="store_true",
        help="delete the artifacts of TARGET and everything upstream; run nothing",
    )


def main(args: argparse.Namespace) -> int:
    """Run the ``flow`` subcommand; returns the exit status."""
    from concurrent.futures import BrokenExecutor

    from tastypy.errors import FlowError, TastypyError
    from tastypy.flow.core import Flow
    from tastypy.flow.values import param_values, parse_assignment

    for stream in (sys.stdout, sys.stderr):  # lines in order, also through a pipe
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    flow = None
    try:
        try:
            if args.jobs < 1:
                raise FlowError(f"--jobs must be 1 or more, got {args.jobs}")
            values = param_values(
                [parse_assignment(p, "--param") for p in args.param],
                [parse_assignment(p, "--eval-param") for p in args.eval_param],
            )
            flow = Flow.from_files(args.flow_files, state=args.state, max_tries=args.max_tries)
            if args.showgraph:
                return _show_graph(flow, args.target)
            if args.dryrun:
                return _dry_run(flow, args.target, values, args.rerun)
            if args.delete_artifacts:
                for uri in flow.delete_artifacts(args.target, values):
                    print(f"deleted {uri}")
                return 0
            flow.plan(args.target, values)  # every error before the tracker is made
            return _run(flow, args, values)
        except FlowError as exc:
            print(f"tastypy flow: {exc}", file=sys.stderr)
            return 2
        except TastypyError as exc:
            print(f"tastypy flow: {exc}", file=sys.stderr)
            return 1
        except BrokenExecutor as exc:
            print(
                f"tastypy flow: a worker process died ({exc}); run the same command again to "
                "resume",
                file=sys.stderr,
            )
            return 1
        except KeyboardInterrupt:
            print(
                "tastypy flow: interrupted; run the same command again to resume", file=sys.stderr
            )
            return 130
    finally:
        if flow is not None:
            flow.close()


def _run(flow: Any, args: argparse.Namespace, values: list) -> int:
    printer = _Printer(args.quiet)
    if args.jobs == 1:
        summary = flow.run(args.target, values, rerun=args.rerun, on_event=printer)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from tastypy.flow.jobs import watch_parent

        with ProcessPoolExecutor(
            args.jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=watch_parent,
            initargs=(os.getpid(),),
        ) as pool:
            summary = flow.run(
                args.target, values, executor=pool, rerun=args.rerun, on_event=printer
            )
    state = os.path.relpath(summary["state"])
    print(
        f"{summary['ran']} ran, {summary['found']} found done, {len(summary['failed'])} failed"
        + (f", {summary['not_run']} not run" if summary["not_run"] else "")
        + f", {summary['seconds']:.1f} s; state in {state}"
    )
    if summary["ok"]:
        return 0
    failed = ", ".join(printer.label(key) for key in summary["failed"]) or "none"
    print(f"FAILED: {failed}; run the same command again to resume", file=sys.stderr)
    return 1


class _Printer:
    """Shows a flow's events as lines on stdout (failures on stderr)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.labels: dict[str, str] = {}

    def label(self, key: str) -> str:
        return self.labels.get(key, key)

    def __call__(self, event: Any) -> None:
        if event.kind == "planned":
            if not self.quiet:
                what = _values(event.params) or "the flow"
                print(f"{what}: {event.to_run} to run, {event.found} found done", flush=True)
            return
        node = event.node
        label = self.labels.setdefault(node.key, _label(node))
        if event.kind == "failed":
            print(f"FAILED {label}: {event.error}", file=sys.stderr, flush=True)
        elif event.kind == "retry":
            print(f"retry  {label}: {event.error}", file=sys.stderr, flush=True)
        elif self.quiet:
            return
        elif event.kind == "start":
            print(f"run    {label}" + (f": {node.command}" if node.command else ""), flush=True)
        elif event.kind == "done":
            self._output(event)
            print(f"done   {label} ({event.seconds:.2f} s)", flush=True)
        elif event.kind == "done elsewhere":
            print(f"done   {label} (by another process)", flush=True)
        elif event.kind == "wait":
            print(f"wait   {label}: another process runs it", flush=True)
        elif event.kind == "cleanup":
            print(f"clean  {label}: deleted {node.artifact}", flush=True)

    def _output(self, event: Any) -> None:
        if not event.log:
            return
        from tastypy.flow.jobs import END_MARK, TRY_MARK

        try:
            with open(event.log, "rb") as stream:
                stream.seek(event.offset)
                lines = stream.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return
        if lines and lines[0].startswith(TRY_MARK):
            lines = lines[1:]
        if lines and lines[-1].startswith(END_MARK):
            lines = lines[:-1]
        if len(lines) > SHOWN_LINES:
            print(f"    ... {len(lines) - SHOWN_LINES} lines more in {event.log}")
            lines = lines[-SHOWN_LINES:]
        for line in lines:
            print(f"    {line}")


def _values(params: dict | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (params or {}).items())


def _label(node: Any) -> str:
    values = _values(node.params)
    return f"{node.task.qid} ({values})" if values else node.task.qid


def _dry_run(flow: Any, target: str, values: list, rerun: bool) -> int:
    for run in flow.pending(target, values, rerun=rerun):
        nodes = run["nodes"]
        print(
            f"{_values(run['params']) or 'the flow'}: would run {len(run['to_run'])}, "
            f"{len(run['found'])} found done"
        )
        for key in run["to_run"]:
            node = nodes[key]
            print(f"  run    {_label(node)}" + (f": {node.command}" if node.command else ""))
        for key in run["found"]:
            node = nodes[key]
            print(f"  found  {_label(node)}" + (f": {node.artifact}" if node.artifact else ""))
    return 0


def _show_graph(flow: Any, target: str) -> int:
    from tastypy.flow.graph import check_graph, find_task

    tasks = flow.tasks
    check_graph(tasks)
    todo, seen = [find_task(tasks, target)], set()
    while todo:
        qid = todo.pop(0)
        if qid in seen:
            continue
        seen.add(qid)
        deps = tasks[qid].dependencies
        print(f"{qid} <- {', '.join(deps)}" if deps else f"{qid} (no dependencies)")
        todo.extend(deps)
    return 0
