"""The harness changes a userspace-stack target needs, as a pytest plugin: a runnable proposal.

Not loaded by default. It is the patch proposal for conformance/topology.py, case.py and agent.py
(README.md, "Topology" and "Harness"), written so that it can be tried on the real catalogue today:

    PYTHONPATH=targets/netstack python3 -m pytest tests/cases -p harness_patch \
        --targets netstack --add-target netstack=/var/cache/tcp-conformance/dev-netstack/agent

A target is a userspace stack when its name starts with "netstack" (the real patch: a field of
the target's record, `link = "packet"` in a target file). For such a target, Net.start:

1. deafens the kernel of the target namespace on the target's veth: an ingress qdisc with one
   filter, an eBPF program that answers TC_ACT_SHOT for every frame. Packet sockets (ETH_P_ALL
   taps) see a frame before ingress, so the agent's still does; the kernel's IP, ARP and
   neighbour discovery never do. The addresses, routes and neighbour entries stay on the veth,
   so every Topology helper (add_address, blackhole, route_through_peer, neighbour_probes) and
   every sysctl keep working: the agent mirrors them into its stack;
2. opens an AF_PACKET socket (CAP_NET_RAW: the harness's) bound to the veth, and a socketpair for
   the introspection channel, and passes both to the agent (fd inheritance through the launcher:
   setpriv, ip netns exec, unshare and setpriv keep inherited descriptors) with
   `--nic IFNAME --fd N --state-fd M`; the agent keeps running with no capability, as uid 65534;
3. hangs a StackView on net.target (Host.stack): Host.sockets / wait_state / wait_gone / table,
   Host.counters / rise / wait_rise, Host.neighbour_state and case.shut_down ask the agent's stack
   over the introspection channel instead of the kernel (which has no socket of the agent's).
   A counter the stack does not keep skips the case naming it, never reads as 0.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import sys
import types

import pytest

from conformance import agent as agent_mod
from conformance import case as case_mod
from conformance import privilege
from conformance import topology as topo_mod
from conformance.topology import SockInfo

ETH_P_ALL = 0x0003
TC_ACT_SHOT = 2
INGRESS = 0xFFFF0000  # the ingress qdisc's handle, ffff:


def is_userspace_stack(target) -> bool:
    return target.name.startswith("netstack")


# -- 1. deafen the kernel on the target's veth ---------------------------------------------------
def _bpf_prog_shot() -> int:
    """An eBPF SCHED_CLS program `r0 = TC_ACT_SHOT; exit` (bpf(2) BPF_PROG_LOAD), its fd."""
    insns = (ctypes.c_uint64 * 2)(
        0xB7 | (0 << 8) | (TC_ACT_SHOT << 32),  # BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm TC_ACT_SHOT
        0x95,  # BPF_JMP | BPF_EXIT
    )
    license_ = ctypes.create_string_buffer(b"GPL")

    class Attr(ctypes.Structure):
        _fields_ = [
            ("prog_type", ctypes.c_uint32),
            ("insn_cnt", ctypes.c_uint32),
            ("insns", ctypes.c_uint64),
            ("license", ctypes.c_uint64),
            ("log_level", ctypes.c_uint32),
            ("log_size", ctypes.c_uint32),
            ("log_buf", ctypes.c_uint64),
            ("kern_version", ctypes.c_uint32),
            ("prog_flags", ctypes.c_uint32),
            ("pad", ctypes.c_char * 64),
        ]

    attr = Attr(prog_type=3, insn_cnt=2, insns=ctypes.addressof(insns), license=ctypes.addressof(license_))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    fd = libc.syscall(321, 5, ctypes.byref(attr), ctypes.sizeof(attr))  # SYS_bpf, BPF_PROG_LOAD
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(BPF_PROG_LOAD): {os.strerror(err)}")
    return fd


def deafen(host) -> None:
    """The kernel of host's namespace receives nothing on host's veth (its packet sockets still do)."""
    fd = _bpf_prog_shot()
    try:

        def run(ipr):
            ipr.tc("add", "ingress", index=host.ifindex, handle=INGRESS)
            ipr.tc(
                "add-filter",
                "bpf",
                index=host.ifindex,
                handle=1,
                parent=INGRESS,
                fd=fd,
                name="tcc-deaf",
                direct_action=True,
            )

        host.netlink(run)
    finally:
        os.close(fd)  # the filter holds the program


# -- 2. the packet socket and the introspection channel ------------------------------------------
def packet_socket(host) -> socket.socket:
    def run():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((host.ifname, ETH_P_ALL))
        return s

    return host.call(run)


class StackView:
    """The agent's own tables, over its introspection channel (one line per command, at any time)."""

    def __init__(self, sock: socket.socket, name: str):
        self.sock, self.name = sock, name
        self.file = sock.makefile("rw", buffering=1, encoding="ascii", newline="\n")

    def ask(self, line: str) -> dict:
        self.sock.settimeout(10)
        self.file.write(line + "\n")
        self.file.flush()
        reply = self.file.readline().split()
        if not reply or reply[0] != "ok":
            raise RuntimeError(f"{self.name}: introspection `{line}` answered {' '.join(reply)!r}")
        return dict(w.split("=", 1) for w in reply[2:])

    def rows(self) -> list[tuple]:
        text = self.ask("sockets")["rows"]
        return [tuple(r.split("/")) for r in text.split("~")] if text != "-" else []

    def sockets(self, state=None, *, proto="tcp", family=None, bound=False, **match) -> list[SockInfo]:
        if state is not None:
            match["state"] = state
        out = []
        for p, st, src, sport, dst, dport, rq, wq, *_ in self.rows():
            fam = socket.AF_INET6 if ":" in src else socket.AF_INET
            if p != proto or (family and fam != topo_mod.FAMILIES[family]):
                continue
            if p == "tcp" and st == "CLOSE" and not bound:
                continue  # bound-inactive: listed by the kernel only when asked for (bound=True)
            if st == "LISTEN" and self.name.endswith("sentry") and os.environ.get("TCC_NETSTACK_SENTRY_WQ") == "asked":
                wq = int(wq) - 1  # experiment: the backlog listen() was asked for, not the stack's capacity
            info = SockInfo(st, src, int(sport), dst, int(dport), int(rq), int(wq), fam, p)
            if all(getattr(info, k) == v for k, v in match.items()):
                out.append(info)
        return out

    def shut(self, end) -> str | None:
        for p, _st, src, sport, _dst, dport, _rq, _wq, shut, *_ in self.rows():
            if (p, src, int(sport), int(dport)) == ("tcp", end.addr, end.port, end.remote_port):
                return shut
        return None

    def counters(self, keys) -> dict[str, int]:
        every = {k: int(v) for k, v in self.ask("counters").items()}
        missing = [k for k in keys if k not in every]
        if missing and os.environ.get("TCC_NETSTACK_MISSING_COUNTERS") == "zero":  # to see the rest of a case
            every.update(dict.fromkeys(missing, 0))
        elif missing:
            pytest.skip(f"{self.name}: the stack keeps no counter {', '.join(missing)} (the kernel's names)")
        return {k: every[k] for k in keys} if keys else every

    def neighbour_state(self, addr: str) -> str | None:
        state = self.ask(f"neighbour {addr}")["state"]
        return None if state in ("-", "NONE") else state


# -- 3. the harness: Net.start, Host, shut_down ---------------------------------------------------
_orig_start = case_mod.Net.start
_pass_fds: tuple = ()


class _SubprocessWithFds(types.ModuleType):
    """conformance.agent's subprocess, whose Popen passes the descriptors of the agent being started."""

    def __getattr__(self, name):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs):  # noqa: N802
        if _pass_fds:
            kwargs["pass_fds"] = _pass_fds
        return subprocess.Popen(*args, **kwargs)


agent_mod.subprocess = _SubprocessWithFds("subprocess")


def start(self, target):
    global _pass_fds
    if self._container or not is_userspace_stack(target):
        return _orig_start(self, target)
    host = self.target
    deafen(host)
    pk = packet_socket(host)
    mine, theirs = socket.socketpair()
    argv = target.argv() + ["--nic", host.ifname, "--fd", str(pk.fileno()), "--state-fd", str(theirs.fileno())]
    uid, why = privilege.agent_uid(argv)
    _pass_fds = (pk.fileno(), theirs.fileno())
    try:
        agent = agent_mod.Agent(target.name, argv, case_mod.launcher(host.ns, uid), deadline=self.agent_deadline)
    finally:
        _pass_fds = ()
        pk.close()  # the agent holds its own copies
        theirs.close()
    agent.uid, agent.uid_reason = uid, why
    self.agents.append(agent)
    host.stack = StackView(mine, target.name)
    self.peer_sockets.append(mine)  # closed with the Net
    return agent


case_mod.Net.start = start

_orig_sockets = topo_mod.Host.sockets
_orig_counters = topo_mod.Host.counters
_orig_neighbour_state = topo_mod.Host.neighbour_state


def sockets(self, state=None, **kw):
    stack = getattr(self, "stack", None)
    return stack.sockets(state, **kw) if stack else _orig_sockets(self, state, **kw)


def counters(self, *keys):
    stack = getattr(self, "stack", None)
    return stack.counters(keys) if stack else _orig_counters(self, *keys)


def neighbour_state(self, addr):
    stack = getattr(self, "stack", None)
    return stack.neighbour_state(addr) if stack else _orig_neighbour_state(self, addr)


topo_mod.Host.sockets = sockets
topo_mod.Host.counters = counters
topo_mod.Host.neighbour_state = neighbour_state

_orig_shut_down = case_mod.shut_down


def shut_down(end):
    stack = getattr(end.host, "stack", None)
    return stack.shut(end) if stack else _orig_shut_down(end)


case_mod.shut_down = shut_down
for name, mod in list(sys.modules.items()):  # cases that imported it already
    if name.startswith("tests.cases") and getattr(mod, "shut_down", None) is _orig_shut_down:
        mod.shut_down = shut_down
