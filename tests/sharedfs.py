"""Shared filesystems on one machine: two client mounts of one directory
stand for two hosts. Used by the tests and by ``bench/shared_fs.py``.

Rigs, by name (:data:`RIGS`):

``glusterfs``
    A single-brick GlusterFS volume served by a ``glusterd`` on this machine
    and mounted twice with the stock options, so each mount has GlusterFS's
    caches and the kernel's FUSE attribute cache (one second): a client may
    answer ``fstat`` with a size another client has since appended past.
``bindfs-defaults``
    ``bindfs SRC MNT`` twice on one directory, with bindfs's default
    options: the same FUSE attribute and name caches.
``bindfs-coherent``
    ``bindfs`` with the FUSE caches off (``attr_timeout=0`` ...), which is
    what NFS's close-to-open consistency gives (``tests/test_two_hosts.py``).
``local``
    One local directory, seen by both "hosts" under the same path.

Through two mounts a ``flock`` taken through one is not seen through the
other, as between two NFS clients; exclusive creation of a name does reach
through both. Mounting needs root (or ``fusermount`` for bindfs); a rig that
cannot be set up raises :class:`RigError` saying what to install or do, and
the tests fail with it rather than skip.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Final, Iterator

from tastypy.storage import fsdetect

#: FUSE's caches off: what NFS's close-to-open consistency gives.
NO_CACHE: Final = "attr_timeout=0,entry_timeout=0,negative_timeout=0"
#: The address the GlusterFS brick and mounts use. glusterd refuses
#: "localhost" and 127.0.0.1 for a brick, but takes any other loopback
#: address as this machine.
GLUSTER_HOST: Final = "127.0.0.2"
#: Volumes this module creates are named ``tastypy_<pid>_<random>``: the pid
#: of the process that made it, so leftovers of a dead run can be told from
#: the volumes of a run still going.
_VOLUME_NAME: Final = re.compile(r"^tastypy_(\d+)_[0-9a-f]+$")
_GLUSTER_TIMEOUT: Final = 120.0


class RigError(Exception):
    """A shared-filesystem rig cannot be set up; the message says why and what to do."""


@dataclass(frozen=True)
class Rig:
    """One directory as two hosts see it: ``mounts[0]`` and ``mounts[1]``."""

    name: str
    mounts: tuple[Path, Path]
    #: The directory the mounts show, where tests may look at it directly
    #: (None for GlusterFS: its brick belongs to the server).
    source: Path | None = None

    def subdir(self, name: str) -> tuple[Path, Path]:
        """A new directory ``name`` in the rig, as (host a's path, host b's path)."""
        (self.mounts[0] / name).mkdir()
        return self.mounts[0] / name, self.mounts[1] / name


# -- mounts --------------------------------------------------------------------


def mounted(point: str | os.PathLike[str]) -> bool:
    """Whether something is mounted exactly at ``point``."""
    mount = fsdetect.find_mount(os.fspath(point))
    return mount is not None and mount.point == os.path.realpath(point)


def unmount(point: str | os.PathLike[str]) -> None:
    """Unmount ``point`` (FUSE or not), retrying while it is busy; lazily at last."""
    point = os.fspath(point)
    commands = [["fusermount3", "-u", point], ["fusermount", "-u", point], ["umount", point]]
    for _ in range(50):
        if not mounted(point):
            return
        for command in commands:
            if shutil.which(command[0]):
                result = subprocess.run(command, capture_output=True, timeout=60)
                if result.returncode == 0:
                    break
        time.sleep(0.1)
    if mounted(point) and shutil.which("umount"):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)


def _require(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise RigError(
            f"{tool} is not installed, so two hosts cannot be simulated. Install it "
            f"(apt-get install {package}; .ci/run does this when it runs as root)."
        )


def _mount(command: list[str], point: Path, what: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0 or not mounted(point):
        raise RigError(
            f"cannot mount {what} on {point} (`{' '.join(command)}` exited with "
            f"{result.returncode}): {result.stderr.strip() or 'not in /proc/mounts'}. "
            "Mounting needs /dev/fuse and the right to mount (root)."
        )


def mount_bindfs(src: Path, point: Path, options: str | None = None) -> None:
    """``bindfs [-o options] src point``; raises :class:`RigError` if it fails."""
    _require("bindfs", "bindfs fuse3")
    command = ["bindfs"] + (["-o", options] if options else [])
    if os.geteuid() != 0:
        command.append("--no-allow-other")
    _mount([*command, str(src), str(point)], point, f"{src} with bindfs")


@contextlib.contextmanager
def _mounts(points: list[Path], mount: Callable[[Path], None]) -> Iterator[None]:
    done: list[Path] = []
    try:
        for point in points:
            mount(point)
            done.append(point)
        yield
    finally:
        for point in done:
            unmount(point)


# -- rigs ----------------------------------------------------------------------


@contextlib.contextmanager
def bindfs_rig(base: Path, *, coherent: bool) -> Iterator[Rig]:
    """Two bindfs mounts of ``base/src``: FUSE caches off if ``coherent``, else defaults."""
    src = base / "src"
    src.mkdir(parents=True)
    points = [base / "host-a", base / "host-b"]
    options = NO_CACHE if coherent else None
    with _mounts(points, lambda point: mount_bindfs(src, point, options)):
        name = "bindfs-coherent" if coherent else "bindfs-defaults"
        yield Rig(name, (points[0], points[1]), src)


@contextlib.contextmanager
def local_rig(base: Path) -> Iterator[Rig]:
    """One local directory, the same path for both "hosts"."""
    src = base / "src"
    src.mkdir(parents=True)
    yield Rig("local", (src, src), src)


@contextlib.contextmanager
def glusterfs_rig(base: Path) -> Iterator[Rig]:
    """A new GlusterFS volume with its brick in ``base``, mounted twice with
    the stock options. Starts ``glusterd`` unless one is running (and stops
    only one it started)."""
    for tool, package in (("glusterd", "glusterfs-server"), ("gluster", "glusterfs-server")):
        _require(tool, package)
    _require("mount.glusterfs", "glusterfs-client")
    daemon = Glusterd()
    try:
        daemon.start()
        _remove_dead_volumes()
        volume = f"tastypy_{os.getpid()}_{secrets.token_hex(4)}"
        brick = base / "brick"
        brick.mkdir(parents=True)
        points = [base / "host-a", base / "host-b"]
        with _volume(volume, brick):
            source = f"{GLUSTER_HOST}:/{volume}"
            command = ["mount", "-t", "glusterfs", source]
            with _mounts(points, lambda p: _mount([*command, str(p)], p, source)):
                yield Rig("glusterfs", (points[0], points[1]))
    finally:
        daemon.stop()
        shutil.rmtree(base / "brick", ignore_errors=True)


def _gluster(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = ["gluster", "--mode=script", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=_GLUSTER_TIMEOUT)
    if check and result.returncode != 0:
        raise RigError(
            f"`{' '.join(command)}` exited with {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()} (glusterd's log: "
            "/var/log/glusterfs/glusterd.log)"
        )
    return result


@contextlib.contextmanager
def _volume(name: str, brick: Path) -> Iterator[None]:
    # force: the brick is on the root filesystem, which gluster otherwise refuses.
    _gluster("volume", "create", name, f"{GLUSTER_HOST}:{brick}", "force")
    try:
        _gluster("volume", "start", name)
        yield
    finally:
        _drop_volume(name)


def _drop_volume(name: str) -> None:
    _gluster("volume", "stop", name, "force", check=False)
    _gluster("volume", "delete", name, check=False)


def _remove_dead_volumes() -> None:
    """Remove volumes this module made in runs whose process is gone (killed
    before its clean-up), so glusterd does not keep trying to serve them."""
    for name in _volumes():
        match = _VOLUME_NAME.match(name)
        if match is None or _alive(int(match.group(1))):
            continue
        for mount in _mounts_of(f"{GLUSTER_HOST}:/{name}"):
            subprocess.run(["umount", "-l", mount], capture_output=True, timeout=60)
        _drop_volume(name)


def _volumes() -> list[str]:
    """The names of the volumes glusterd knows ("No volumes present" says none)."""
    result = _gluster("volume", "list", check=False)
    if result.returncode != 0 or result.stdout.startswith("No volumes"):
        return []
    return result.stdout.split()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mounts_of(source: str) -> list[str]:
    with open("/proc/self/mounts", encoding="utf-8") as f:
        return [fields[1] for fields in (line.split() for line in f) if fields[0] == source]


class Glusterd:
    """The GlusterFS management daemon: one per machine (it owns port 24007
    and /var/lib/glusterd), so a running one is used, never replaced."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    @staticmethod
    def answers() -> bool:
        """Whether a glusterd answers the ``gluster`` command."""
        return _gluster("volume", "list", check=False).returncode == 0

    def start(self) -> None:
        if self.answers():
            return
        # -N: stay in the foreground, our child, so we know its pid and can
        # wait for it; its own session, so a Ctrl-C of the tests does not
        # stop it before the volume is taken down.
        self._proc = subprocess.Popen(
            ["glusterd", "-N"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + _GLUSTER_TIMEOUT
        while not self.answers():
            if time.monotonic() > deadline:
                self.stop()
                raise RigError(
                    f"glusterd did not answer within {_GLUSTER_TIMEOUT:.0f} s; see "
                    "/var/log/glusterfs/glusterd.log"
                )
            time.sleep(0.1)
        if self._proc.poll() is not None:
            # Another run started one at the same moment: ours gave way.
            self._proc = None

    def stop(self) -> None:
        """Stop the glusterd this object started, unless others' volumes remain."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None and _volumes():
            return  # another run's volumes: it keeps serving them
        _wait_for_children(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _wait_for_children(pid: int, timeout: float = 10.0) -> None:
    # glusterd runs hook scripts after a volume is deleted, which call back
    # into it: stopping it first leaves them failing, and unreaped.
    children = f"/proc/{pid}/task/{pid}/children"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(children, encoding="ascii") as f:
                if not f.read().split():
                    return
        except OSError:
            return
        time.sleep(0.05)


#: Each rig by name: ``RIGS[name](base)`` is a context manager giving a :class:`Rig`.
RIGS: Final[dict[str, Callable[[Path], ContextManager[Rig]]]] = {
    "glusterfs": glusterfs_rig,
    "bindfs-defaults": lambda base: bindfs_rig(base, coherent=False),
    "bindfs-coherent": lambda base: bindfs_rig(base, coherent=True),
    "local": local_rig,
}
