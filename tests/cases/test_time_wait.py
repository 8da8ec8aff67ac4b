"""The side that closes first ends in TIME_WAIT; the other passes through CLOSE_WAIT.

Seed 003: the four-way close; the active closer goes FIN_WAIT_2 then TIME_WAIT
(2MSL, 60 s on Linux: never waited out here). The capture shows a FIN and its
ACK in each direction. Checked both ways: the target closes first, then the
peer closes first.
"""

PORT = 7878


def test_time_wait_by_target(net, agent, family, record):
    s, conn, tport = net.target_client(agent, family, PORT)
    tuple_t = dict(sport=tport, dport=PORT)
    tuple_p = dict(sport=PORT, dport=tport)

    agent.close(s).check()
    assert net.wait_state(net.peer, "CLOSE_WAIT", **tuple_p), "the peer did not enter CLOSE_WAIT"
    assert net.wait_state(net.target, "FIN_WAIT2", **tuple_t), "the target did not enter FIN_WAIT2"

    conn.close()
    tw = net.wait_state(net.target, "TIME_WAIT", **tuple_t)
    assert tw, f"the target closed first but is not in TIME_WAIT: {net.sockets(net.target)}"
    assert not net.sockets(net.peer, state="TIME_WAIT"), "the peer, which closed second, is in TIME_WAIT"

    ta, pa = net.target.addr(family), net.peer.addr(family)
    net.wire.expect_fin_acked(ta, tport, PORT, "target")
    net.wire.expect_fin_acked(pa, PORT, tport, "peer")
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
    record("states", "target FIN_WAIT2 -> TIME_WAIT; peer CLOSE_WAIT -> closed")
    record.key("target TIME_WAIT")


def test_time_wait_by_peer(net, agent, family, record):
    s, conn, tport = net.target_client(agent, family, PORT)
    tuple_t = dict(sport=tport, dport=PORT)
    tuple_p = dict(sport=PORT, dport=tport)

    conn.close()
    assert net.wait_state(net.target, "CLOSE_WAIT", **tuple_t), "the target did not enter CLOSE_WAIT"
    assert net.wait_state(net.peer, "FIN_WAIT2", **tuple_p), "the peer did not enter FIN_WAIT2"
    eof = agent.recv(s, 100, 2.0)
    assert eof.ok and eof["n"] == "0", f"the target's recv after the peer's FIN must return 0 (EOF): {eof}"

    agent.close(s).check()
    tw = net.wait_state(net.peer, "TIME_WAIT", **tuple_p)
    assert tw, f"the peer closed first but is not in TIME_WAIT: {net.sockets(net.peer)}"
    assert not net.sockets(net.target, state="TIME_WAIT"), "the target, which closed second, is in TIME_WAIT"

    ta, pa = net.target.addr(family), net.peer.addr(family)
    net.wire.expect_fin_acked(pa, PORT, tport, "peer")
    net.wire.expect_fin_acked(ta, tport, PORT, "target")
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
    record("states", "peer FIN_WAIT2 -> TIME_WAIT; target CLOSE_WAIT -> closed")
    record.key("peer TIME_WAIT")
