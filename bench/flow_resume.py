"""A flow of 1,000 tasks over 10 dates, killed with SIGKILL mid-run and resumed.

Run: ``python -m bench.flow_resume [--tasks 1000] [--dates 10] [--jobs 2]
[--kill-after 10] [--dir DIR]``.

The flow (written to ``DIR/big.json``): task ``t0000`` makes the output
directory, once for every date (it mentions no parameter); each other task
depends on up to three earlier ones, writes ``out/<date>/tNNNN`` (its
artifact), except one in ten, which has no artifact and only checks a file
(its done mark is in the tracker); ``all`` gathers the tasks nothing else
depends on. Every command also appends its name to ``runs.log``, so the
script can count how often each ran.

The script runs ``tastypy flow big.all big.json --eval-param
date='days_range(-DATES,0)' --jobs N`` in a child process, sends it SIGKILL
after ``--kill-after`` seconds, then runs the same command again, and a
third time (which must find everything done), and prints the timings and
what ran twice: only a task running at the instant of the kill may. Last,
the raw limit: the same commands run one after another by
``subprocess.run``, with no state at all.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time


def write_flow(folder: str, tasks: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    specs = [
        {"id": "t0000", "command": "mkdir -p out && echo t0000 >> runs.log", "artifact": "out"}
    ]
    used: set[str] = set()
    for i in range(1, tasks):
        name = f"t{i:04d}"
        deps = sorted(
            {f"t{rng.randrange(max(0, i - 50), i):04d}" for _ in range(rng.randint(1, 3))}
        )
        used.update(deps)
        log = f"echo {name} ${{date}} >> runs.log"
        if i % 10 == 0:  # no artifact: its done mark is the tracker's
            command = f"test -d out && {log}"
            specs.append({"id": name, "command": command, "dependencies": deps})
        else:
            artifact = f"out/${{date}}/{name}"
            command = f"mkdir -p out/${{date}} && {log} && echo {name} > {artifact}"
            specs.append(
                {"id": name, "command": command, "artifact": artifact, "dependencies": deps}
            )
    leaves = [s["id"] for s in specs if s["id"] not in used]
    specs.append({"id": "all", "dependencies": leaves})
    path = os.path.join(folder, "big.json")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump({"version": "1.0", "namespace": "big", "tasks": specs}, stream, indent=1)
    return path


def run(folder: str, args: argparse.Namespace, kill_after: float | None) -> tuple[float, int, str]:
    command = [
        sys.executable,
        "-m",
        "tastypy",
        "flow",
        "big.all",
        "big.json",
        "--quiet",
        "--eval-param",
        f"date=days_range(-{args.dates},0)",
        "--jobs",
        str(args.jobs),
    ]
    started = time.monotonic()
    proc = subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    if kill_after is not None:
        try:
            proc.wait(kill_after)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0].decode()
    return (
        time.monotonic() - started,
        proc.returncode,
        out.strip().splitlines()[-1] if out.strip() else "",
    )


def raw(folder: str, tasks: int, dates: int) -> float:
    """The raw limit: the same commands run one after another by
    ``subprocess.run(shell=True)`` in a topological order, with no state."""
    with open(os.path.join(folder, "big.json"), encoding="utf-8") as stream:
        specs = json.load(stream)["tasks"]
    os.makedirs(os.path.join(folder, "raw"), exist_ok=True)
    started = time.monotonic()
    for i, date in enumerate(f"d{n:02d}" for n in range(dates)):
        for spec in specs:  # written in a topological order
            if "command" in spec and (i == 0 or "${date}" in spec["command"]):
                command = spec["command"].replace("${date}", date)
                subprocess.run(command, shell=True, cwd=os.path.join(folder, "raw"), check=True)
    return time.monotonic() - started


def runs(folder: str) -> collections.Counter:
    try:
        with open(os.path.join(folder, "runs.log"), encoding="utf-8") as stream:
            return collections.Counter(line.strip() for line in stream if line.strip())
    except FileNotFoundError:
        return collections.Counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--dates", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=10.0)
    parser.add_argument("--dir", help="work here (default: a new temporary directory)")
    args = parser.parse_args()
    folder = args.dir or tempfile.mkdtemp(prefix="flow-resume-")
    os.makedirs(folder, exist_ok=True)
    write_flow(folder, args.tasks)
    total = (args.tasks - 1) * args.dates + 1 + args.dates  # t0000 once, `all` per date
    print(f"flow: {args.tasks} tasks x {args.dates} dates = {total} task runs, ", end="")
    print(f"--jobs {args.jobs}, in {folder}")
    print("| run | seconds | exit | commands run (all so far) | last line |")
    print("| --- | ---: | ---: | ---: | --- |")
    for label, kill in (("first, SIGKILL", args.kill_after), ("resumed", None), ("again", None)):
        seconds, status, last = run(folder, args, kill)
        ran = runs(folder)
        print(f"| {label} | {seconds:.1f} | {status} | {sum(ran.values())} | {last} |")
    seconds = raw(folder, args.tasks, args.dates)
    print(f"| raw limit: the same commands, one after another, no state | {seconds:.1f} | | | |")
    twice = {name: n for name, n in runs(folder).items() if n > 1}
    print(f"commands that ran twice: {len(twice)} {sorted(twice)[:10]}")
    print(f"commands that ran: {len(runs(folder))} of {total - args.dates} with a command")


if __name__ == "__main__":
    main()
