"""Fresh network namespaces for one case: a target host and a peer host joined by a veth.

Everything is created directly inside the namespaces (never in the host's own
namespace), with the suite's own rtnetlink requests (conformance/rtnl.py), and
everything is removed by close(). Names carry
the project prefix and the owner's PID, so a later run can sweep what a killed
run left behind (see sweep()).
"""

from __future__ import annotations

import ctypes
import ipaddress
import itertools
import os
import re
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .agent import Unsupported
from .netlink import NetlinkSocket
from .rtnl import RT_TABLE_MAIN, RTAX_LOCK, Rtnl
from .sockdiag import SockDiag
from .timing import WAIT, wait_until

PREFIX = "tcc"
NETNS_DIR = "/run/netns"
# tcc<pid>-<n><role>: at most 3 + 7 + 1 + 3 + 1 = 15 characters (IFNAMSIZ - 1).
NAME_RE = re.compile(r"^tcc(\d{1,7})-([0-9a-z]{1,3})([a-z])$")

# The link between target and peer, from documentation ranges only.
NET4 = ipaddress.ip_network("198.51.100.0/24")
NET6 = ipaddress.ip_network("2001:db8::/64")
TARGET4, PEER4, BLACKHOLE4 = "198.51.100.1", "198.51.100.2", "198.51.100.99"
TARGET6, PEER6, BLACKHOLE6 = "2001:db8::1", "2001:db8::2", "2001:db8::99"

FAMILIES = {"v4": socket.AF_INET, "v6": socket.AF_INET6}
IPPROTO_TCP = socket.IPPROTO_TCP

TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}

NUD_STATES = {
    0x01: "INCOMPLETE",
    0x02: "REACHABLE",
    0x04: "STALE",
    0x08: "DELAY",
    0x10: "PROBE",
    0x20: "FAILED",
    0x40: "NOARP",
    0x80: "PERMANENT",
}

ALL_STATES = 0xFFF  # every real TCP state (1 << 0 .. 1 << 11)
STATE_NUMBERS = {name: number for number, name in TCP_STATES.items()}
TCP_BOUND_INACTIVE = 13  # sock_diag pseudo-state (Linux 6.8+): bound, neither listening nor connected
RTAX_RTO_MIN = 13  # route metric: minimum RTO in ms (honoured when its RTAX_LOCK bit is set)

# Set explicitly in every namespace: new namespaces inherit some IPv4 settings
# from the host (ip_forward among them), so nothing is left to chance.
BASE_SYSCTLS = {
    "net.ipv4.ip_forward": "0",
    "net.ipv6.conf.all.forwarding": "0",
    "net.ipv6.conf.all.disable_ipv6": "0",  # Docker turns IPv6 off in containers
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
    "net.ipv6.conf.default.router_solicitations": "0",
    "net.core.somaxconn": "4096",
    "net.ipv4.tcp_syn_retries": "6",
    "net.ipv4.tcp_synack_retries": "5",
    "net.ipv4.tcp_abort_on_overflow": "0",
    "net.ipv4.tcp_syncookies": "1",
    "net.ipv4.tcp_max_tw_buckets": "262144",
    "net.ipv4.ip_local_port_range": "32768 60999",
    "net.ipv4.ip_unprivileged_port_start": "0",  # agents run as an unprivileged uid (conformance/privilege.py)
}

_counter = itertools.count(1)
CLONE_NEWNET = 0x40000000
IFA_F_NODAD = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20
MNT_DETACH = 2


# The namespaces' files under /run/netns, made and removed as iproute2's `ip netns add` and `delete`
# do it. Written with libc here instead of pyroute2's netns module: importing pyroute2 costs about
# 0.22 s of CPU, paid by every pytest start (and the suite's own tests start hundreds), and only the
# deafening of a userspace stack's kernel (Host.deafen) needs pyroute2 now.
def _libc_call(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """The calling thread enters the network namespace of fd."""
    _libc_call(_libc.setns(fd, CLONE_NEWNET), "setns")


def attach_netns(name: str, pid) -> None:
    """/run/netns/NAME: a bind mount of process pid's network namespace ("thread-self": the calling
    thread's). /run/netns is made a shared mount first, so the name shows in every mount namespace."""
    run = NETNS_DIR.encode()
    os.makedirs(NETNS_DIR, exist_ok=True)
    if _libc.mount(b"", run, b"none", MS_SHARED | MS_REC, None) != 0:
        _libc_call(_libc.mount(run, run, b"none", MS_BIND | MS_REC, None), f"mount --bind {NETNS_DIR}")
        _libc_call(_libc.mount(b"", run, b"none", MS_SHARED | MS_REC, None), f"mount --make-shared {NETNS_DIR}")
    path = os.path.join(NETNS_DIR, name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    _libc_call(_libc.mount(f"/proc/{pid}/ns/net".encode(), path.encode(), b"none", MS_BIND, None), f"bind {path}")


def remove_netns(name: str) -> None:
    """Unmount and remove /run/netns/NAME (the namespace ends with the last process or socket in it)."""
    path = os.path.join(NETNS_DIR, name)
    _libc.umount2(path.encode(), MNT_DETACH)
    os.unlink(path)


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if not n:
            return out


def new_base() -> str:
    """A name stem unique per process and per call: tcc<pid>-<counter>."""
    return f"{PREFIX}{os.getpid()}-{_base36(next(_counter) % 36**3)}"


def _in_thread(name: str, fn):
    """Run fn in a short-lived thread of its own and return its result (or raise its exception)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# One long-lived thread per namespace of ours, which entered it once (a ThreadPoolExecutor of one
# worker): a case makes a few dozen calls into each namespace, and a fresh thread doing setns() for
# each cost about 8 ms of CPU a call, most of a case's CPU (measured: 26 threads a case).
_ns_threads: dict[str, ThreadPoolExecutor] = {}
_ns_threads_lock = threading.Lock()
_inside = threading.local()  # .ns: the namespace the current thread has entered, if it is one of those


def _run_inside(ns: str, fn, args, kwargs):
    if getattr(_inside, "ns", None) != ns:
        fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
        try:
            setns(fd)
        finally:
            os.close(fd)
        _inside.ns = ns
    return fn(*args, **kwargs)


def in_netns(ns: str, fn, *args, **kwargs):
    """Run fn in this process's thread that lives in namespace ns (made, and entered, on first use).

    Written here because no library call fits: setns() for a network
    namespace changes only the calling thread, so a thread of our own can
    enter it, create sockets (which stay in that namespace), read
    /proc/thread-self/net/* and write /proc/sys/net/* there, while the rest of
    the process stays in the host namespace. pyroute2's netns.create_socket
    forks per socket and its ChildProcess caps results at 1 KiB.
    Calls into one namespace run one at a time; a call made from that thread runs at once.
    leave_netns(ns) ends the thread: a namespace lives on while any thread is inside it.
    """
    if getattr(_inside, "ns", None) == ns:
        return fn(*args, **kwargs)
    with _ns_threads_lock:
        pool = _ns_threads.get(ns)
        if pool is None:
            pool = _ns_threads[ns] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"netns-{ns}")
    return pool.submit(_run_inside, ns, fn, args, kwargs).result()


def leave_netns(ns: str) -> None:
    """End the thread of ours inside ns (before the namespace is removed: it would keep it alive)."""
    with _ns_sockets_lock:
        sockets = [_ns_sockets.pop(key) for key in list(_ns_sockets) if key[0] == ns]
    for sock in sockets:
        sock.close()
    with _ns_threads_lock:
        pool = _ns_threads.pop(ns, None)
    if pool is not None:
        pool.submit(_close_thread_sockets).result()
        pool.shutdown(wait=True)


_ns_sockets: dict[tuple, NetlinkSocket] = {}  # (namespace, kind): made inside it, used from any thread
_ns_sockets_lock = threading.Lock()


def ns_socket(ns: str, kind: type[NetlinkSocket]):
    """Namespace ns's netlink socket of this kind (SockDiag, Rtnl), opened once inside it: a socket
    keeps the namespace it was made in, so a request needs no hop to the namespace's thread (each wait
    of a case polls the socket table). leave_netns closes it."""
    with _ns_sockets_lock:
        sock = _ns_sockets.get((ns, kind))
    if sock is None:
        made = in_netns(ns, kind)
        with _ns_sockets_lock:
            sock = _ns_sockets.setdefault((ns, kind), made)
        if sock is not made:
            made.close()
    return sock


def route_socket():
    """pyroute2's IPRoute socket of the namespace thread calling it, opened once: a new IPRoute (its
    own event loop in pyroute2 0.9) cost about 4 ms of CPU a call. groups=0: it joins no multicast
    group, so no announcement queues up on it between calls. Only Host.deafen needs it: pyroute2 is
    imported on first use (preload_pyroute2 imports it before a run's processes fork)."""
    ipr = getattr(_inside, "ipr", None)
    if ipr is None:
        from pyroute2 import IPRoute

        ipr = _inside.ipr = IPRoute(groups=0)
    return ipr


def preload_pyroute2() -> None:
    """Import pyroute2 now (0.22 s of CPU): before the processes that run cases fork, so that each of
    them does not import it again when a case deafens a namespace (a userspace stack's target)."""
    import pyroute2.iproute  # noqa: F401


def _close_thread_sockets() -> None:
    ipr = getattr(_inside, "ipr", None)
    if ipr is not None:
        _inside.ipr = None
        ipr.close()


# New namespaces are made inside a namespace of the process's own (the nursery), whose
# tcp_child_ehash_entries and udp_child_hash_entries give each of them socket hash tables of their
# own, sized for a case. On the host's shared tables (262144 TCP buckets here) every sock_diag dump
# walks every bucket: 1.75 ms of system CPU a dump, measured, and a case dumps 30 to 250 times (each
# wait polls); on 1024 buckets it is 0.1 ms. The table's size is not TCP behaviour, but two sysctls
# derive from it (tcp_max_syn_backlog, tcp_max_tw_buckets): each new namespace gets the values a
# namespace on the shared tables has (the nursery's). The nursery has no name and nothing in it: it
# ends with the process. A kernel without these sysctls (before 6.1) makes namespaces as before.
CHILD_HASH_SYSCTLS = {"net.ipv4.tcp_child_ehash_entries": "1024", "net.ipv4.udp_child_hash_entries": "128"}
DERIVED_SYSCTLS = ("net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_max_tw_buckets")
_nursery: dict = {}  # "fd": the nursery's namespace fd (or None: none could be made), "sysctls": DERIVED values
_nursery_lock = threading.Lock()


def _unshare_net(what: str) -> None:
    _libc_call(_libc.unshare(CLONE_NEWNET), f"unshare(CLONE_NEWNET) for {what}")


def _make_nursery() -> dict:
    def run():
        _unshare_net("the nursery namespace")
        derived = {}
        for key in DERIVED_SYSCTLS:
            with open(sysctl_path(key)) as f:
                derived[key] = f.read().strip()
        for key, value in CHILD_HASH_SYSCTLS.items():
            try:
                with open(sysctl_path(key), "w") as f:
                    f.write(value)
            except OSError:  # FileNotFoundError: a kernel before 6.1 (TCP) or 6.2 (UDP)
                if key == "net.ipv4.tcp_child_ehash_entries":
                    return {"fd": None, "sysctls": {}}  # namespaces are made as before
        return {"fd": os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC), "sysctls": derived}

    try:
        return _in_thread("netns-nursery", run)
    except OSError:
        return {"fd": None, "sysctls": {}}


def nursery() -> dict:
    """The nursery ({"fd": its namespace fd or None, "sysctls": values for each new namespace}), made once."""
    with _nursery_lock:
        if not _nursery or _nursery.get("pid") != os.getpid():  # a forked child makes its own
            _nursery.clear()
            _nursery.update(_make_nursery(), pid=os.getpid())
        return _nursery


def create_netns(name: str) -> None:
    """Create a named network namespace (/run/netns/NAME) without forking.

    A thread of ours enters the nursery (above), unshares a new network namespace (that changes
    only the thread) and attach_netns bind-mounts it under /run/netns, as `ip netns add` does.
    (pyroute2's netns.create forks a child for this.)
    """
    parent = nursery()

    def run():
        if parent["fd"] is not None:
            setns(parent["fd"])
        _unshare_net(name)
        for key, value in parent["sysctls"].items():
            with open(sysctl_path(key), "w") as f:
                f.write(value)
        attach_netns(name, "thread-self")

    _in_thread(f"netns-add-{name}", run)


def delta(before: dict, after: dict, *keys) -> dict:
    """How much each counter in keys rose between two Host.counters() readings."""
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


class NotReported(Unsupported, KeyError):
    """A counter the source of a host's evidence does not keep (a userspace stack's): never read as 0.
    A case that reads one without asking `key in counters` first is skipped, naming it."""

    def __str__(self):
        return f"{self.args[1]}: the counter {self.args[0]} is not reported by this target (its stack keeps none)"


class Counters(dict):
    """Counter readings (Host.counters, Host.rise). A counter the source does not keep is absent, and
    reading it raises NotReported; `key in counters` says whether it can be judged. `unreported` lists
    the ones asked for and absent, `source` says where the readings came from ("kernel", or the target)."""

    def __init__(self, values: dict, unreported=(), source: str = "kernel"):
        super().__init__(values)
        self.unreported, self.source = tuple(unreported), source

    def __missing__(self, key):
        raise NotReported(key, self.source)


def sysctl_path(key: str) -> str:
    if not re.fullmatch(r"net\.[A-Za-z0-9_.\-]+", key) or ".." in key:
        raise ValueError(f"not a network sysctl: {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


SS_STATES = {
    "ESTABLISHED": "ESTAB",
    "FIN_WAIT1": "FIN-WAIT-1",
    "FIN_WAIT2": "FIN-WAIT-2",
    "TIME_WAIT": "TIME-WAIT",
    "CLOSE_WAIT": "CLOSE-WAIT",
    "LAST_ACK": "LAST-ACK",
    "SYN_SENT": "SYN-SENT",
    "SYN_RECV": "SYN-RECV",
    "CLOSE": "UNCONN",
    "NEW_SYN_RECV": "SYN-RECV",
    "LISTEN": "LISTEN",
    "CLOSING": "CLOSING",
}


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@dataclass
class SockInfo:
    """One row of the kernel's socket table (sock_diag); prints as `ss -tan` does."""

    state: str
    src: str
    sport: int
    dst: str
    dport: int
    rqueue: int  # LISTEN: accept queue length; else bytes not yet read
    wqueue: int  # LISTEN: backlog in force; else bytes not yet acked
    family: int = socket.AF_INET
    proto: str = "tcp"
    # A process holds the socket (sock_diag's inode is non-zero): False for a connection still
    # waiting in a listener's accept queue, or for an orphan that close() left to the kernel.
    owned: bool = True

    def __str__(self):
        state = SS_STATES.get(self.state, self.state)
        return (
            f"{self.proto:<4}{state:<11}{self.rqueue:>6} {self.wqueue:>6}  "
            f"{_endpoint(self.src, self.sport):<24} {_endpoint(self.dst, self.dport)}"
        )

    __repr__ = __str__


SS_HEADER = f"{'':<4}{'State':<11}{'Recv-Q':>6} {'Send-Q':>6}  {'Local Address:Port':<24} Peer Address:Port"


def table(rows) -> str:
    """Socket rows in `ss -tan` form, with its header."""
    return "\n".join([SS_HEADER, *map(str, rows)])


PROTOS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


@dataclass
class Host:
    """One network namespace with one end of the veth."""

    role: str
    ns: str
    ifname: str
    addr4: str
    addr6: str
    mac: str = ""
    ifindex: int = 0
    # A userspace stack's own tables (conformance.stack.StackView): when set, sockets(), counters() and
    # neighbour_state() ask it instead of the kernel, which has none of its sockets.
    stack: object = None
    # What the case could not check here: counters asked for that the source does not keep.
    unreported: set = field(default_factory=set)

    @property
    def evidence_source(self) -> str:
        """Where this host's socket tables, counters and neighbour entries come from."""
        return "kernel" if self.stack is None else self.stack.source

    def addr(self, family: str) -> str:
        return self.addr4 if family == "v4" else self.addr6

    def call(self, fn, *args, **kwargs):
        return in_netns(self.ns, fn, *args, **kwargs)

    def socket(self, family: str = "v4", kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket of the harness's own, living in this host's namespace."""
        return self.call(socket.socket, FAMILIES[family], kind)

    @property
    def rtnl(self) -> Rtnl:
        """This namespace's rtnetlink socket (conformance/rtnl.py)."""
        return ns_socket(self.ns, Rtnl)

    def netlink(self, fn):
        """Run fn(ipr) with the IPRoute socket of this namespace's thread (route_socket).

        The socket is made and used in that one thread (pyroute2 0.9 netlink sockets are
        thread-local), and no process is forked (IPRoute(netns=...) forks one per socket).
        """
        return self.call(lambda: fn(route_socket()))

    # sysctls
    def sysctl(self, key: str, value: str | None = None) -> str:
        path = sysctl_path(key)

        def run():
            if value is not None:
                with open(path, "w") as f:
                    f.write(str(value))
            with open(path) as f:
                return f.read().strip()

        try:
            return self.call(run)
        except FileNotFoundError:
            raise ValueError(f"unknown sysctl {key}") from None

    def read_sysctls(self, keys) -> dict:
        """The values in force for keys (those this kernel has)."""

        def run():
            out = {}
            for key in keys:
                try:
                    with open(sysctl_path(key)) as f:
                        out[key] = " ".join(f.read().split())
                except FileNotFoundError:
                    pass
            return out

        return self.call(run)

    def sysctls(self, values: dict) -> None:
        def run():
            for key, value in values.items():
                try:
                    with open(sysctl_path(key), "w") as f:
                        f.write(str(value))
                except FileNotFoundError:
                    raise ValueError(f"unknown sysctl {key}") from None

        self.call(run)

    # kernel evidence
    def sockets(
        self, state: str | None = None, *, proto: str = "tcp", family: str | None = None, bound: bool = False, **match
    ) -> list[SockInfo]:
        """Rows of the namespace's socket table (sock_diag) in `state` whose fields equal every keyword.

        proto: "tcp" or "udp"; family: "v4"/"v6" (default both); bound=True also lists
        sockets that are bound but neither listen nor connect (state CLOSE; sock_diag
        dumps them from Linux 6.8 on)."""
        if state is not None:
            match["state"] = state
        if self.stack is not None:
            rows = self.stack.sockets(proto, family, bound)
            return [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]
        fams = [FAMILIES[family]] if family else [socket.AF_INET, socket.AF_INET6]
        states = ALL_STATES | (1 << TCP_BOUND_INACTIVE if bound else 0)
        if state in STATE_NUMBERS:  # the kernel dumps only that state's sockets: less to parse
            states = 1 << STATE_NUMBERS[state] | (1 << TCP_BOUND_INACTIVE if bound else 0)

        ds = ns_socket(self.ns, SockDiag)
        rows = [
            SockInfo(
                state=TCP_STATES.get(m.state, str(m.state)),
                src=m.src,
                sport=m.sport,
                dst=m.dst,
                dport=m.dport,
                rqueue=m.rqueue,
                wqueue=m.wqueue,
                family=fam,
                proto=proto,
                owned=m.inode != 0,
            )
            for fam in fams
            for m in ds.dump(fam, PROTOS[proto], states)
        ]
        return [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]

    def wait_state(self, state: str, timeout: float = WAIT, **match) -> SockInfo | None:
        """Wait (bounded, scaled by the run's slack) until a socket in state matches **match; it, or None."""
        rows = wait_until(lambda: self.sockets(state, **match), timeout)
        return rows[0] if rows else None

    def wait_gone(self, timeout: float = WAIT, **match) -> bool:
        """Wait (bounded, scaled) until no socket matches **match; True if none is left."""
        return wait_until(lambda: not self.sockets(**match), timeout)

    def table(self) -> str:
        """Every TCP and UDP socket of the namespace, in `ss -tuan` form."""
        return table(self.sockets(bound=True) + self.sockets(proto="udp"))

    def counters(self, *keys: str) -> dict[str, int]:
        """/proc/net/netstat, snmp and snmp6 of this namespace as one dict:
        {'TcpExt.ListenOverflows': n, 'Udp.InDatagrams': n, 'Icmp6.InDestUnreachs': n, ...};
        with keys, only those (0 for a counter this kernel lacks). From a userspace stack (self.stack):
        its own counters under the kernel's names; one it does not keep is absent (never 0), listed in
        the reading's `unreported` and in self.unreported (recorded with the case as not checked)."""
        if self.stack is not None:
            every = self.stack.counters()
            missing = [k for k in keys if k not in every]
            self.unreported.update(missing)
            values = {k: every[k] for k in keys if k in every} if keys else every
            return Counters(values, missing, self.stack.name)
        every = self._counters()
        return Counters({k: every.get(k, 0) for k in keys} if keys else every)

    def rise(self, before: dict[str, int]) -> dict[str, int]:
        """How much each counter of a counters(...) reading has risen since (absent: not reported)."""
        after = self.counters(*before, *getattr(before, "unreported", ()))
        return Counters(delta(before, after, *before), getattr(after, "unreported", ()), getattr(after, "source", ""))

    def wait_rise(self, before: dict[str, int], key: str, at_least: int = 1, timeout: float = 1.0) -> int:
        """Wait (bounded, scaled) until counter key has risen by at_least since before; the rise."""
        before[key]  # NotReported when the source does not keep it: never waited for as 0
        rise = lambda: self.counters(key)[key] - before[key]  # noqa: E731
        wait_until(lambda: rise() >= at_least, timeout)
        return rise()

    def _counters(self) -> dict[str, int]:

        def run():
            out = {}
            for name in ("netstat", "snmp"):
                with open(f"/proc/thread-self/net/{name}") as f:
                    lines = f.read().splitlines()
                for head, vals in zip(lines[::2], lines[1::2], strict=True):
                    group, keys = head.split(":", 1)
                    _, nums = vals.split(":", 1)
                    for k, v in zip(keys.split(), nums.split(), strict=True):
                        out[f"{group}.{k}"] = int(v)
            with open("/proc/thread-self/net/snmp6") as f:  # "Ip6OutNoRoutes 3" -> Ip6.OutNoRoutes
                for line in f:
                    if line.strip():
                        key, value = line.split()
                        m = re.match(r"(Ip6|Icmp6|UdpLite6|Udp6)(.+)", key)
                        out[f"{m.group(1)}.{m.group(2)}" if m else key] = int(value)
            return out

        return self.call(run)

    # routes and neighbours
    def route_error(self, addr: str) -> int | None:
        """The errno of a route lookup for addr here (101 ENETUNREACH: no route), None when one exists."""
        return self.rtnl.route_error(addr)

    def add_route(self, prefix: str, via: str | None = None) -> None:
        """A route for prefix ("203.0.113.0/24"): through the gateway via, or on this host's link."""
        net = ipaddress.ip_network(prefix)
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        where = {"gateway": via} if via else {"oif": self.ifindex}
        self.rtnl.add_route(family, str(net.network_address), net.prefixlen, **where)

    def set_rto_min(self, seconds: float) -> dict[str, int]:
        """Raise the minimum retransmission timeout of TCP to the link partner to seconds, IPv4 and IPv6.

        The connected routes of the link (NET4, NET6) are replaced by the same routes carrying the route
        metric RTAX_RTO_MIN, locked, as `ip route change ... rto_min 3s` does: the kernel takes the metric
        in ms and uses it only when locked. It exists on every kernel the suite meets (the sysctl
        net.ipv4.tcp_rto_min_us only from 6.11). Applies to sockets whose route is looked up after this.
        Returns {prefix: ms} as the kernel reads the routes back; a route without it is an error."""
        ms = round(seconds * 1000)
        wanted = {(socket.AF_INET, str(NET4.network_address)), (socket.AF_INET6, str(NET6.network_address))}

        def connected():
            for family, dst in sorted(wanted):
                for r in self.rtnl.routes(family):
                    if r.table == RT_TABLE_MAIN and r.oif == self.ifindex and r.dst == dst:
                        yield dst, r

        lock = 1 << RTAX_RTO_MIN
        for _dst, r in list(connected()):
            self.rtnl.replace_route(r, {RTAX_LOCK: lock, RTAX_RTO_MIN: ms})
        got = {
            f"{dst}/{r.dst_len}": r.metrics.get(RTAX_RTO_MIN) if r.metrics.get(RTAX_LOCK, 0) & lock else None
            for dst, r in connected()
        }
        if len(got) != len(wanted) or any(v != ms for v in got.values()):
            raise RuntimeError(f"rto_min {ms} ms did not take on the {self.role}'s connected routes: {got}")
        return got

    def rto_ms(self, **match) -> int | None:
        """The retransmission timeout in force (tcp_info's tcpi_rto, in ms, as `ss -i` shows it) of the
        first TCP socket whose fields equal every keyword (see sockets()); None if there is none. From a
        userspace stack (self.stack): the RTO its own table reports."""
        if self.stack is not None:
            return self.stack.rto_ms(match)

        ds = ns_socket(self.ns, SockDiag)
        for fam in (socket.AF_INET, socket.AF_INET6):
            for m in ds.dump(fam, IPPROTO_TCP, ALL_STATES, info=True):
                fields = {"src": m.src, "sport": m.sport, "dst": m.dst, "dport": m.dport}
                if m.rto_us is not None and all(fields[k] == v for k, v in match.items()):
                    return m.rto_us // 1000
        return None

    def neighbour_state(self, addr: str) -> str | None:
        """The state of this host's neighbour entry for addr (NUD name: "FAILED", "PERMANENT"...), None if none."""
        if self.stack is not None:
            return self.stack.neighbour_state(addr)

        for dst, state in self.rtnl.neighbours(self.ifindex):
            if dst == addr:
                return NUD_STATES.get(state, hex(state))
        return None

    def has_link_local(self) -> bool:
        """Whether the veth end has its IPv6 link-local address yet (it comes up to ~1 s after the link)."""
        return any(a.startswith("fe80:") for a in self.rtnl.addresses(socket.AF_INET6, self.ifindex))

    # -- a userspace stack on this host's veth (conformance/case.py, Net.start) ------------------
    def deafen(self) -> None:
        """The kernel of this namespace receives nothing on the veth; its packet sockets still do.

        An ingress qdisc with one direct-action filter, an eBPF program that answers TC_ACT_SHOT for
        every frame. In __netif_receive_skb_core the ETH_P_ALL taps (packet sockets) see a frame before
        the ingress hook, so a userspace stack's packet socket gets everything while the kernel's IP,
        ARP and neighbour discovery get nothing: no RST, SYN-ACK, ARP reply or ICMP from it for the
        addresses it still holds. Addresses, routes, neighbour entries and sysctls stay, so the helpers
        above keep working (the stack mirrors them); egress is untouched (shaping holds the stack's frames).
        This kernel has sch_ingress and cls_bpf but neither cls_matchall nor act_gact, hence BPF."""
        fd = _bpf_prog_drop_all()
        try:

            def run(ipr):
                ipr.tc("add", "ingress", index=self.ifindex, handle=INGRESS_HANDLE)
                ipr.tc(
                    "add-filter",
                    "bpf",
                    index=self.ifindex,
                    handle=1,
                    parent=INGRESS_HANDLE,
                    fd=fd,
                    name="tcc-deaf",
                    direct_action=True,
                )

            self.netlink(run)
        finally:
            os.close(fd)  # the filter holds the program

    def deafened(self) -> bool:
        """Whether the veth has the ingress qdisc deafen() adds."""
        return self.netlink(
            lambda ipr: any(
                q.get_attr("TCA_KIND") == "ingress" and q["handle"] == INGRESS_HANDLE
                for q in ipr.get_qdiscs(index=self.ifindex)
            )
        )

    def packet_socket(self) -> socket.socket:
        """An AF_PACKET socket (every protocol) bound to this host's veth: needs CAP_NET_RAW, the harness's."""

        def run():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            try:
                s.bind((self.ifname, ETH_P_ALL))
            except OSError:
                s.close()
                raise
            return s

        return self.call(run)

    def neighbour_probes(self, count: int, interval_ms: int) -> None:
        """Neighbour discovery (ARP and IPv6) on the veth gives up after count probes interval_ms apart."""
        self.sysctls(
            {
                f"net.{ip}.neigh.{self.ifname}.{key}": value
                for ip in ("ipv4", "ipv6")
                for key, value in (("mcast_solicit", count), ("app_solicit", 0), ("retrans_time_ms", interval_ms))
            }
        )


ETH_P_ALL = 0x0003
TC_ACT_SHOT = 2
INGRESS_HANDLE = 0xFFFF0000  # the ingress qdisc's handle, ffff:
SYS_BPF, BPF_PROG_LOAD, BPF_PROG_TYPE_SCHED_CLS = 321, 5, 3  # x86_64


class _BpfProgLoad(ctypes.Structure):
    """The head of union bpf_attr for BPF_PROG_LOAD (linux/bpf.h), zero-padded."""

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


def _bpf_prog_drop_all() -> int:
    """Load the eBPF SCHED_CLS program `r0 = TC_ACT_SHOT; exit` with bpf(2); its fd.

    Written here because no library call fits: pyroute2 (0.9) attaches a tc `bpf` filter by the fd of a
    loaded eBPF program but has no bpf(2) call to load one, and its classic-BPF form (TCA_BPF_OPS) is
    typed as one uint32 instead of an array of sock_filter, so it cannot carry bytecode. The tc binary
    would do it (`tc filter add dev IF ingress bpf da bytecode '1,6 0 0 2,'`) at the cost of a process."""
    insns = (ctypes.c_uint64 * 2)(
        0xB7 | (TC_ACT_SHOT << 32),  # BPF_ALU64 | BPF_MOV | BPF_K: r0 = TC_ACT_SHOT
        0x95,  # BPF_JMP | BPF_EXIT
    )
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = _BpfProgLoad(
        prog_type=BPF_PROG_TYPE_SCHED_CLS, insn_cnt=2, insns=ctypes.addressof(insns), license=ctypes.addressof(license_)
    )
    _libc.syscall.restype = ctypes.c_long
    fd = _libc.syscall(SYS_BPF, BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(BPF_PROG_LOAD): {os.strerror(err)}")
    return int(fd)


class Topology:
    """Two fresh namespaces, target and peer, joined by a veth pair.

    target 198.51.100.1/24 2001:db8::1/64  <-- veth -->  peer 198.51.100.2/24 2001:db8::2/64

    The peer never forwards, so an address on the link that nobody owns but
    whose neighbour entry points at the peer (BLACKHOLE4/6) silently eats SYNs.
    """

    def __init__(self, target_sysctls: dict | None = None, target_pid: int | None = None):
        """target_pid: wire the network namespace of that process (a container) as the target host."""
        self.target_pid = target_pid
        base = new_base()
        self.base = base
        self.target = Host("target", base + "t", base + "t", TARGET4, TARGET6)
        self.peer = Host("peer", base + "p", base + "p", PEER4, PEER6)
        self.created: list[str] = []
        try:
            self._build(target_sysctls or {})
        except BaseException:
            self.close()
            raise

    @property
    def hosts(self):
        return (self.target, self.peer)

    def _build(self, target_sysctls):
        for host in self.hosts:
            self.created.append(host.ns)  # before creating: a half-made namespace is removed too
            if host is self.target and self.target_pid:
                attach_netns(host.ns, self.target_pid)  # bind-mount /proc/PID/ns/net as /run/netns/NAME
            else:
                create_netns(host.ns)
            host.sysctls(BASE_SYSCTLS)
        self.target.sysctls(target_sysctls)

        # Create both veth ends directly in their namespaces: moving one costs 40-90 ms.
        fd = os.open(os.path.join(NETNS_DIR, self.peer.ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.target.rtnl.add_veth(self.target.ifname, self.peer.ifname, fd)
        finally:
            os.close(fd)
        for host in self.hosts:
            self._address(host)
        # Permanent neighbour entries for the link partner: no ARP or neighbour
        # discovery before the first SYN. A new veth's IPv6 side can take up to
        # a second to join its solicited-node group, and a lost first neighbour
        # solicitation would delay a v6 connect by a full second.
        for host, other in ((self.target, self.peer), (self.peer, self.target)):
            for addr in (other.addr4, other.addr6):
                host.rtnl.permanent_neighbour(host.ifindex, addr, other.mac)

    @staticmethod
    def _address(host):
        rtnl = host.rtnl
        rtnl.up(1)  # loopback
        host.ifindex, host.mac = rtnl.link(host.ifname)
        rtnl.add_address(host.ifindex, host.addr4, NET4.prefixlen)
        # nodad: ready for bind() at once, never tentative (under load DAD can lag the first case step).
        rtnl.add_address(host.ifindex, host.addr6, NET6.prefixlen, flags=IFA_F_NODAD)
        rtnl.up(host.ifindex)

    def blackhole(self, family: str) -> str:
        """An address on the link whose packets reach the peer, which drops them silently.

        A permanent neighbour entry on the target maps it to the peer's MAC;
        the peer has forwarding off. No netfilter needed.
        """
        addr = BLACKHOLE4 if family == "v4" else BLACKHOLE6
        self.target.rtnl.permanent_neighbour(self.target.ifindex, addr, self.peer.mac)
        return addr

    def add_address(self, addr: str, family: str) -> str:
        """Give the target another address on its veth; the peer reaches it without neighbour discovery."""
        prefix, flags = (NET4.prefixlen, 0) if family == "v4" else (NET6.prefixlen, IFA_F_NODAD)
        self.target.rtnl.add_address(self.target.ifindex, addr, prefix, flags)
        self.peer.rtnl.permanent_neighbour(self.peer.ifindex, addr, self.target.mac)
        return addr

    def route_through_peer(self, prefix: str) -> None:
        """Make the peer the target's router for prefix: the target routes it via the peer, which
        forwards, sends ICMP errors unthrottled and no redirects (it forwards back out its only
        link); the target ignores IPv6 redirects, so its route stays via the router."""
        family = "v4" if ipaddress.ip_network(prefix).version == 4 else "v6"
        self.target.add_route(prefix, via=self.peer.addr(family))
        self.peer.sysctls(
            {
                "net.ipv4.ip_forward": "1",
                "net.ipv6.conf.all.forwarding": "1",
                "net.ipv4.icmp_ratelimit": "0",
                "net.ipv6.icmp.ratelimit": "0",
                "net.ipv4.conf.all.send_redirects": "0",
                f"net.ipv4.conf.{self.peer.ifname}.send_redirects": "0",
            }
        )
        self.target.sysctls(
            {"net.ipv6.conf.all.accept_redirects": "0", f"net.ipv6.conf.{self.target.ifname}.accept_redirects": "0"}
        )

    def close(self):
        end_processes_in(self.created)
        for ns in reversed(self.created):
            leave_netns(ns)
            try:
                remove_netns(ns)
            except OSError:
                pass
        self.created.clear()


def processes_in(*namespaces: str) -> list[int]:
    """PIDs of the processes whose network namespace is one of these (what `ip netns pids` lists).
    One look through /proc for all of them: a look stats every process's namespace (about 1.5 ms of
    CPU with a run's agents alive)."""
    inodes = set()
    for ns in namespaces:
        try:
            inodes.add(os.stat(os.path.join(NETNS_DIR, ns)).st_ino)
        except FileNotFoundError:
            pass
    if not inodes:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
    return pids


def end_processes_in(namespaces, timeout: float = 2.0) -> list[int]:
    """Before namespaces of ours go: kill (by PID) every process still in one, and wait (bounded) for
    them. They can only be processes an agent of ours started that escaped its PID namespace's end
    (a container's are the engine's: a Docker target's namespace is wired from a container we started).
    Returns the PIDs found."""
    found = processes_in(*namespaces)
    if not found:
        return found
    for pid in found:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not [p for p in processes_in(*namespaces) if _alive(p)], timeout)
    return found


def _alive(pid: int) -> bool:
    """A process that has not ended (a zombie waiting for its parent has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def owned_names(names):
    """(name, pid) for names with the project's prefix."""
    for name in names:
        m = NAME_RE.match(name)
        if m:
            yield name, int(m.group(1))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> list[str]:
    """Remove namespaces of this suite whose owner process is gone. Returns their names.

    Only names matching the suite's prefix pattern whose embedded PID is no
    longer alive are touched; live runs (other pytest sessions, other xdist
    workers) keep theirs. Removing a namespace removes its veth end too.
    """
    removed = []
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return removed
    for name, pid in owned_names(names):
        if pid != os.getpid() and not pid_alive(pid):
            try:
                remove_netns(name)
                removed.append(name)
            except OSError:
                pass
    return removed
