"""The ``tastypy`` command (also ``python -m tastypy``).

Each subcommand lives in the module named for what it does and is imported
only when asked for, so ``tastypy --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from tastypy import cli_ops


def _parser() -> argparse.ArgumentParser:
    """The parser of every subcommand, in the order ``tastypy --help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="tastypy",
        description="Inspect, repair and exercise tastypy PODs and trackers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_reliability(sub)
    cli_ops.add_commands(sub)
    _add_verify_fs(sub)

    from tastypy.flow.command import add_parser as add_flow_parser

    add_flow_parser(sub)
    return parser


def _add_demo(sub: Any) -> None:
    """``demo``: a resumable job over simulated tasks."""
    demo = sub.add_parser("demo", help="run a resumable job over 20,000 simulated tasks")
    demo.add_argument("path", nargs="?", default="tastypy-demo.tracker")
    demo.add_argument("--tasks", type=int, default=20_000)
    demo.add_argument("--no-progress", action="store_true")


def _add_reliability(sub: Any) -> None:
    """``check``, ``repair`` and ``compact``, each with ``--lock``."""
    check = sub.add_parser(
        "check",
        help="read every file of a POD (of each part of a parted tracker) and report problems",
    )
    check.add_argument("path")
    repair = sub.add_parser(
        "repair", help="salvage every readable record; damaged files are kept aside"
    )
    repair.add_argument("path")
    repair.add_argument("--kind", choices=("pod", "tracker"), default=None)
    compact = sub.add_parser("compact", help="fold the journal into a new snapshot now")
    compact.add_argument("path")
    compact.add_argument(
        "--storage",
        choices=["shared"],
        help="convert to the shared store (one file per commit), for a filesystem whose "
        "clients cache file sizes (GlusterFS, FUSE); run it while no job uses the POD",
    )
    for command in (check, repair, compact):
        command.add_argument(
            "--lock",
            choices=("auto", "posix", "soft"),
            default="auto",
            help="the lock mode the POD's writers use (soft on NFS and the like)",
        )


def _add_verify_fs(sub: Any) -> None:
    """``verify-fs``: whether locking works in a directory."""
    verify = sub.add_parser(
        "verify-fs",
        help="check that locking (exclusion and visibility) works in a directory",
        description="Run several processes contending for a lock in DIR and report whether "
        "exclusion and visibility held (exit status 0 if they did). See docs/locks.md.",
    )
    verify.add_argument("directory", help="where your PODs live (a work directory is made in it)")
    verify.add_argument(
        "--lock",
        choices=("auto", "posix", "soft", "both"),
        default="auto",
        help="the lock to check (default: the one lock='auto' picks there)",
    )
    verify.add_argument("--processes", type=int, default=4, help="processes on this host")
    verify.add_argument("--rounds", type=int, default=200, help="lock holds per process")
    verify.add_argument("--seconds", type=float, help="run for this long instead of --rounds")
    verify.add_argument("--session", help="a name shared by runs on several hosts at once")
    verify.add_argument("--keep", action="store_true", help="keep the work directory")


def _reliability(args: argparse.Namespace) -> int:
    """``check``, ``repair`` and ``compact``: exit status 0 when all is well, else 1."""
    from tastypy.errors import TastypyError
    from tastypy.storage.repair import check, compact, repair

    try:
        if args.command == "check":
            report = check(args.path, lock=args.lock)
            print(report)
            return 0 if report.ok else 1
        if args.command == "repair":
            print(repair(args.path, kind=args.kind, lock=args.lock))
        else:
            print(compact(args.path, lock=args.lock, storage=args.storage))
    except TastypyError as exc:
        print(f"tastypy {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from tastypy.demo import run_demo

        return run_demo(args.path, tasks=args.tasks, progress=not args.no_progress)
    if args.command in ("check", "repair", "compact"):
        return _reliability(args)
    if args.command in cli_ops.COMMANDS:
        return cli_ops.main(args)
    if args.command == "flow":
        from tastypy.flow.command import main as flow_main

        return flow_main(args)
    if args.command == "verify-fs":
        from tastypy.verify_fs import run

        return run(args)
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":
    sys.exit(main())
