"""tcp_abort_on_overflow: a final ACK that meets a full accept queue is reset (1) or dropped (0).

Seed 003 (docs/seeds.md): "服务器没有及时调用accept函数取走完成连接的队列怎么办? ... 当TCP连接队列满了之后
Linux并不会书中所说的拒绝连接,只是会延时连接". The delay is the default
(net.ipv4.tcp_abort_on_overflow=0, which governs IPv6 too); with 1 the kernel
refuses, but only in one place: when the client's final ACK completes a
handshake while the accept queue is full. (A SYN that meets a full queue is
dropped whatever the setting: test_queue_full.) The target is the server: its
agent listens with backlog 1 (the queue holds 2) and does not accept; the peer
is the client.

Getting a final ACK to meet a full queue needs a race: two handshakes whose
SYNs are both answered while the queue still has room. The SYN-ACKs are held
back in the target's egress (tbf with queued filler frames, conformance/shaping.py):
one connection waits in the queue, two more clients connect back to back,
both SYNs are answered (two requests in SYN_RECV) while the SYN-ACKs wait;
when they leave, the first final ACK fills the queue and the second meets a
full one. What the target sends after the SYN-ACKs is held again, so the
client of the second is seen ESTABLISHED before the server's answer arrives.
(With backlog 0 the second SYN would get a SYN cookie, since a second pending
request already exceeds the backlog, and a cookie's ACK meeting a full queue
is dropped without RST whatever the setting.)

- tcp_abort_on_overflow=1: an RST answers that ACK (TcpExt.EmbryonicRsts);
  the client's connect() had succeeded, its first recv() fails with ECONNRESET.
- tcp_abort_on_overflow=0: the ACK is dropped (ListenOverflows), the server
  keeps the request (SYN_RECV) and retransmits the SYN-ACK 1 s later; the
  client believes it is ESTABLISHED; no RST.
After either, the target's accept() hands over exactly the two queued
connections; a third accept() times out (the raced one is not in the queue).
"""

import errno
import socket
from dataclasses import dataclass

from conformance import queue, shaping
from conformance.capture import tcp
from conformance.case import PORT, connected, peer_recv_outcome

BACKLOG = 1  # the accept queue holds BACKLOG + 1 = 2
HOLD = 0.6  # s: how long the target's SYN-ACKs (and then its answer to the raced ACK) wait in its egress;
# long enough that a loaded machine still sends both racers' SYNs inside it, short of the 1 s SYN-ACK timer
RACE_WAIT = 5.0  # s: the racers complete once the held SYN-ACKs leave (bounded, scaled by the slack)
COUNTERS = ("TcpExt.ListenOverflows", "TcpExt.EmbryonicRsts")


@dataclass
class Race:
    ls: int  # the agent's listening handle
    queued_port: int  # the connection already waiting in the queue
    early: socket.socket  # the racer whose final ACK fills the queue
    late: socket.socket  # the racer whose final ACK meets the full queue
    early_port: int
    late_port: int
    late_syn: object
    late_synack: object
    late_ack: object
    before: dict  # the target's COUNTERS before the race
    holds: tuple
    late_reset: bool = False  # the server's RST had already reached the client when its connect() was read


def test_abort_on_overflow_rst(net, agent, family, record):
    """tcp_abort_on_overflow=1: the ACK meeting the full queue gets an RST; the client's recv() ECONNRESET."""
    check_reset(net, agent, race(net, agent, family, record, abort=1), record)


def test_abort_on_overflow_off(net, agent, family, record):
    """tcp_abort_on_overflow=0: that ACK is dropped, the SYN-ACK retransmitted; the client believes it is connected."""
    check_dropped(net, agent, race(net, agent, family, record, abort=0), record)


def test_overflow_final_ack(net, agent, family, record):
    """A final ACK meeting a full queue, under the run's own stack configuration (--profile / --sysctl):
    reset with tcp_abort_on_overflow=1, dropped with 0. The matrix shows which, so two runs
    (say linux-default and abort-on-overflow) differ here."""
    setting = net.target.sysctl("net.ipv4.tcp_abort_on_overflow")
    record("tcp_abort_on_overflow", setting)
    r = race(net, agent, family, record, abort=None)
    (check_reset if setting == "1" else check_dropped)(net, agent, r, record)


def race(net, agent, family, record, abort: int | None) -> Race:
    """abort: set tcp_abort_on_overflow to it; None keeps the value in force (the run's stack profile)."""
    server = net.target.addr(family)
    if abort is not None:
        assert net.target.sysctl("net.ipv4.tcp_abort_on_overflow", str(abort)) == str(abort), (
            f"could not set net.ipv4.tcp_abort_on_overflow={abort} in the target namespace"
        )
    shaping.install(net.target)
    ls = agent.listener(server, PORT, BACKLOG)
    # Kernel: listen(1) took effect (the listener's Send-Q): the race needs a queue that holds exactly 2.
    queue.listen_took_effect(net, BACKLOG, record=record)

    # One connection waits in the queue (it has room for one more).
    queued, queued_port = queue.queued_client(net, family, which="the first connection")
    queue.assert_left_in_queue(net, queued_port)
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=1), (
        "the accept queue does not hold the first connection: the listener must leave it there until accept()"
    )
    before = net.target.counters(*COUNTERS)

    # Two more, back to back, while the target's SYN-ACKs are held in its egress.
    hold1 = shaping.hold(net, net.target, HOLD)
    early = net.peer_connect(family, server, PORT)
    late = net.peer_connect(family, server, PORT)
    early_port, late_port = early.getsockname()[1], late.getsockname()[1]
    for port in (early_port, late_port):
        assert net.target.wait_state("SYN_RECV", sport=PORT, dport=port), (
            f"the SYN from port {port} was not answered while the queue had room"
        )
    hold2 = shaping.hold(net, net.target, HOLD)  # what the target sends after the SYN-ACKs waits again

    # Both clients complete their handshake: connect() succeeds for both.
    assert connected(early, RACE_WAIT) == 0, "the first racer's connect() did not succeed"
    # On a slow machine the server's answer to the late racer's ACK (an RST, with abort on overflow)
    # can arrive before the harness reads the connect's result: then SO_ERROR is that reset, which
    # reading it consumes. The connect had succeeded all the same (its final ACK is on the wire, below).
    late_result = connected(late, RACE_WAIT)
    assert late_result in (0, errno.ECONNRESET), "the second racer's connect() did not succeed"
    if late_result == 0:
        assert net.peer.wait_state("ESTABLISHED", sport=late_port, dport=PORT), (
            "the second racer's client is not ESTABLISHED after its connect() succeeded"
        )

    # Wire: the race happened as built: the second SYN arrived before the first SYN-ACK left.
    late_syn = net.wire.expect(tcp(sport=late_port, flags="S"), "the second racer's SYN")
    early_synack = net.wire.expect(tcp(dport=early_port, flags="SA"), "the first racer's SYN-ACK")
    late_synack = net.wire.expect(tcp(dport=late_port, flags="SA", ack=late_syn.seq + 1), "the second racer's SYN-ACK")
    late_ack = net.wire.expect(tcp(sport=late_port, flags="A", ack=late_synack.seq + 1), "the second racer's final ACK")
    early_ack = net.wire.expect(tcp(sport=early_port, flags="A"), "the first racer's final ACK")
    assert late_syn.time < early_synack.time, (
        f"construction: the second SYN ({late_syn}) came after the first SYN-ACK ({early_synack}); hold {hold1}"
    )
    assert early_ack.time <= late_ack.time, "construction: the first racer's ACK did not arrive first"
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=BACKLOG + 1), (
        "the accept queue is not full after the first racer's ACK"
    )
    return Race(
        ls,
        queued_port,
        early,
        late,
        early_port,
        late_port,
        late_syn,
        late_synack,
        late_ack,
        before,
        (hold1, hold2),
        late_result == errno.ECONNRESET,
    )


def check_reset(net, agent, r: Race, record):
    record("holds", "; ".join(map(str, r.holds)))
    # Wire: an RST answers the final ACK that met the full queue, with the SYN-ACK's seq + 1.
    rst = net.wire.expect(
        tcp(dport=r.late_port, has="R"), "an RST answering the ACK that met a full queue", timeout=2.0
    )
    record("rst", str(rst))
    assert rst.flags == "R" and rst.seq == (r.late_synack.seq + 1) % 2**32, (
        f"the RST must carry the SYN-ACK's seq + 1 ({r.late_synack.seq + 1}): {rst}"
    )
    assert rst.time >= r.late_ack.time, "the RST came before the final ACK"
    assert not net.wire.tcp(dport=r.early_port, has="R"), "the connection that fit in the queue was reset"

    # API (client): connect() succeeded; the first recv() fails with ECONNRESET.
    client_recv = "ECONNRESET" if r.late_reset else peer_recv_outcome(r.late)
    record("client_recv", client_recv)
    record.key(f"RST {client_recv}")
    assert client_recv == "ECONNRESET", f"the client's first recv() must fail with ECONNRESET, got {client_recv}"

    # Kernel: the server dropped the request and counted both the overflow and the reset.
    assert not net.target.sockets(dport=r.late_port), "the server still has the reset connection"
    overflows = net.target.wait_rise(r.before, "TcpExt.ListenOverflows", 1)
    resets = net.target.wait_rise(r.before, "TcpExt.EmbryonicRsts", 1)
    record("listen_overflows", overflows)
    record("embryonic_rsts", resets)
    assert overflows >= 1, "TcpExt.ListenOverflows did not rise"
    assert resets >= 1, "TcpExt.EmbryonicRsts did not rise"

    accept_all(agent, r, record)


def check_dropped(net, agent, r: Race, record):
    record("holds", "; ".join(map(str, r.holds)))
    # Wire: no RST; the server retransmits the SYN-ACK (same seq) and the client ACKs it again.
    synacks = net.wire.wait_for(tcp(dport=r.late_port, flags="SA"), timeout=3.0, count=2)
    record("synacks", len(synacks))
    assert len(synacks) >= 2, "the server did not retransmit the SYN-ACK after dropping the final ACK"
    retrans_ms = (synacks[1].time - r.late_syn.time) * 1000  # the request's timer runs from the SYN
    record("syn_to_synack_retransmit_ms", f"{retrans_ms:.0f}")
    record.key("dropped, SA again", f"{retrans_ms / 1000:.1f}s")
    assert synacks[1].seq == synacks[0].seq, f"the retransmitted SYN-ACK has another seq: {synacks[1]}"
    net.wire.expect(
        lambda s: s.proto == "tcp" and s.sport == r.late_port and s.flags == "A" and s.time > synacks[1].time,
        "the client's ACK of the retransmitted SYN-ACK",
    )
    assert not net.wire.tcp(dport=r.late_port, has="R"), "an RST answered the ACK: tcp_abort_on_overflow=0 drops it"
    assert not net.wire.tcp(sport=r.late_port, has="R"), "the client reset the connection"

    # Kernel: the client is ESTABLISHED with no error; the server has only the request (not in the queue).
    assert net.peer.wait_state("ESTABLISHED", sport=r.late_port, dport=PORT), "the client is not ESTABLISHED"
    assert r.late.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0, "the client has a pending error"
    assert net.target.wait_state("SYN_RECV", sport=PORT, dport=r.late_port), (
        "the server does not keep the request in SYN_RECV"
    )
    assert not net.target.sockets("ESTABLISHED", dport=r.late_port), (
        "the server has an ESTABLISHED socket for the connection whose ACK met a full queue"
    )
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=BACKLOG + 1), "the accept queue is not full"
    overflows = net.target.wait_rise(r.before, "TcpExt.ListenOverflows", 2)
    resets = net.target.rise(r.before)["TcpExt.EmbryonicRsts"]
    record("listen_overflows", overflows)
    assert overflows >= 2, (
        f"TcpExt.ListenOverflows rose by {overflows}: both ACKs (first, and after the retransmission) must count"
    )
    assert resets == 0, f"TcpExt.EmbryonicRsts rose by {resets}"

    accept_all(agent, r, record)


def accept_all(agent, r: Race, record):
    """The target's accept(): the two queued connections, then a timeout (the raced one is not in the queue)."""
    ports = sorted(agent.accept(r.ls, 1.0).check("accept a queued connection").port for _ in range(BACKLOG + 1))
    third = agent.accept(r.ls, 0.2)
    record("accepted_ports", ports)
    record("third_accept", third.outcome)
    assert ports == sorted([r.queued_port, r.early_port]), (
        f"accept() returned ports {ports}, the queued connections are {sorted([r.queued_port, r.early_port])}"
    )
    assert third.errno == "timeout", (
        f"a third accept() must time out (port {r.late_port} never entered the queue), got {third}"
    )
