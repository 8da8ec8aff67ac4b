"""What makes TCP send an RST besides a SYN to a closed port, and what the other side sees.

Seed 002 (docs/seeds.md): "RST是TCP在发生错误时发送的一种TCP分节 ... 产生RST的条件: 目的地为某端口的SYN到达,
然而并没有监听该端口的服务; TCP想取消一个已有连接; TCP接收到一个根本不存在的连接上的分节" — an RST is sent
when TCP wants to abort an existing connection, and when a segment arrives for a connection that
does not exist (the SYN to a closed port is test_refused).

Aborting a connection: close() with SO_LINGER {on, 0}, and close() with unread data in the
receive buffer (RFC 2525 2.17), each send an RST instead of a FIN. The peer's next recv()
fails with ECONNRESET, and neither side keeps a TIME_WAIT. The kernel counts them apart:
unread data as TcpExt.TCPAbortOnClose, the zero linger as TcpExt.TCPAbortOnData.

A segment for a connection that does not exist: the target aborts its connection while
the peer does not learn of it (the abort's RST is dropped on the target's egress by a
tbf qdisc whose bucket is smaller than any frame, removed right after); the peer then
sends data, and the target's kernel, which has no socket for it, answers with an RST
whose sequence number is the data segment's acknowledgment number (RFC 793 "Reset
Generation").
"""

import time

from conformance import shaping
from conformance.capture import tcp
from conformance.case import abort, how_ended, peer_recv_outcome
from conformance.timing import holds, wait_until

DATA = b"data the target never reads"
LATE = b"data for a connection that is gone"
COUNTERS = ("Tcp.OutRsts", "TcpExt.TCPAbortOnData", "TcpExt.TCPAbortOnClose")
DROP_BURST = 40  # bytes: smaller than any frame (a bare TCP segment is 54 bytes), so tbf drops every one


def rises(up: dict) -> str:
    """Counter rises as text; a counter the target does not report (a userspace stack's) says so."""
    return " ".join([f"{k}+{v}" for k, v in up.items()] + [f"{k} not reported" for k in getattr(up, "unreported", ())])


def target_reset(net, c, before: dict, what: str, record):
    """The target's RST on the wire, what the peer's recv() then returns, and how the target's counters
    rose since before (each recorded): (rst, peer's recv outcome, rises)."""
    rst = net.wire.expect(tcp(**c.target.match, has="R"), what)
    got = peer_recv_outcome(c.sock)
    up = net.target.rise(before)
    record("rst", rst)
    record("peer_recv", got)
    record("counters", rises(up))
    return rst, got, up


def linger_zero(agent, c, record):
    """SO_LINGER {1, 0} on the target's connection, read back (nothing else shows it) before the close."""
    agent.setsockopt(c.handle, "linger", 1, 0).check("set SO_LINGER {1, 0}")
    linger = agent.getsockopt(c.handle, "linger").value
    record("linger", linger)
    assert linger == "1,0", f"SO_LINGER set to {{1, 0}} reads back {linger}"


def closed_with_rst(net, c, why: str, record):
    """The first thing after the target's aborting close(): it ended the connection with an RST, not a FIN."""
    how = how_ended(net.wire, c.target)
    record("close_sent", how)
    assert how == "RST", (
        f"the target's close() {why} "
        + {
            "FIN": "sent a FIN, not an RST",
            "FIN, then RST": "sent a FIN before its RST: it did not abort",
            "nothing": "sent nothing: no RST (and no FIN) from it on the wire",
        }[how]
    )


def no_trace(c):
    """Neither side keeps a socket for the connection, TIME_WAIT or otherwise."""
    assert not c.target.sockets(), "the target still has the connection"
    assert not c.peer.sockets(), "the peer still has the connection"
    assert not c.target.host.sockets("TIME_WAIT"), "an aborted connection left a TIME_WAIT on the target"
    assert not c.peer.host.sockets("TIME_WAIT"), "an aborted connection left a TIME_WAIT on the peer"


def test_rst_linger_zero(net, agent, family, record):
    """SO_LINGER {1, 0} then close(): an RST, not a FIN; the peer's recv() fails with ECONNRESET."""
    c = net.target_client(agent, family)
    record.key("RST peer ECONNRESET")
    linger_zero(agent, c, record)
    last = net.wire.expect(tcp(**c.target.match, flags="A"), "the target's ACK ending the handshake")
    before = net.target.counters(*COUNTERS)

    c.close("target")
    closed_with_rst(net, c, "with SO_LINGER {1, 0}", record)
    rst, got, up = target_reset(net, c, before, "an RST from the target at close()", record)
    assert not net.wire.tcp(**c.target.match, has="F"), "the target sent a FIN: a zero linger close must abort"
    assert rst.seq == last.seq, f"the RST must carry the connection's next sequence number {last.seq}: {rst}"
    assert got == "ECONNRESET", f"the peer's recv() after the RST must fail with ECONNRESET, got {got}"
    no_trace(c)
    assert up["Tcp.OutRsts"] == 1, f"Tcp.OutRsts must rise by 1 on the target: {up}"


def test_rst_linger_zero_received(net, agent, family, record):
    """The peer aborts (SO_LINGER {1, 0}, close): the target's recv() fails with ECONNRESET."""
    c = net.target_client(agent, family)
    abort(c.sock)
    net.wire.expect(tcp(**c.peer.match, has="R"), "the peer's RST")
    assert not net.wire.tcp(**c.peer.match, has="F"), "the peer sent a FIN instead of aborting"

    r = agent.recv(c.handle, 100)
    record("recv_errno", r.outcome)
    record.key(f"recv {r.outcome}")
    assert r.errno == "ECONNRESET", f"the target's recv() after the peer's RST must fail with ECONNRESET: {r}"
    no_trace(c)
    c.close("target")
    assert not net.wire.tcp(**c.target.match, has="F"), "the target sent a FIN on a reset connection"


def test_rst_unread_data(net, agent, family, record):
    """close() with unread data in the receive buffer sends an RST instead of a FIN."""
    c = net.target_server(agent, family)
    c.sock.sendall(DATA)
    data = net.wire.expect(tcp(**c.peer.match, has="P"), "the peer's data")

    # The program never calls recv(): the data waits in the Recv-Q, where the runtime leaves it too
    # (an event loop that reads on its own would not).
    def waiting():
        return [s for s in c.target.sockets("ESTABLISHED") if s.rqueue == len(DATA)]

    unread = wait_until(waiting)
    record("unread_bytes", unread[0].rqueue if unread else 0)
    assert unread and holds(waiting), (
        f"the runtime read the {len(DATA)} bytes before recv() was called: the target's kernel acknowledged them "
        f"and its Recv-Q emptied on its own:\n{net.target.table()}"
        if net.wire.wait_for(tcp(**c.target.match, has="A", ack=data.seq + len(DATA)), timeout=0.5)
        else f"the {len(DATA)} bytes are not waiting unread in the target's Recv-Q:\n{net.target.table()}"
    )
    record.key(f"RST, {unread[0].rqueue}B unread")
    before = net.target.counters(*COUNTERS)

    c.close("target")
    closed_with_rst(net, c, f"with {unread[0].rqueue} bytes unread", record)
    rst, got, up = target_reset(net, c, before, "an RST from the target at close()", record)
    assert not net.wire.tcp(**c.target.match, has="F"), (
        "the target sent a FIN: close() with unread data must abort the connection"
    )
    assert rst.has("A") and rst.ack == (data.seq + len(DATA)) % 2**32, (
        f"the RST must acknowledge the data that was received and tossed (ack {data.seq + len(DATA)}): {rst}"
    )
    assert got == "ECONNRESET", f"the peer's recv() after the RST must fail with ECONNRESET, got {got}"
    no_trace(c)
    if "TcpExt.TCPAbortOnClose" in up:  # a userspace stack keeps none: recorded as not checked
        assert up["TcpExt.TCPAbortOnClose"] == 1, f"TcpExt.TCPAbortOnClose (unread data tossed) must rise by 1: {up}"
    assert up["Tcp.OutRsts"] == 1, f"Tcp.OutRsts must rise by 1 on the target: {up}"


def test_rst_no_connection(net, agent, family, record):
    """A segment for a connection the target no longer has is answered with an RST (seq = the segment's ack)."""
    c = net.target_client(agent, family)
    record.key("RST seq=ack")
    linger_zero(agent, c, record)

    # The target aborts; its RST never reaches the peer.
    shaping.install(net.target, burst=DROP_BURST)
    before = net.target.counters(*COUNTERS)
    abort_at = time.time()
    c.close("target")
    dropped = shaping.stats(net.target).get("drops", 0)
    at_abort = net.target.rise(before)
    aborted = net.target.counters(*COUNTERS)
    shaping.remove(net.target)
    record("counters_at_abort", rises(at_abort))
    record("dropped_at_abort", dropped)
    assert dropped >= 1, "the abort's RST was not dropped on the target's egress"
    assert not [x for x in net.wire.tcp(sport=c.target.port) if x.time >= abort_at], (
        "a segment from the target reached the peer after the abort"
    )
    assert not c.target.sockets(), "the target still has a socket for the aborted connection"
    assert c.peer.wait_state("ESTABLISHED"), "the peer must still believe the connection is open"

    # The peer, unaware, sends data: the target answers with an RST, and the peer learns of the abort.
    c.sock.sendall(LATE)
    data = net.wire.expect(tcp(**c.peer.match, has="P"), "the peer's data")
    rst, got, up = target_reset(net, c, aborted, "an RST answering the data", record)
    assert rst.flags == "R" and rst.seq == data.ack, (
        f"an RST for an unknown connection takes its seq from the segment's ack ({data.ack}), without ACK: {rst}"
    )
    assert got == "ECONNRESET", f"the peer's recv() after the RST must fail with ECONNRESET, got {got}"
    assert up["Tcp.OutRsts"] == 1, f"Tcp.OutRsts must rise by 1 for the answer: {up}"
    no_trace(c)
    # Last, once the wire has been judged: the target counted the abort's RST, which its qdisc dropped.
    assert at_abort["Tcp.OutRsts"] == 1, (
        f"the target's RST at the aborting close() (dropped on its egress: {dropped}) is not counted in "
        f"Tcp.OutRsts: {rises(at_abort)}"
    )
