"""What one case works with: the namespaces, the wire capture, the target agent, the evidence.

The pytest fixtures (fixtures/plugin.py) build a Net per case; code outside
pytest can use it directly:

    with Net() as net:
        agent = net.start(builtin_targets()["python"])
        ...
"""
from __future__ import annotations

import socket
import time

from .agent import Agent
from .capture import Capture
from .targets import Target
from .topology import Topology, new_base

LIVE: set["Net"] = set()  # every Net not yet closed, for cleanup on interrupt


def launcher(ns: str) -> list[str]:
    """argv prefix that runs a command inside namespace ns.

    The agent dies with the harness (PR_SET_PDEATHSIG, kept across exec), so even
    a SIGKILLed pytest worker leaves no agent behind.
    """
    return ["setpriv", "--pdeathsig", "KILL", "ip", "netns", "exec", ns]


class Net:
    """Fresh namespaces (target, peer), a capture on the peer's interface, agents started inside."""

    def __init__(self, target_sysctls: dict | None = None, docker=None, target: Target | None = None):
        """docker (a DockerRunner) with target: the target host is a container running target's agent."""
        LIVE.add(self)
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
                self.agents.append(Agent(target.name, docker.argv(target.name, self._container)))
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
        agent = Agent(target.name, target.argv(), launcher(self.target.ns))
        self.agents.append(agent)
        return agent

    # -- the peer: the harness's own sockets in the peer namespace -----------
    def peer_socket(self, family: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
        sock = self.peer.socket(family, kind)
        self.peer_sockets.append(sock)
        return sock

    def peer_listener(self, family: str, port: int, backlog: int = 16) -> socket.socket:
        sock = self.peer_socket(family)
        sock.bind((self.peer.addr(family), port))
        sock.listen(backlog)
        return sock

    def peer_connect(self, family: str, addr: str, port: int) -> socket.socket:
        """Start a non-blocking connect from the peer; check it with connected()."""
        sock = self.peer_socket(family)
        sock.setblocking(False)
        err = sock.connect_ex((addr, port))
        if err not in (0, 115):  # EINPROGRESS
            raise OSError(err, f"peer connect to {addr}:{port} failed at once")
        return sock

    def target_client(self, agent, family: str, port: int):
        """The target connects to a peer listener on port: (target handle, peer's socket, target's port)."""
        ls = self.peer_listener(family, port)
        s = agent.socket("tcp", family).h
        agent.connect(s, self.peer.addr(family), port, 2.0).check()
        ls.settimeout(2.0)
        conn, _ = ls.accept()
        return s, conn, int(agent.getsockname(s).check()["port"])

    def target_server(self, agent, family: str, port: int):
        """The peer connects to a target listener on port, which accepts it and closes:
        (accepted handle, peer's socket (blocking), peer's port)."""
        ls = agent.socket("tcp", family).h
        agent.bind(ls, self.target.addr(family), port).check()
        agent.listen(ls, 4).check()
        client = self.peer_connect(family, self.target.addr(family), port)
        assert connected(client, 2.0) == 0, "the peer could not connect to the target's listener"
        client.setblocking(True)
        accepted = agent.accept(ls, 2.0).check()
        agent.close(ls).check()
        return accepted.h, client, client.getsockname()[1]

    def sockets(self, host, **match):
        """Rows of host's socket table whose fields equal every keyword given."""
        return [s for s in host.sockets() if all(getattr(s, k) == v for k, v in match.items())]

    def wait_state(self, host, state: str, timeout: float = 2.0, **match):
        """Wait (bounded) until host's table has a socket in state matching **match; return it or None."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sockets(host, state=state, **match)
            if rows or time.monotonic() >= deadline:
                return rows[0] if rows else None
            time.sleep(0.01)

    def wait_gone(self, host, timeout: float = 2.0, **match) -> bool:
        """Wait (bounded) until host has no socket matching **match; True if it went."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.sockets(host, **match):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

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


def connected(sock: socket.socket, timeout: float) -> int | None:
    """Wait (bounded) for a non-blocking connect to finish. None: still in progress; else its errno (0 = ok)."""
    import select

    _, writable, _ = select.select([], [sock], [], timeout)
    if not writable:
        return None
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
