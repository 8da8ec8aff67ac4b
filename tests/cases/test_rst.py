"""What makes TCP send an RST besides a SYN to a closed port, and what the other side sees.

Seed 002: "RST是TCP在发生错误时发送的一种TCP分节 ... 产生RST的条件: 目的地为某端口的SYN到达,然而并没有
监听该端口的服务; TCP想取消一个已有连接; TCP接收到一个根本不存在的连接上的分节" — an RST is sent when
TCP wants to abort an existing connection, and when a segment arrives for a connection that
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
import socket
import time

from conformance import shaping
from conformance.capture import tcp
from conformance.topology import delta

from .test_four_way_close import PORT, peer_recv

DATA = b"data the target never reads"


def peer_error(sock, timeout=2.0) -> str:
    """The peer's recv(): the errno name it failed with, or what it read."""
    try:
        data = peer_recv(sock, 4096, timeout)
    except ConnectionResetError:
        return "ECONNRESET"
    except OSError as e:
        return f"errno {e.errno}"
    return f"read {data!r}"


def counters(host, *keys):
    c = host.counters()
    return {k: c.get(k, 0) for k in keys}


def rises(before, after):
    return delta(before, after, *before)


def no_trace(net, mine, theirs):
    """Neither side keeps a socket for the connection, TIME_WAIT or otherwise."""
    assert not net.sockets(net.target, **mine), f"the target still has the connection: {net.sockets(net.target)}"
    assert not net.sockets(net.peer, **theirs), f"the peer still has the connection: {net.sockets(net.peer)}"
    assert not net.sockets(net.target, state="TIME_WAIT"), "an aborted connection left a TIME_WAIT on the target"
    assert not net.sockets(net.peer, state="TIME_WAIT"), "an aborted connection left a TIME_WAIT on the peer"


KEYS = ("Tcp.OutRsts", "TcpExt.TCPAbortOnData", "TcpExt.TCPAbortOnClose")


def test_rst_linger_zero(net, agent, family, record):
    """SO_LINGER {1, 0} then close(): an RST, not a FIN; the peer's recv() fails with ECONNRESET."""
    s, conn, tport = net.target_client(agent, family, PORT)
    mine, theirs = dict(sport=tport, dport=PORT), dict(sport=PORT, dport=tport)
    agent.setsockopt(s, "linger", 1, 0).check()
    linger = agent.getsockopt(s, "linger").check()["value"]
    assert linger == "1,0", f"SO_LINGER set to {{1, 0}} reads back {linger}"
    last = net.wire.expect(tcp(sport=tport, dport=PORT, flags="A"), "the target's ACK ending the handshake")
    before = counters(net.target, *KEYS)

    closed = agent.close(s).check()
    rst = net.wire.expect(tcp(sport=tport, dport=PORT, has="R"), "an RST from the target at close()")
    assert not net.wire.tcp(sport=tport, has="F"), "the target sent a FIN: a zero linger close must abort"
    assert rst.seq == last.seq, f"the RST must carry the connection's next sequence number {last.seq}: {rst}"
    err = peer_error(conn)
    assert err == "ECONNRESET", f"the peer's recv() after the RST must fail with ECONNRESET, got {err}"
    no_trace(net, mine, theirs)
    up = rises(before, counters(net.target, *KEYS))
    assert up["Tcp.OutRsts"] == 1, f"Tcp.OutRsts must rise by 1 on the target: {up}"

    record("linger", linger)
    record("close_ms", f"{closed.ms:.3f}")
    record("rst", str(rst))
    record("counters", " ".join(f"{k}+{v}" for k, v in up.items()))
    record.key("RST peer ECONNRESET")


def test_rst_linger_zero_received(net, agent, family, record):
    """The peer aborts (SO_LINGER {1, 0}, close): the target's recv() fails with ECONNRESET."""
    s, conn, tport = net.target_client(agent, family, PORT)
    mine, theirs = dict(sport=tport, dport=PORT), dict(sport=PORT, dport=tport)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") + (0).to_bytes(4, "little"))
    conn.close()
    net.wire.expect(tcp(sport=PORT, dport=tport, has="R"), "the peer's RST")
    assert not net.wire.tcp(sport=PORT, dport=tport, has="F"), "the peer sent a FIN instead of aborting"

    r = agent.recv(s, 100, 2.0)
    assert r.errno == "ECONNRESET", f"the target's recv() after the peer's RST must fail with ECONNRESET: {r}"
    no_trace(net, mine, theirs)
    agent.close(s).check()
    assert not net.wire.tcp(sport=tport, dport=PORT, has="F"), "the target sent a FIN on a reset connection"
    record("recv_errno", r.errno)
    record.key(f"recv {r.errno}")


def test_rst_unread_data(net, agent, family, record):
    """close() with unread data in the receive buffer sends an RST instead of a FIN."""
    s, client, pport = net.target_server(agent, family, PORT)
    mine, theirs = dict(sport=PORT, dport=pport), dict(sport=pport, dport=PORT)
    client.sendall(DATA)
    data = net.wire.expect(tcp(sport=pport, dport=PORT, has="P"), "the peer's data")
    unread = net.wait_state(net.target, "ESTABLISHED", rqueue=len(DATA), **mine)
    assert unread, f"the {len(DATA)} bytes are not waiting unread in the target's Recv-Q: {net.sockets(net.target)}"
    before = counters(net.target, *KEYS)

    agent.close(s).check()
    rst = net.wire.expect(tcp(sport=PORT, dport=pport, has="R"), "an RST from the target at close()")
    assert not net.wire.tcp(sport=PORT, dport=pport, has="F"), \
        "the target sent a FIN: close() with unread data must abort the connection"
    assert rst.has("A") and rst.ack == (data.seq + len(DATA)) % 2**32, \
        f"the RST must acknowledge the data that was received and tossed (ack {data.seq + len(DATA)}): {rst}"
    err = peer_error(client)
    assert err == "ECONNRESET", f"the peer's recv() after the RST must fail with ECONNRESET, got {err}"
    no_trace(net, mine, theirs)
    up = rises(before, counters(net.target, *KEYS))
    assert up["TcpExt.TCPAbortOnClose"] == 1, f"TcpExt.TCPAbortOnClose (unread data tossed) must rise by 1: {up}"
    assert up["Tcp.OutRsts"] == 1, f"Tcp.OutRsts must rise by 1 on the target: {up}"

    record("unread_bytes", unread.rqueue)
    record("rst", str(rst))
    record("counters", " ".join(f"{k}+{v}" for k, v in up.items()))
    record.key(f"RST, {unread.rqueue}B unread")


DROP_BURST = 40  # bytes: smaller than any frame (a bare TCP segment is 54 bytes), so tbf drops every one


def remove_root_qdisc(host):
    host.netlink(lambda ipr: ipr.tc("del", index=host.ifindex, handle=shaping.ROOT, root=True))
LATE = b"data for a connection that is gone"


def test_rst_no_connection(net, agent, family, record):
    """A segment for a connection the target no longer has is answered with an RST (seq = the segment's ack)."""
    s, conn, tport = net.target_client(agent, family, PORT)
    mine, theirs = dict(sport=tport, dport=PORT), dict(sport=PORT, dport=tport)
    agent.setsockopt(s, "linger", 1, 0).check()

    # The target aborts; its RST never reaches the peer.
    shaping.install(net.target, burst=DROP_BURST)
    before = counters(net.target, *KEYS)
    abort_at = time.time()
    agent.close(s).check()
    dropped = shaping.stats(net.target).get("drops", 0)
    aborted = counters(net.target, *KEYS)
    remove_root_qdisc(net.target)
    assert rises(before, aborted)["Tcp.OutRsts"] == 1, "the target's kernel sent no RST at the aborting close()"
    assert dropped >= 1, "the abort's RST was not dropped on the target's egress"
    assert not [x for x in net.wire.tcp(sport=tport) if x.time >= abort_at], \
        "a segment from the target reached the peer after the abort"
    assert not net.sockets(net.target, **mine), \
        f"the target still has a socket for the aborted connection: {net.sockets(net.target)}"
    assert net.wait_state(net.peer, "ESTABLISHED", **theirs), "the peer must still believe the connection is open"

    # The peer, unaware, sends data: the target answers with an RST, and the peer learns of the abort.
    conn.sendall(LATE)
    data = net.wire.expect(tcp(sport=PORT, dport=tport, has="P"), "the peer's data")
    rst = net.wire.expect(tcp(sport=tport, dport=PORT, has="R"), "an RST answering the data")
    assert rst.flags == "R" and rst.seq == data.ack, \
        f"an RST for an unknown connection takes its seq from the segment's ack ({data.ack}), without ACK: {rst}"
    err = peer_error(conn)
    assert err == "ECONNRESET", f"the peer's recv() after the RST must fail with ECONNRESET, got {err}"
    up = rises(aborted, counters(net.target, *KEYS))
    assert up["Tcp.OutRsts"] == 1, f"Tcp.OutRsts must rise by 1 for the answer: {up}"
    no_trace(net, mine, theirs)

    record("dropped_at_abort", dropped)
    record("rst", str(rst))
    record.key("RST seq=ack")
