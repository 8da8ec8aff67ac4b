"""The target listener's accept queue, seen from the peer: queue a connection, fill the queue, connect once more.

A connection a listener queues is complete (the handshake is the kernel's work)
before and without accept(): queued_client() connects and waits for that.

Seed 003 (docs/seeds.md): "当TCP连接队列满了之后 Linux并不会书中所说的拒绝连接,只是会延时连接".
A listener whose backlog in force is B queues B + 1 completed connections that
nobody accept()s. The next client's SYN is dropped without an answer (no
SYN-ACK, no RST), counted in TcpExt.ListenOverflows; the client stays in
SYN_SENT and retransmits its SYN, about 1 s later (the kernel's initial RTO).

    listen_took_effect(net, backlog, record=record)     # the backlog asked for is the one in force
    client, cport = queued_client(net, family)          # one connection, completed, not accepted
    assert_left_in_queue(net, cport)                    # ... and the runtime did not accept it either
    ports, listener = fill(net, family, PORT, backlog)  # backlog + 1 of them
    late = knock(net, family, PORT)                     # one more: only observed
    record("listen_overflows", late.overflows)
    assert_held_off(net, late, backlog)                 # judged
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from .capture import Segment, tcp
from .case import PORT, Net, connected
from .timing import RUNTIME_GRACE, holds, wait_until
from .topology import SockInfo

OVERFLOWS = "TcpExt.ListenOverflows"
RETRANSMIT_WAIT = 3.0  # s: bound on seeing the dropped SYN retransmitted (the kernel resends it ~1 s later)


def listen_took_effect(
    net: Net, asked: int, port: int = PORT, expected: int | None = None, why: str = "", record=None
) -> SockInfo:
    """The target's listener on port has the backlog its listen(asked) asks for (or `expected`, with `why`:
    a cap), from the kernel's table (the listener's Send-Q), before anything depends on it.

    record (a case's record callable): keeps it as backlog_in_force first. Returns the listener's row;
    fails naming the backlog in force: "listen(1) did not take effect: the listener's backlog (Send-Q) is 4096"."""
    listener = net.target.wait_state("LISTEN", sport=port)
    if record is not None:
        record("backlog_in_force", listener.wqueue if listener else "no listener")
    assert listener, f"the target has no listening socket on port {port} after listen({asked})"
    want = asked if expected is None else expected
    assert listener.wqueue == want, (
        f"listen({asked}) did not take effect: the listener's backlog (Send-Q) is {listener.wqueue}"
        + (f", expected {want} ({why})" if expected is not None else "")
    )
    return listener


def queued_client(
    net: Net, family: str, port: int = PORT, which: str = "the peer's connect()"
) -> tuple[socket.socket, int]:
    """Connect from the peer to the target's listener on port; the handshake must complete without accept().

    Returns the peer's socket (non-blocking) and its port. which: the connection, as the failure names it."""
    client = net.peer_connect(family, net.target.addr(family), port)
    assert connected(client) == 0, f"{which} did not complete while the target never called accept()"
    return client, client.getsockname()[1]


def assert_left_in_queue(net: Net, *ports: int, port: int = PORT) -> None:
    """The connections from the peer's `ports` stay in the target's accept queue, held by no process, for
    RUNTIME_GRACE: the program has not called accept(), so its runtime must not have either.

    An event-driven runtime (Node's libuv) accepts as soon as a connection completes: that fails here,
    naming it, rather than as a queue that holds fewer connections than expected."""

    def rows() -> dict[int, SockInfo]:
        return {r.dport: r for r in net.target.sockets("ESTABLISHED", sport=port) if r.dport in ports}

    def all_waiting() -> bool:
        now = rows()
        return len(now) == len(set(ports)) and not any(r.owned for r in now.values())

    def missing() -> list[int]:
        return sorted(set(ports) - set(rows()))

    assert wait_until(lambda: not missing()), (
        f"no ESTABLISHED server-side socket for the connection from port {missing()} on the target:\n"
        f"{net.target.table()}"
    )
    if holds(all_waiting, RUNTIME_GRACE):
        return
    taken = sorted(p for p, r in rows().items() if r.owned)
    assert not taken, (
        f"the runtime accepted the connection from port {', '.join(map(str, taken))} before accept() was called "
        f"(a process holds its socket; the program never called accept())"
    )
    raise AssertionError(
        f"the connection from port {missing()} left the target's accept queue before accept():\n{net.target.table()}"
    )


def fill(net: Net, family: str, port: int = PORT, backlog: int = 1) -> tuple[list[int], SockInfo]:
    """backlog + 1 peer connections to the target's listener on port, each completed without accept().

    Returns their client ports and the listener's row holding them (Recv-Q backlog + 1);
    fails naming the connection that did not complete, or the queue that does not hold them."""
    ports = [
        queued_client(net, family, port, f"connection {i + 1} of backlog + 1 = {backlog + 1}")[1]
        for i in range(backlog + 1)
    ]
    assert_left_in_queue(net, *ports, port=port)
    listener = net.target.wait_state("LISTEN", sport=port, rqueue=backlog + 1)
    assert listener, f"the accept queue does not hold backlog + 1 = {backlog + 1}"
    return ports, listener


@dataclass
class Late:
    """The connection one beyond a full queue: its peer socket, client port, SYNs seen, ListenOverflows rise."""

    sock: socket.socket
    port: int
    server_port: int
    syns: list[Segment]
    overflows: int

    @property
    def retransmit_s(self) -> float | None:
        """Seconds from its SYN to the first retransmission, None if none was seen."""
        return self.syns[1].time - self.syns[0].time if len(self.syns) > 1 else None


def knock(net: Net, family: str, port: int = PORT) -> Late:
    """Connect from the peer to a full queue and watch (bounded) for the SYN's retransmission.

    Only observes: assert_held_off() judges what was seen."""
    before = net.target.counters(OVERFLOWS)
    sock = net.peer_connect(family, net.target.addr(family), port)
    lport = sock.getsockname()[1]
    syns = net.wire.wait_for(tcp(sport=lport, flags="S"), timeout=RETRANSMIT_WAIT, count=2)
    return Late(sock, lport, port, syns, net.target.rise(before)[OVERFLOWS])


def assert_held_off(net: Net, late: Late, backlog: int) -> None:
    """The late connection was delayed, not refused nor completed: its SYN retransmitted, no SYN-ACK
    and no RST to it, the client in SYN_SENT, ListenOverflows risen. backlog: the one in force."""
    n = backlog + 2
    assert len(late.syns) >= 2, (
        f"connection {n} was not held off: its SYN was not retransmitted (a backlog above {backlog} in force?)"
    )
    assert connected(late.sock, 0) is None, f"connection {n} completed at once beyond a full queue (backlog {backlog})"
    assert net.peer.wait_state("SYN_SENT", sport=late.port, dport=late.server_port), (
        "the late client is not in SYN_SENT"
    )
    assert not net.wire.tcp(dport=late.port, has="R"), "the full queue answered the late SYN with an RST (refused)"
    assert not net.wire.tcp(dport=late.port, has="S"), "the full queue answered the late SYN with a SYN-ACK"
    assert late.overflows >= 1, f"{OVERFLOWS} did not rise for the dropped SYN"
