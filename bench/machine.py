"""What the benchmark ran on: CPU, memory, filesystem, Python, library versions."""

from __future__ import annotations

import dbm
import os
import platform
import shelve
import subprocess
import sys
import tempfile
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def filesystem(path: str) -> str:
    """The type of the filesystem holding ``path`` (from /proc/mounts)."""
    path = os.path.realpath(path)
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount, kind = parts[1], parts[2]
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                    best
                ):
                    best, fstype = mount, kind
    except OSError:
        pass
    return fstype


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _shelve_backend() -> str:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "probe")
        with shelve.open(path) as s:
            s["k"] = 1
        return dbm.whichdb(path) or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "tastypy"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        ).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes in tastypy/)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe(scratch: str) -> dict:
    import tastypy

    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "filesystem": filesystem(scratch),
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "tastypy": f"{tastypy.__version__}, commit {_git_commit()}",
        "orjson": _version("orjson"),
        "filelock": _version("filelock"),
        "diskcache": _version("diskcache"),
        "sqlitedict": _version("sqlitedict"),
        "sqlite": __import__("sqlite3").sqlite_version,
        "shelve_backend": _shelve_backend(),
        "load_average_at_start": load,
    }
