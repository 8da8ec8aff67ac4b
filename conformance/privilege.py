"""Agents run with least privilege: no capabilities, no_new_privs, and a non-root uid where their files allow.

An agent only makes socket calls in its own network namespace; whatever a case
needs privileged (sysctls, routes, qdiscs, namespaces), the harness does. So
the agent is started through the harness's launcher (conformance/launch.c, the
argv prefix conformance.case.launcher gives) with every capability dropped
(the bounding set, the inheritable and ambient sets) and no_new_privs set, so
nothing it executes can gain one back. Without CAP_SYS_ADMIN it cannot enter
another namespace (setns) or mount; without CAP_NET_ADMIN it cannot change its
namespace's network.

Uid 0 without capabilities still owns root's files (and the host's sysctls
outside the network namespace, which uid 0 may write), so the agent also
drops to AGENT_UID (nobody, its group, no supplementary groups) when
everything its command line names is reachable by other users. Where it is
not (an interpreter under /root, say), it keeps uid 0 without capabilities,
and the harness records why: put the agent's files where other users can read
them for the full protection.
"""

from __future__ import annotations

import os
import shutil
import stat

AGENT_UID = 65534  # nobody


def _reachable(path: str, execute: bool) -> bool:
    """Whether a user other than the owner (and not in its group) can read (or execute) path."""
    path = os.path.realpath(path)
    try:
        st = os.stat(path)
    except OSError:
        return False
    need = stat.S_IXOTH if execute else stat.S_IROTH
    if stat.S_ISREG(st.st_mode) and not st.st_mode & need:
        return False
    parent = os.path.dirname(path)
    while True:
        try:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _mapped(uid: int) -> bool:
    """Whether uid exists in this process's user namespace (in a rootless run only root may be mapped)."""
    try:
        with open("/proc/self/uid_map") as f:
            for line in f:
                inside, _outside, count = map(int, line.split())
                if inside <= uid < inside + count:
                    return True
    except (OSError, ValueError):
        return True
    return False


def agent_uid(argv: list[str]) -> tuple[int, str]:
    """(uid, why) for an agent's command line: AGENT_UID when its program and every file it names are
    reachable by other users, else our own uid (no capabilities either way) with the first path that is not."""
    own = os.geteuid()
    if not _mapped(AGENT_UID):
        return own, f"uid {AGENT_UID} does not exist in this user namespace (a rootless run)"
    program = shutil.which(argv[0]) or argv[0]
    if not _reachable(program, execute=True):
        return own, f"{program} is not reachable for uid {AGENT_UID}"
    for arg in argv[1:]:
        if os.path.isabs(arg) and os.path.exists(arg) and not _reachable(arg, execute=False):
            return own, f"{arg} is not reachable for uid {AGENT_UID}"
    return AGENT_UID, ""
