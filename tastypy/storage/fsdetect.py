"""Which filesystem holds a directory, and whether ``flock`` can be trusted there.

``flock`` excludes the processes of one kernel. On a network or cluster
filesystem the processes that share a POD may run under different kernels
(hosts), and whether their ``flock`` calls see each other depends on mount
options and server set-up that a client cannot inspect (NFS ``nolock`` or
``local_lock``, a lock daemon that is down, Lustre ``localflock``, BeeGFS
without global locks, two FUSE mounts of one directory). On those
filesystems the lock ``auto`` chooses is the lock file (``soft``), which only
needs exclusive creation of a file to work.
"""

from __future__ import annotations

import os
import re
from typing import Final, NamedTuple

__all__ = [
    "Mount",
    "caches_sizes",
    "choose_lock",
    "find_mount",
    "flock_is_trusted",
    "is_known_local",
]

_MOUNTS_FILE: Final = "/proc/self/mounts"

#: Filesystem types (as ``/proc/mounts`` spells them) on which processes of
#: several hosts may share a directory. Any FUSE filesystem is added by
#: prefix below: the kernel cannot know where a FUSE filesystem keeps its
#: files, and two FUSE mounts of one directory never see each other's flocks.
NETWORK_FILESYSTEMS: Final = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "coda",
        "9p",
        "ceph",
        "cephfs",
        "lustre",
        "lustre_lite",
        "gpfs",
        "mmfs",
        "beegfs",
        "fhgfs",
        "glusterfs",
        "ocfs2",
        "gfs2",
        "pvfs2",
        "orangefs",
        "panfs",
        "wekafs",
        "cvfs",
        "quobyte",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
        "prl_fs",
        "davfs",
        "sshfs",
    }
)

#: Filesystems known to be local disks or memory: a descriptor kept open
#: there sees every other process's writes at once, so the tracker's quick
#: append path (storage/tail.py) may keep its files open. Stricter than
#: ``flock_is_trusted``: an unknown type is not taken as local here.
LOCAL_FILESYSTEMS: Final = frozenset(
    {
        "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "ramfs", "zfs", "f2fs",
        "reiserfs", "jfs", "bcachefs", "nilfs2", "overlay", "hfs", "hfsplus", "apfs",
    }
)  # fmt: skip

_ESCAPE = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    """One line of ``/proc/mounts``."""

    point: str
    fstype: str
    source: str
    options: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in mount fields as
    # octal escapes (\040 ...), so a mount point with a space stays one field.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def _read_mounts(mounts_file: str) -> list[Mount]:
    try:
        with open(mounts_file, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError:
        return []
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            mounts.append(Mount(_unescape(fields[1]), fields[2], _unescape(fields[0]), fields[3]))
    return mounts


def find_mount(path: str | os.PathLike[str], mounts_file: str = _MOUNTS_FILE) -> Mount | None:
    """The mount that holds ``path``: the longest mount point that is a prefix
    of its real path (the last one listed wins, as it hides the ones below).

    ``None`` where the mount table cannot be read (not Linux).
    """
    real = os.path.realpath(os.fspath(path))
    best: Mount | None = None
    for mount in _read_mounts(mounts_file):
        point = mount.point
        if point == "/" or real == point or real.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best.point):
                best = mount
    return best


def flock_is_trusted(fstype: str) -> bool:
    """Whether ``flock`` on this filesystem type excludes every process that
    can open the directory (so it is local to one kernel)."""
    fstype = fstype.lower()
    if fstype.startswith("fuse") or fstype in NETWORK_FILESYSTEMS:
        return False
    # "nfs4.1", "cifs.x", "ceph.fuse" and the like.
    return fstype.split(".", 1)[0] not in NETWORK_FILESYSTEMS


def choose_lock(
    directory: str | os.PathLike[str], mounts_file: str = _MOUNTS_FILE
) -> tuple[str, str]:
    """The lock mode ``auto`` takes for ``directory`` and why, in words.

    >>> choose_lock("/")[0] in ("posix", "soft")
    True
    """
    mount = find_mount(directory, mounts_file)
    if mount is None:
        return "posix", "the mount table is unreadable here, so the filesystem is taken as local"
    where = f"{mount.fstype} filesystem mounted at {mount.point}"
    if flock_is_trusted(mount.fstype):
        return "posix", f"{where} is local to this host, so flock excludes every process"
    return "soft", (
        f"{where} can be shared by several hosts (or several FUSE mounts), where flock "
        "may not exclude them"
    )


def is_known_local(path: str | os.PathLike[str], mounts_file: str = _MOUNTS_FILE) -> bool:
    """Whether ``path`` is on a filesystem known to be local (not NFS, SMB,
    Lustre, FUSE...). Unknown (no mount table, e.g. macOS) counts as not local."""
    mount = find_mount(path, mounts_file)
    return mount is not None and mount.fstype in LOCAL_FILESYSTEMS


def caches_sizes(fstype: str) -> bool:
    """Whether clients of a filesystem of this type may show an old size of
    a file another client appended to, even right after opening it: every
    FUSE filesystem (its attribute cache keeps sizes for a second by
    default, and GlusterFS's md-cache as long). NFS revalidates sizes at
    each open (close-to-open consistency), which the local store relies on."""
    return fstype.startswith("fuse") or fstype == "glusterfs"
