"""What one case works with: the namespaces, the wire capture, the target agent, the evidence.

The pytest fixtures (fixtures/plugin.py) build a Net per case; code outside
pytest can use it directly:

    with Net() as net:
        agent = net.start(builtin_targets()["python"])
        ...
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from dataclasses import dataclass

from . import privilege
from .agent import Agent, AgentError
from .capture import Capture
from .sockdiag import SockDiag
from .stack import StackView
from .targets import Target, build_launcher
from .timing import RUNTIME_GRACE, WAIT, holds, slack
from .topology import ALL_STATES, NETNS_DIR, Host, Topology, new_base, ns_socket

PORT = 7878  # the port cases listen on, target or peer (seed 000's server port)
CLOSED_PORT = 9  # a port nothing listens on
LIVE: set[Net] = set()  # every Net not yet closed, for cleanup on interrupt


@dataclass
class End:
    """One end of a connection: its host, its address and port, and the other end's port."""

    role: str  # "target" or "peer"
    host: Host
    addr: str
    port: int
    remote_port: int

    @property
    def match(self) -> dict:
        """This end's socket in its host's table: Host.sockets(**end.match)."""
        return dict(sport=self.port, dport=self.remote_port)

    def sockets(self, state: str | None = None):
        return self.host.sockets(state, **self.match)

    def wait_state(self, state: str, timeout: float = WAIT):
        return self.host.wait_state(state, timeout, **self.match)

    def wait_gone(self, timeout: float = WAIT) -> bool:
        return self.host.wait_gone(timeout, **self.match)

    def stays(self, state: str, duration: float = 2 * RUNTIME_GRACE) -> bool:
        """Whether this end's socket stays in `state` for `duration` (scaled): what its program has not
        changed, its runtime must not change either (an event loop that answers a FIN with its own)."""
        return holds(lambda: self.sockets(state), duration)


@dataclass
class Connection:
    """A TCP connection between the target's agent (handle) and a socket of the peer's (sock)."""

    agent: Agent
    handle: int
    sock: socket.socket
    target: End
    peer: End

    def end(self, role: str) -> End:
        return self.target if role == "target" else self.peer

    def other(self, role: str) -> End:
        return self.peer if role == "target" else self.target

    def close(self, role: str):
        """close() on that end: the agent's close (which must succeed), or the peer socket's."""
        if role == "target":
            return self.agent.close(self.handle).check("the target's close()")
        self.sock.close()


def launcher(ns: str, uid: int = 0) -> list[str]:
    """argv prefix that runs a command inside namespace ns, in a PID namespace of its own, as uid
    without capabilities: the harness's launcher (conformance/launch.c; conformance/privilege.py says
    what it takes away).

    The launcher dies with the harness (PR_SET_PDEATHSIG), and the agent, PID 1 of its PID
    namespace, dies with the launcher: when the launcher (the PID the harness holds) is killed, the
    agent is killed, and with it every process it started, whatever signals they ignore: a wrapper
    script without exec or an agent that forks leaves nothing running.
    """
    return [str(build_launcher()), os.path.join(NETNS_DIR, ns), str(uid), "--"]


class Net:
    """Fresh namespaces (target, peer), a capture on the peer's interface, agents started inside."""

    def __init__(
        self,
        target_sysctls: dict | None = None,
        docker=None,
        target: Target | None = None,
        agent_deadline: float | None = None,
    ):
        """docker (a DockerRunner) with target: the target host is a container running target's agent.
        agent_deadline: how long an agent may take to start or answer (conformance.agent.Agent)."""
        LIVE.add(self)
        self.agent_deadline = agent_deadline
        self.agents: list[Agent] = []
        self.peer_sockets: list[socket.socket] = []
        self.wire = None
        self.topo = None
        self._docker, self._container = docker, None
        try:
            target_pid = None
            if docker is not None:
                # The container first: its agent is ready before its namespace joins the topology.
                self._container = f"{new_base()}c"
                self.agents.append(Agent(target.name, docker.argv(target, self._container), deadline=agent_deadline))
                target_pid = docker.pid(self._container)
            self.topo = Topology(target_sysctls, target_pid)
            self.wire = Capture(self.topo.peer)
        except BaseException:
            self.close()
            raise

    @property
    def target(self):
        return self.topo.target

    @property
    def peer(self):
        return self.topo.peer

    def start(self, target: Target) -> Agent:
        """Start target's agent inside the target namespace (under the Docker runner: the container's)."""
        if self._container:
            return self.agents[0]
        if target.link == "packet":
            return self._start_stack(target)
        argv = target.argv()
        uid, why = privilege.agent_uid(argv)
        agent = Agent(target.name, argv, launcher(self.target.ns, uid), deadline=self.agent_deadline)
        agent.uid, agent.uid_reason = uid, why
        self.agents.append(agent)
        return agent

    def _start_stack(self, target: Target) -> Agent:
        """A userspace TCP/IP stack (target.link == "packet") on the target's veth.

        The kernel of the target namespace is deafened on the veth (Host.deafen: it must not answer for
        the target's addresses); the harness opens a packet socket on the veth (CAP_NET_RAW is the
        harness's) and a socketpair for the introspection channel and passes both to the agent, which
        runs unprivileged like any other: argv + `--nic IF --fd N --state-fd M` (targets/PROTOCOL.md,
        "Introspection"). net.target.stack then answers for the target's sockets, counters and
        neighbours."""
        host = self.target
        argv = target.argv()  # built first: a build error leaves the namespace as it was
        host.deafen()
        pk = host.packet_socket()
        mine, theirs = socket.socketpair()
        try:
            argv = [*argv, "--nic", host.ifname, "--fd", str(pk.fileno()), "--state-fd", str(theirs.fileno())]
            uid, why = privilege.agent_uid(argv)
            agent = Agent(
                target.name,
                argv,
                launcher(host.ns, uid),
                deadline=self.agent_deadline,
                pass_fds=(pk.fileno(), theirs.fileno()),
            )
        except BaseException:
            mine.close()
            raise
        finally:
            pk.close()  # the agent holds its own copies
            theirs.close()
        self.peer_sockets.append(mine)  # closed with the Net
        agent.uid, agent.uid_reason = uid, why
        self.agents.append(agent)
        if agent.info.get("introspect") != "1":
            agent.kill()
            raise AgentError(
                target.name, "(start)", "a packet-link target's ready line must say introspect=1 (its own tables)"
            )
        host.stack = StackView(mine, target.name)
        return agent

    # -- the peer: the harness's own sockets in the peer namespace -----------
    def peer_socket(self, family: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        sock = self.peer.socket(family, kind)
        self.peer_sockets.append(sock)
        return sock

    def peer_listener(self, family: str, port: int = PORT, backlog: int = 16) -> socket.socket:
        sock = self.peer_socket(family)
        sock.bind((self.peer.addr(family), port))
        sock.listen(backlog)
        return sock

    def peer_connect(self, family: str, addr: str, port: int = PORT) -> socket.socket:
        """Start a non-blocking connect from the peer; check it with connected()."""
        sock = self.peer_socket(family)
        sock.setblocking(False)
        err = sock.connect_ex((addr, port))
        if err not in (0, 115):  # EINPROGRESS
            raise OSError(err, f"peer connect to {addr}:{port} failed at once")
        return sock

    def target_client(self, agent, family: str, port: int = PORT) -> Connection:
        """The target connects to a peer listener on port; the listener is left without a queue."""
        ls = self.peer_listener(family, port)
        s = agent.socket("tcp", family).h
        agent.connect(s, self.peer.addr(family), port).check("connect to the peer's listener")
        ls.settimeout(slack(WAIT))
        conn, _ = ls.accept()
        tport = agent.getsockname(s).port
        return Connection(
            agent,
            s,
            conn,
            End("target", self.target, self.target.addr(family), tport, port),
            End("peer", self.peer, self.peer.addr(family), port, tport),
        )

    def target_server(self, agent, family: str, port: int = PORT) -> Connection:
        """The peer connects to a target listener on port, which accepts it and closes the listener."""
        ls = agent.listener(self.target.addr(family), port)
        client = self.peer_connect(family, self.target.addr(family), port)
        assert connected(client) == 0, "the peer could not connect to the target's listener"
        client.setblocking(True)
        accepted = agent.accept(ls).check("accept the peer's connection")
        agent.close(ls).check("close the listener")
        pport = client.getsockname()[1]
        return Connection(
            agent,
            accepted.h,
            client,
            End("target", self.target, self.target.addr(family), port, pport),
            End("peer", self.peer, self.peer.addr(family), pport, port),
        )

    def close(self):
        for agent in self.agents:
            agent.stop()
        if self._container:
            self._docker.remove(self._container)
        for sock in self.peer_sockets:
            sock.close()
        if self.wire is not None:
            self.wire.stop()
        if self.topo is not None:
            self.topo.close()
        LIVE.discard(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- the peer's own sockets: plain Python sockets of the harness ------------------------
def connected(sock: socket.socket, timeout: float = WAIT) -> int | None:
    """Wait (bounded, scaled) for a non-blocking connect to finish. None: still in progress;
    else its errno (0 = connected). timeout=0 asks without waiting."""
    _, writable, _ = select.select([], [sock], [], slack(timeout))
    if not writable:
        return None
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def peer_recv(sock: socket.socket, size: int = 4096, timeout: float = WAIT) -> bytes:
    """One blocking recv() on a peer socket, bounded (scaled); b"" is end of file."""
    sock.setblocking(True)
    sock.settimeout(slack(timeout))
    return sock.recv(size)


def peer_recv_outcome(sock: socket.socket, timeout: float = WAIT) -> str:
    """The peer's recv(): the errno name it failed with (ECONNRESET...), or what it read."""
    try:
        data = peer_recv(sock, 4096, timeout)
    except OSError as e:
        return errno.errorcode.get(e.errno, f"errno {e.errno}") if e.errno else type(e).__name__
    return f"read {data!r}"


# -- how a connection ended: the wire, and the kernel's shutdown state ----------------------------
def how_ended(wire: Capture, end: End, timeout: float = 1.0) -> str:
    """How `end` ended its side of the connection on the wire: "FIN", "RST", "FIN, then RST", or
    "nothing" when neither a FIN nor an RST from it came within timeout (bounded, scaled).

    Judged from the first segment from `end` carrying a FIN or an RST (waiting for it), and any RST
    from it seen by then. Ask it first after a close() or shutdown(): whatever a case checks next
    (CLOSE_WAIT, TIME_WAIT, end of file) is a consequence of it."""
    from_end = lambda s: (
        s.proto == "tcp"
        and s.src == end.addr  # noqa: E731
        and s.sport == end.port
        and s.dport == end.remote_port
    )
    found = wire.wait_for(lambda s: from_end(s) and ("F" in s.flags or "R" in s.flags), timeout)
    if not found:
        return "nothing"
    if "R" in found[0].flags:
        return "RST"
    return "FIN, then RST" if [s for s in wire.segments() if from_end(s) and "R" in s.flags] else "FIN"


def assert_fin(wire: Capture, end: End, step: str = "close()", timeout: float = 1.0) -> str:
    """`end`'s step (its close() or shutdown(SHUT_WR)) sent a FIN, not an RST; fails naming what it sent."""
    how = how_ended(wire, end, timeout)
    assert how == "FIN", {
        "RST": f"the {end.role}'s {step} sent an RST, not a FIN",
        "FIN, then RST": f"the {end.role}'s {step} sent a FIN, then an RST",
        "nothing": f"the {end.role}'s {step} sent no FIN (no FIN or RST from it on the wire)",
    }[how]
    return how


SHUTDOWN = {0: "none", 1: "rd", 2: "wr", 3: "rdwr"}  # sk_shutdown: RCV_SHUTDOWN 1, SEND_SHUTDOWN 2


def shut_down(end: End) -> str | None:
    """The directions the kernel has shut down on `end`'s socket (sock_diag's INET_DIAG_SHUTDOWN):
    "none", "rd", "wr" or "rdwr"; "closed" when the socket has no file any more (close()d: an orphan
    the kernel finishes alone); None when its host has no such socket. shutdown(SHUT_WR) shows "wr";
    a FIN received adds "rd". A userspace stack's host answers from the stack's own table."""
    if end.host.stack is not None:
        return end.host.stack.shut(end.addr, end.port, end.remote_port)

    ds = ns_socket(end.host.ns, SockDiag)
    for fam in (socket.AF_INET, socket.AF_INET6):
        for m in ds.dump(fam, socket.IPPROTO_TCP, ALL_STATES):
            if (m.src, m.sport, m.dport) == (end.addr, end.port, end.remote_port):
                if not m.inode:
                    return "closed"
                return SHUTDOWN.get(m.shutdown or 0, "?")
    return None


def abort(sock: socket.socket) -> None:
    """close() with SO_LINGER {1, 0}: the peer's socket resets the connection (an RST, no FIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
