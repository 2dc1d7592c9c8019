"""The ``tastypy`` command (also ``python -m tastypy``).

Each subcommand lives in the module named for what it does and is imported
only when asked for, so ``tastypy --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tastypy",
        description="Inspect, repair and exercise tastypy PODs and trackers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a resumable job over 20,000 simulated tasks")
    demo.add_argument("path", nargs="?", default="tastypy-demo.tracker")
    demo.add_argument("--tasks", type=int, default=20_000)
    demo.add_argument("--no-progress", action="store_true")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "demo":
        from tastypy.demo import run_demo

        return run_demo(args.path, tasks=args.tasks, progress=not args.no_progress)
    return 2  # pragma: no cover - argparse refuses unknown commands


if __name__ == "__main__":
    sys.exit(main())
