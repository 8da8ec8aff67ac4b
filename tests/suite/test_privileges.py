"""Privileges: without root a clear message; with ci/rootless.sh the suite runs as an unprivileged user.

The tests drop to the unprivileged user `nobody` (setpriv). This machine's
Python may live under /root, which nobody cannot enter: in a private mount
namespace of the test (nothing visible outside it) /root is replaced by a
tmpfs that holds only a bind mount of the interpreter's tree.
"""

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .helpers import PYTEST, ROOT

NOBODY = 65534


@pytest.fixture
def world_dir():
    """A temporary folder nobody can reach (pytest's tmp_path is under a root-only folder), holding a
    readable copy of the checkout: the checkout itself may sit where nobody cannot enter (under /root,
    or in a 0700 temporary folder a CI system made)."""
    path = Path(tempfile.mkdtemp(prefix="tcc-nobody-", dir="/tmp"))
    os.chmod(path, 0o755)
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (path / "suite" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, path / "suite" / name)
    subprocess.run(["chmod", "-R", "a+rX", str(path / "suite")], check=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_nobody(tmp_path, *command, timeout=300):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    prefix = os.path.realpath(sys.prefix)
    lines = ["set -e"]
    if prefix.startswith("/root/"):
        stash = tmp_path / "python"
        stash.mkdir()
        top = "/root/" + prefix.split("/")[2]  # e.g. /root/.pyenv
        lines += [
            f"mount --bind {top} {stash}",
            "mount -t tmpfs -o mode=755 tcc-root /root",
            f"mkdir -p {top}",
            f"mount --bind {stash} {top}",
        ]
    path = f"{shlex.quote(os.path.dirname(sys.executable))}:/usr/sbin:/usr/bin:/bin"
    env = f"env PATH={path} HOME={home} PYTHONDONTWRITEBYTECODE=1"
    lines.append(
        f"exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups --inh-caps=-all --bounding-set=-all "
        f"{env} {' '.join(shlex.quote(c) for c in command)}"
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", "\n".join(lines)],
        cwd=tmp_path / "suite",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def userns_allowed() -> bool:
    probe = subprocess.run(
        [
            "setpriv",
            "--reuid",
            str(NOBODY),
            "--regid",
            str(NOBODY),
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ],
        capture_output=True,
    )
    return probe.returncode == 0


def test_without_root_a_clear_message(world_dir):
    proc = as_nobody(
        world_dir,
        *PYTEST,
        "tests/cases/test_refused.py",
        "--targets",
        "python",
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4, out
    assert "needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN missing for uid 65534)" in out
    assert "Traceback" not in out


def test_rootless_mode_runs_the_cases_unprivileged(world_dir):
    tmp_path = world_dir
    if not userns_allowed():
        pytest.skip("this machine does not allow unprivileged user namespaces")
    proc = as_nobody(
        tmp_path,
        "bash",
        "ci/rootless.sh",
        *PYTEST,
        "tests/cases/test_refused.py",
        "tests/cases/test_time_wait.py",
        "--targets",
        "python",
        "--pcap-dir",
        str(tmp_path / "home" / "pcaps"),
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "6 passed" in out
