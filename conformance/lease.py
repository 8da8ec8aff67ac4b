"""A run's lease on what it leaves outside its own process tree: its Docker containers.

A container's label cannot name its owner by PID: a run inside a PID namespace
(a CI job in a container that shares the engine's socket) or on another host
(DOCKER_HOST) sees other PIDs, and would take a live run's containers for a
dead one's. Instead each run holds a lease: an exclusive flock on a file of
its own under LEASE_DIR, for the whole run (the kernel drops it when the run's
process dies, however it dies). The lease folder carries a random *lockspace*
id, made once: a run can judge a container only when the container's
lockspace label is its own (it sees the same lock files); then the owner is
alive exactly while its lock is held. A container of another lockspace is left
alone: its owner cannot be judged from here.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import uuid

LEASE_DIR = "/run/tcp-conformance"
SPACE_FILE = "lockspace"


def _private_dir() -> str:
    try:
        os.mkdir(LEASE_DIR, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(LEASE_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise OSError(errno.EPERM, f"{LEASE_DIR} is not a private folder of uid {os.geteuid()}")
    return LEASE_DIR


def lockspace(create: bool = True) -> str | None:
    """This machine's (this /run's) lockspace id; None when there is none and create is False."""
    path = os.path.join(LEASE_DIR, SPACE_FILE)
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        if not create:
            return None
    _private_dir()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another run made it first
        return lockspace(create=False)
    with os.fdopen(fd, "w") as f:
        f.write(uuid.uuid4().hex + "\n")
    return lockspace(create=False)


class Lease:
    """Held from creation to release() (or the death of the process that made it)."""

    def __init__(self):
        self.space = lockspace()
        self.id = uuid.uuid4().hex
        self.path = os.path.join(_private_dir(), f"{self.id}.lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd >= 0:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = -1


def owner_alive(space: str, owner: str) -> bool | None:
    """Whether the run holding lease `owner` in lockspace `space` is alive: True, False, or None when
    it cannot be judged from here (another lockspace: another host, another /run, a malformed label)."""
    if not owner.isalnum() or space != lockspace(create=False):
        return None
    path = os.path.join(LEASE_DIR, f"{owner}.lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # released: the run ended
    try:  # shared: two sweeps probing at once do not take each other for the owner
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    try:
        os.unlink(path)  # the lock was free: its owner died without releasing it
    except FileNotFoundError:
        pass
    return False
