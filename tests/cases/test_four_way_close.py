"""The four-way close: FIN and ACK each way, and the states each side passes through.

Seed 003 (TCP 四次挥手): "客户端A向服务器发送FIN ... 服务器B接受到这个FIN 它发回一个ACK确认报文
确认序列号+1 (客户端处于FIN_WAIT2) ... 服务器B关闭客户端A的连接发送一个FIN报文 ... 客户端A 接受到
server的FIN报文 回复ACK报文确认 此时客户端进入TIME_WAT" and "FIN报文 告诉自己 对方没有数据进行
发送 并不能阻止自己发送数据": the active closer goes FIN_WAIT_1 (its FIN not yet acked),
FIN_WAIT_2, TIME_WAIT; the passive side CLOSE_WAIT (its recv() returns 0, end of file), then
LAST_ACK (its own FIN not yet acked) and closed. A FIN closes one direction only: after
shutdown(SHUT_WR) the other side reads end of file and can still send data that the
half-closed side reads.

FIN_WAIT_1 and LAST_ACK last one round trip (microseconds on a veth). To make them
observable, the ACK that ends them is held back for a bounded time, and nothing is dropped:
the acking side's egress is a tbf qdisc (this kernel has tbf, no netem) with filler frames
queued just before, so its next packet, the ACK, leaves about HOLD seconds later
(conformance/shaping.py). So that the side waiting for that ACK does not retransmit its
FIN meanwhile, both namespaces raise the minimum retransmission timeout
(net.ipv4.tcp_rto_min_us) to 3 s for these cases.
"""
import socket
import time
from conformance import shaping
from conformance.capture import tcp

PORT = 7878
HOLD = 0.4  # s: how long the ACK ending FIN_WAIT1 / LAST_ACK is held back
STATE_WAIT = 3.0  # bound on waiting out a held ACK
RTO_MIN_US = 3000000  # no retransmission during a hold (see prepare_holds)


def prepare_holds(net):
    """tbf on both veth ends, and a minimum retransmission timeout of 3 s in both namespaces.

    While an ACK is held, the side waiting for it would otherwise retransmit its FIN
    after 200 ms; the duplicate ACK that answers it reaches a socket that is already
    gone, which answers with an RST, and that RST kills the other side's TIME_WAIT
    (RFC 1337 assassination, net.ipv4.tcp_rfc1337=0). Applies to sockets made after this.
    """
    for host in (net.target, net.peer):
        host.sysctl("net.ipv4.tcp_rto_min_us", str(RTO_MIN_US))
        shaping.install(host)


def no_drops(net):
    for host in (net.target, net.peer):
        drops = shaping.stats(host).get("drops", 0)
        assert drops == 0, f"the tbf on the {host.role}'s egress dropped {drops} packet(s): a hold must only delay"


# -- connections -------------------------------------------------------------------------
def peer_recv(sock, size=4096, timeout=2.0):
    sock.settimeout(timeout)
    return sock.recv(size)


def test_four_way_close_target_active(net, agent, family, record):
    """The target's server closes first: FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT; the peer CLOSE_WAIT -> LAST_ACK."""
    prepare_holds(net)
    s, client, pport = net.target_server(agent, family, PORT)
    ta, pa = net.target.addr(family), net.peer.addr(family)
    mine, theirs = dict(sport=PORT, dport=pport), dict(sport=pport, dport=PORT)

    # 1. The target closes; the peer's ACK of its FIN is held back: the target waits in FIN_WAIT1.
    held = shaping.hold(net, net.peer, HOLD)
    closed = agent.close(s).check()
    fw1 = net.wait_state(net.target, "FIN_WAIT1", **mine)
    fw1_seen = time.time()
    assert fw1, f"the target did not enter FIN_WAIT1 after close(): {net.sockets(net.target)}"
    assert net.wait_state(net.peer, "CLOSE_WAIT", **theirs), "the peer did not enter CLOSE_WAIT on the FIN"
    assert peer_recv(client) == b"", "the peer's recv() after the target's FIN must return 0 (end of file)"
    fw2 = net.wait_state(net.target, "FIN_WAIT2", timeout=STATE_WAIT, **mine)
    assert fw2, f"the target did not move to FIN_WAIT2 when its FIN was acked: {net.sockets(net.target)}"
    fin_t, ack_p = net.wire.expect_fin_acked(ta, PORT, pport, "target", STATE_WAIT)
    assert ack_p.time > fw1_seen, "FIN_WAIT1 was seen after the FIN's ACK reached the wire: not the held state"

    # 2. The peer closes; the target's ACK of the peer's FIN is held back: the peer waits in LAST_ACK.
    shaping.hold(net, net.target, HOLD)
    client.close()
    tw = net.wait_state(net.target, "TIME_WAIT", **mine)
    assert tw, f"the target, which closed first, is not in TIME_WAIT: {net.sockets(net.target)}"
    last_ack = net.wait_state(net.peer, "LAST_ACK", **theirs)
    last_ack_seen = time.time()
    assert last_ack, f"the peer did not wait in LAST_ACK for the target's ACK: {net.sockets(net.peer)}"
    gone = net.wait_gone(net.peer, STATE_WAIT, **theirs)
    assert gone, f"the peer's socket did not close when the target acked its FIN: {net.sockets(net.peer)}"
    fin_p, ack_t = net.wire.expect_fin_acked(pa, pport, PORT, "peer", STATE_WAIT)
    assert ack_t.time > last_ack_seen, "LAST_ACK was seen after the target's ACK reached the wire"

    assert fin_t.time < fin_p.time, "the target's FIN must come first"
    assert net.wait_state(net.target, "TIME_WAIT", **mine), "the target left TIME_WAIT (it lasts 60 s)"
    assert not net.sockets(net.peer, state="TIME_WAIT"), "the peer, which closed second, is in TIME_WAIT"
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
    no_drops(net)
    record("close_ms", f"{closed.ms:.3f}")
    record("hold", str(held))
    record("states_target", "FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT")
    record("states_peer", "CLOSE_WAIT -> LAST_ACK -> closed")
    record("fin_wait1_held_ms", f"{(ack_p.time - fin_t.time) * 1000:.0f}")
    record.key("FW1 FW2 TIME_WAIT")


def test_four_way_close_target_passive(net, agent, family, record):
    """The peer closes first: the target's recv() returns 0 in CLOSE_WAIT; its close() goes LAST_ACK -> closed."""
    prepare_holds(net)
    s, conn, tport = net.target_client(agent, family, PORT)
    ta, pa = net.target.addr(family), net.peer.addr(family)
    mine, theirs = dict(sport=tport, dport=PORT), dict(sport=PORT, dport=tport)

    # 1. The peer closes; the target's ACK is held back: the peer waits in FIN_WAIT1.
    shaping.hold(net, net.target, HOLD)
    conn.close()
    assert net.wait_state(net.peer, "FIN_WAIT1", **theirs), \
        f"the peer did not wait in FIN_WAIT1 for the target's ACK: {net.sockets(net.peer)}"
    assert net.wait_state(net.target, "CLOSE_WAIT", **mine), \
        f"the target did not enter CLOSE_WAIT on the peer's FIN: {net.sockets(net.target)}"
    eof = agent.recv(s, 100, 2.0)
    assert eof.ok and eof["n"] == "0", f"the target's recv() after the peer's FIN must return 0 (end of file): {eof}"
    assert net.wait_state(net.peer, "FIN_WAIT2", timeout=STATE_WAIT, **theirs), "the peer did not reach FIN_WAIT2"
    fin_p, ack_t = net.wire.expect_fin_acked(pa, PORT, tport, "peer", STATE_WAIT)

    # 2. The target closes; the peer's ACK is held back: the target waits in LAST_ACK.
    held = shaping.hold(net, net.peer, HOLD)
    closed = agent.close(s).check()
    last_ack = net.wait_state(net.target, "LAST_ACK", **mine)
    last_ack_seen = time.time()
    assert last_ack, f"the target did not enter LAST_ACK after close() in CLOSE_WAIT: {net.sockets(net.target)}"
    assert net.wait_state(net.peer, "TIME_WAIT", **theirs), "the peer, which closed first, is not in TIME_WAIT"
    gone = net.wait_gone(net.target, STATE_WAIT, **mine)
    assert gone, f"the target's socket did not close when its FIN was acked: {net.sockets(net.target)}"
    fin_t, ack_p = net.wire.expect_fin_acked(ta, tport, PORT, "target", STATE_WAIT)
    assert ack_p.time > last_ack_seen, "LAST_ACK was seen after the peer's ACK reached the wire: not the held state"

    assert fin_p.time < fin_t.time, "the peer's FIN must come first"
    assert not net.sockets(net.target, state="TIME_WAIT"), "the target, which closed second, is in TIME_WAIT"
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
    no_drops(net)
    record("recv_eof_ms", f"{eof.ms:.3f}")
    record("close_ms", f"{closed.ms:.3f}")
    record("hold", str(held))
    record("states_target", "CLOSE_WAIT -> LAST_ACK -> closed")
    record("states_peer", "FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT")
    record("last_ack_held_ms", f"{(ack_p.time - fin_t.time) * 1000:.0f}")
    record.key("EOF CW LAST_ACK")


HALF = b"sent after the half-close"


def test_half_close(net, agent, family, record):
    """shutdown(SHUT_WR) sends a FIN but keeps reading: the peer reads EOF, then sends data the target reads."""
    s, conn, tport = net.target_client(agent, family, PORT)
    ta, pa = net.target.addr(family), net.peer.addr(family)
    mine, theirs = dict(sport=tport, dport=PORT), dict(sport=PORT, dport=tport)

    shut = agent.shutdown(s, "wr").check()
    fin_t, _ = net.wire.expect_fin_acked(ta, tport, PORT, "target", STATE_WAIT)
    assert net.wait_state(net.target, "FIN_WAIT2", **mine), \
        f"the half-closed target is not in FIN_WAIT2: {net.sockets(net.target)}"
    assert net.wait_state(net.peer, "CLOSE_WAIT", **theirs), "the peer did not enter CLOSE_WAIT"
    assert peer_recv(conn) == b"", "the peer's recv() after the target's shutdown(SHUT_WR) must return 0 (end of file)"

    # The other direction is still open: the peer's data reaches the target.
    conn.sendall(HALF)
    data = net.wire.expect(tcp(src=pa, sport=PORT, dport=tport, has="P"), "the peer's data after the FIN")
    got = agent.recv(s, 1024, 2.0)
    assert got.ok and got["data"] == HALF.hex(), \
        f"the half-closed target must still read the peer's data ({HALF!r}): {got}"
    net.wire.expect(tcp(src=ta, sport=tport, dport=PORT, has="A", ack=data.seq + data.length),
                    "the target's ACK of the data it read after its FIN")
    assert data.time > fin_t.time, "the peer's data must follow the target's FIN"
    assert not net.wire.tcp(has="R"), "an RST was sent: data after a half-close must be accepted"

    # Then the peer closes too: the target reads end of file and ends in TIME_WAIT (it sent the first FIN).
    conn.close()
    eof = agent.recv(s, 1024, 2.0)
    assert eof.ok and eof["n"] == "0", f"after the peer's FIN the target's recv() must return 0: {eof}"
    assert net.wait_state(net.target, "TIME_WAIT", **mine), \
        f"the target, whose FIN came first, is not in TIME_WAIT: {net.sockets(net.target)}"
    agent.close(s).check()
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
    record("shutdown_ms", f"{shut.ms:.3f}")
    record("read_after_half_close", f"{len(HALF)} bytes")
    record.key(f"EOF, then read {len(HALF)}B")


REPLY = b"the target still writes after reading EOF"


def test_half_close_by_peer(net, agent, family, record):
    """The peer half-closes: the target's recv() returns 0, and the target can still send, which the peer reads."""
    s, conn, tport = net.target_client(agent, family, PORT)
    ta, pa = net.target.addr(family), net.peer.addr(family)
    mine, theirs = dict(sport=tport, dport=PORT), dict(sport=PORT, dport=tport)

    conn.shutdown(socket.SHUT_WR)
    fin_p, _ = net.wire.expect_fin_acked(pa, PORT, tport, "peer", STATE_WAIT)
    assert net.wait_state(net.target, "CLOSE_WAIT", **mine), \
        f"the target did not enter CLOSE_WAIT on the peer's FIN: {net.sockets(net.target)}"
    eof = agent.recv(s, 1024, 2.0)
    assert eof.ok and eof["n"] == "0", f"the target's recv() after the peer's FIN must return 0 (end of file): {eof}"

    # End of file closes one direction only: the target's send still works and the peer reads it.
    sent = agent.send_bytes(s, REPLY)
    assert sent.ok and sent["n"] == str(len(REPLY)), f"the target's send() after reading end of file must succeed: {sent}"
    data = net.wire.expect(tcp(src=ta, sport=tport, dport=PORT, has="P"), "the target's data after the peer's FIN")
    assert peer_recv(conn) == REPLY, "the half-closed peer did not read the target's data"
    net.wire.expect(tcp(src=pa, sport=PORT, dport=tport, has="A", ack=data.seq + data.length),
                    "the peer's ACK of the target's data")
    assert data.time > fin_p.time, "the target's data must follow the peer's FIN"
    assert net.wait_state(net.peer, "FIN_WAIT2", **theirs), "the half-closed peer is not in FIN_WAIT2"

    agent.close(s).check()
    assert net.wait_state(net.peer, "TIME_WAIT", **theirs), "the peer, whose FIN came first, is not in TIME_WAIT"
    assert net.wait_gone(net.target, STATE_WAIT, **mine), f"the target's socket did not close: {net.sockets(net.target)}"
    assert not net.wire.tcp(has="R"), "an RST was sent: data after a half-close must be accepted"
    record("recv_eof_ms", f"{eof.ms:.3f}")
    record("sent_after_eof", f"{len(REPLY)} bytes")
    record.key(f"EOF, then sent {len(REPLY)}B")
