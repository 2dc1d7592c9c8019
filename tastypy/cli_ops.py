"""``tastypy stats|failed|leases|release|retry|watch PATH`` and ``tastypy
import-legacy OLD NEW``: seeing and steering a job from the shell.

Each prints a human table by default and one JSON document with
``--json``. They open the tracker as any process does (its stored
``max_tries`` and lease apply), so they work while the job's workers run,
on this host or others; ``release`` and ``retry`` change records under the
tracker's lock, as a worker would. See ``docs/operations.md``.

This module is a command, so it prints; the library itself never does.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Any, Final

#: The subcommands this module runs.
COMMANDS: Final = ("stats", "failed", "leases", "release", "retry", "watch", "import-legacy")

#: Rows a table shows of a long list (``--json`` has them all).
_ROWS: Final = 50


def add_commands(sub: Any) -> None:
    """Add this module's subcommands to the ``tastypy`` parser."""
    helps = {
        "stats": "where a tracker's job stands: counts, leases by holder, rate, ETA",
        "failed": "failed tasks, and tasks whose last attempt raised, with the last error",
        "leases": "the leases now: key, holder, seconds left",
        "release": "end leases now, keeping the tries (to recover the tasks of a dead host)",
        "retry": "give tasks their tries back, so that they run again",
        "watch": "a live progress bar of a running job, until it is done",
    }
    made = {}
    for name, text in helps.items():
        made[name] = command = sub.add_parser(name, help=text)
        command.add_argument("path", help="the tracker's directory")
        _common_options(command)
    made["stats"].add_argument(
        "--exact",
        action="store_true",
        help="(a tracker in parts) count again the parts written since their summary",
    )
    which = made["release"].add_mutually_exclusive_group(required=True)
    which.add_argument("--holder", metavar="HOST[:PID]", help="the leases of that holder")
    which.add_argument("--expired", action="store_true", help="the leases that ran out")
    which.add_argument("--all", action="store_true", help="every lease (live workers' too)")
    retry = made["retry"]
    retry.add_argument("keys", nargs="*", metavar="KEY", help="the tasks (as tastypy shows them)")
    retry.add_argument("--failed", action="store_true", help="every failed task")
    watch = made["watch"]
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    watch.add_argument("--plain", action="store_true", help="a line per look, not a tqdm bar")
    legacy = sub.add_parser(
        "import-legacy", help="copy a POD or tracker of tastypy 0.0.3 into a new one"
    )
    legacy.add_argument("old", help="the 0.0.3 directory (only read)")
    legacy.add_argument("new", help="where the new POD or tracker goes (must not exist)")
    legacy.add_argument(
        "--kind",
        choices=("pod", "tracker"),
        help="what to make (default: a tracker if every value is a task record)",
    )
    legacy.add_argument("--json", action="store_true", help="print one JSON document")


def _common_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--json", action="store_true", help="print one JSON document")
    command.add_argument(
        "--lock",
        choices=("auto", "posix", "soft"),
        default="auto",
        help="the lock mode the job's workers use (soft on NFS and the like)",
    )


def main(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; the exit status."""
    from tastypy.errors import TastypyError

    try:
        if args.command == "import-legacy":
            return _import_legacy(args)
        if args.command == "retry" and bool(args.keys) == bool(args.failed):
            raise _Usage("give either --failed or the keys of the tasks to retry, not both")
        if args.command == "watch":
            from tastypy.watch import watch

            if not args.interval > 0:
                raise _Usage(f"--interval must be a number of seconds > 0, got {args.interval}")
            return watch(_open(args), args.interval, plain=args.plain, as_json=args.json)
        tracker = _open(args)
        try:
            return _HANDLERS[args.command](tracker, args)
        finally:
            tracker.close()
    except BrokenPipeError:
        # The reader went away (``tastypy failed PATH | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except _Usage as exc:
        print(f"tastypy {args.command}: {exc}", file=sys.stderr)
        return 2
    except (TastypyError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"tastypy {args.command}: {message}", file=sys.stderr)
        return 1


class _Usage(Exception):
    """A command line that makes no sense: exit status 2, as argparse's."""


def _open(args: argparse.Namespace) -> Any:
    """The tracker at ``args.path``; never one made on the spot."""
    from tastypy.errors import NotAPODError
    from tastypy.storage import layout
    from tastypy.tracker import ProgressTracker

    path = args.path
    if not os.path.isfile(os.path.join(path, layout.MANIFEST)):
        what = "does not exist" if not os.path.exists(path) else "has no manifest.json"
        raise NotAPODError(
            f"{path} is not a tastypy tracker: it {what}. Give the directory the job's "
            "Tracker(path) opens."
        )
    return ProgressTracker(path, lock=args.lock)


# -- the commands ------------------------------------------------------------------------


def _stats(tracker: Any, args: argparse.Namespace) -> int:
    parted = hasattr(tracker, "parts")
    stats = tracker.stats(exact=args.exact) if parted else tracker.stats()
    document = {
        "path": tracker.path,
        "max_tries": tracker.max_tries,
        "lease": tracker.lease,
        "redo_after": getattr(tracker, "redo_after", 0.0),
    }
    document.update(stats)
    if parted:
        document["parts"] = tracker.parts
    if args.json:
        return _print_json(document)
    print(_stats_table(document))
    return 0


def _stats_table(s: dict) -> str:
    total = s["total"]
    limit = f"max_tries {s['max_tries']}" if s["max_tries"] else "no limit of tries"
    redo = f", redo after {s['redo_after']:g} s" if s.get("redo_after") else ""
    lines = [f"{s['path']}  ({limit}, lease {s['lease']:g} s{redo})"]

    def row(name: str, count: int, note: str = "") -> None:
        share = f"{100 * count / total:5.1f} %" if total else ""
        lines.append(f"  {name:<12}{count:>12,}  {share:>7}  {note}".rstrip())

    row("total", total)
    row("done", s["done"])
    if s.get("redo_after"):
        row("due again", s.get("due", 0), "done, and done longer than redo_after ago")
    row("failed", s["failed"], "tried max_tries times without success")
    row("aborted", s["aborted"])
    row("in progress", s["in_progress"], "attempts started, not ended")
    row("todo", s["todo"])
    holders = s.get("leased_by") or {}
    row("leased", s["leased"], f"by {len(holders)} holder(s)" if holders else "")
    row("expired", s["expired"], "leases that ran out (dead or stopped holders)")
    if s.get("rate"):
        lines.append(f"  {'rate':<12}{s['rate']:>12,.1f}  tasks/s over the last 10 minutes")
        left = s["todo"] + s["in_progress"] + s.get("due", 0)
        eta = str(datetime.timedelta(seconds=round(s["eta"]))) if left else "nothing left to run"
        lines.append(f"  {'ETA':<12}{eta:>12}")
    else:
        lines.append(f"  {'rate':<12}{'?':>12}  no task was done in the last 10 minutes")
    lines += _age_rows(s)
    if holders:
        lines.append("leased by")
        ranked = sorted(holders.items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"  {holder:<40}{count:>8,}" for holder, count in ranked[:_ROWS]]
        if len(ranked) > _ROWS:
            lines.append(f"  ... and {len(ranked) - _ROWS} more holders (--json lists all)")
    return "\n".join(lines)


def _age_rows(s: dict) -> list:
    """The update ages of a stats document (doloop's), as table lines."""
    lines = []
    if s.get("last_done"):
        lines.append(f"  {'last done':<12}{s['last_done']:>30}")
    if s.get("oldest_done"):
        lines.append(f"  {'oldest done':<12}{s['oldest_done']:>30}  least recently updated")
        lines.append(f"  {'newest done':<12}{s['newest_done']:>30}")
        for name, span in (("not_updated_1d", "a day"), ("not_updated_7d", "a week")):
            lines.append(f"  {'not updated':<12}{s.get(name, 0):>12,}  for {span} or more")
    return lines


def _failed(tracker: Any, args: argparse.Namespace) -> int:
    failed = list(tracker.failed_keys())
    is_failed = set(failed)
    errors = tracker.errors()
    rows = []
    for key in failed + [k for k in errors if k not in is_failed]:
        error = errors.get(key)
        rows.append(
            {
                "key": key,
                "failed": key in is_failed,
                "tries": tracker.tries(key),
                "error": None if error is None else f"{error.get('type')}: {error.get('message')}",
                "time": None if error is None else error.get("time"),
            }
        )
    if args.json:
        return _print_json(rows)
    if not rows:
        print(f"{tracker.path}: no failed task, and no task whose last attempt raised")
        return 0
    print(f"{'key':<24} {'tries':>5}  {'failed':<6}  last error")
    for row in rows[:_ROWS]:
        error = row["error"] or "(none recorded: a try_it loop, or a killed worker)"
        first = error.splitlines()[0] if error else ""
        flag = "yes" if row["failed"] else "no"
        print(f"{_show(row['key']):<24} {row['tries']:>5}  {flag:<6}  {first[:100]}")
    _more(len(rows))
    return 0


def _leases(tracker: Any, args: argparse.Namespace) -> int:
    from tastypy._identity import holder_gone

    info = tracker.lease_info()
    rows = [
        {
            "key": key,
            "holder": lease.holder,
            "expires_in": lease.lease_left,
            # A holder of this host whose process is gone: its lease is void now.
            "holder_gone": holder_gone(lease.holder),
            "tries": lease.tries,
            "done": lease.done,
        }
        for key, lease in info.items()
    ]
    rows.sort(key=lambda r: (r["expires_in"] is None, r["expires_in"]))
    if args.json:
        return _print_json(rows)
    if not rows:
        print(f"{tracker.path}: no lease")
        return 0
    print(f"{'key':<24} {'holder':<40} {'expires_in':>10}")
    for row in rows[:_ROWS]:
        left = "" if row["expires_in"] is None else f"{row['expires_in']:.1f}"
        holder = row["holder"] or "(bump)"
        if row["holder_gone"]:
            holder += " (gone)"
        print(f"{_show(row['key']):<24} {holder:<40} {left:>10}")
    _more(len(rows))
    return 0


def _release(tracker: Any, args: argparse.Namespace) -> int:
    ended = tracker.end_leases(args.holder, expired=args.expired)
    if args.json:
        return _print_json({"released": ended})
    which = f"of {args.holder}" if args.holder else "that ran out" if args.expired else "(all)"
    print(f"ended {len(ended):,} lease(s) {which}; their tries are kept")
    if ended:
        print("  " + ", ".join(_show(k) for k in ended[:_ROWS]))
        _more(len(ended))
    return 0


def _retry(tracker: Any, args: argparse.Namespace) -> int:
    keys = list(tracker.failed_keys()) if args.failed else [_key(tracker, k) for k in args.keys]
    given = tracker.retry(keys)
    left = [k for k in keys if k not in set(given)]
    if args.json:
        return _print_json({"retried": given, "left_alone": left})
    print(f"gave their tries back to {len(given):,} task(s): they run again")
    if given:
        print("  " + ", ".join(_show(k) for k in given[:_ROWS]))
        _more(len(given))
    if left:
        print(
            f"left alone {len(left):,} task(s) (done, aborted, never tried, or held by a "
            "live worker now): " + ", ".join(_show(k) for k in left[:_ROWS])
        )
    return 0


def _import_legacy(args: argparse.Namespace) -> int:
    from tastypy.legacy import import_legacy
    from tastypy.pod import POD
    from tastypy.tracker import ProgressTracker

    cls = {"pod": POD, "tracker": ProgressTracker, None: None}[args.kind]
    count = import_legacy(args.old, args.new, cls=cls)
    from tastypy.storage import layout

    kind = (layout.read_manifest(args.new) or {}).get("kind", "pod")
    if args.json:
        return _print_json({"old": args.old, "new": args.new, "kind": kind, "items": count})
    print(f"imported {count:,} items from {args.old} into the new {kind} {args.new}")
    return 0


_HANDLERS: Final = {
    "stats": _stats,
    "failed": _failed,
    "leases": _leases,
    "release": _release,
    "retry": _retry,
}


# -- helpers -------------------------------------------------------------------------------


def _key(tracker: Any, text: str) -> Any:
    """A key given on the command line: the string itself if it is a key;
    else its JSON reading (``3``, ``["a", 1]`` for a tuple key), as
    ``tastypy`` prints keys that are not strings."""
    from tastypy.codec import JSONDecodeError, key_from_json, loads

    if text in tracker:
        return text
    try:
        key = key_from_json(loads(text))
    except JSONDecodeError:
        key = None
    if key is not None and type(key) is not str and key in tracker:
        return key
    raise KeyError(f"{text} is not a task of {tracker.path}")


def _show(key: Any) -> str:
    """A key as tables show it: a string as it is, anything else as JSON."""
    if type(key) is str:
        return key
    from tastypy.codec import dumps

    return dumps(key).decode()


def _print_json(document: Any) -> int:
    import orjson

    option = orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE
    sys.stdout.write(orjson.dumps(document, option=option).decode())
    return 0


def _more(count: int) -> None:
    if count > _ROWS:
        print(f"... and {count - _ROWS:,} more (--json lists all)")
