"""Where a run writes (pcaps, results JSON, HTML): private folders, no symlink followed, checked up front.

The suite runs as root. A folder or file at a path another local user controls
could be swapped for a symlink, and root would then write into whatever it
points at. So every output path is checked before any namespace exists: its
parent must be a real directory that no other user can write (owned by us or
root, no group or world write bit), and an existing target must not be a
symlink. The default pcap folder is a fresh mkdtemp (mode 0700). Files are
created with O_NOFOLLOW, results through a private temporary file in the same
folder that is renamed into place (and removed if the write fails).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile


class OutputError(ValueError):
    """An output path the run must not or cannot write: says which and why."""


def _safe_dir(path: str, what: str) -> None:
    """path is a real directory only we (or root) can write."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise OutputError(f"{what}: folder {path} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{what}: {path} is a symbolic link; give the real folder")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{what}: {path} is not a folder")
    if st.st_uid not in (0, os.geteuid()):
        raise OutputError(
            f"{what}: folder {path} belongs to uid {st.st_uid}, who could swap what the run "
            f"writes there for a link; use a folder of your own"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise OutputError(
            f"{what}: other users can write in {path} (mode {stat.S_IMODE(st.st_mode):o}) and could "
            f"plant a link where the run writes; use a folder only you can write"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: cannot write in {path}")


def check_file(path: str, what: str) -> str:
    """An output file path, absolute: its folder is safe, and it is not a folder or a link."""
    path = os.path.abspath(path)
    if os.path.isdir(path) or path.endswith(os.sep):
        raise OutputError(f"{what}: {path} is a folder; give a file name")
    if os.path.islink(path):
        raise OutputError(f"{what}: {path} is a symbolic link; give a plain file name")
    _safe_dir(os.path.dirname(path), what)
    return path


def check_dir(path: str, what: str) -> str:
    """An output folder, absolute: it exists safely (private, ours) or its parent is safe to make it in."""
    path = os.path.abspath(path)
    if os.path.lexists(path):
        _safe_dir(path, what)
    else:
        _safe_dir(os.path.dirname(path), what)
    return path


def private_dir(prefix: str = "tcp-conformance-") -> str:
    """A fresh folder only we can enter (mode 0700, a name nobody could guess first)."""
    return tempfile.mkdtemp(prefix=prefix)


def make_dir(path: str) -> None:
    """Create the checked output folder (mode 0700) if it is not there yet."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        _safe_dir(path, "output folder")


def open_new(path: str):
    """A file for writing that is not a symlink (O_NOFOLLOW), mode 0600; truncated if it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")


def write_atomically(path: str, text: str) -> None:
    """Write text to path through a private temporary file in its folder, renamed into place.
    A failed write (disk full) leaves the old file and no temporary file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str, doc: dict) -> None:
    write_atomically(path, json.dumps(doc, indent=1) + "\n")
