"""A full accept queue delays new connections; it does not refuse them.

Seed 003: "当TCP连接队列满了之后 Linux并不会书中所说的拒绝连接,只是会延时连接".
listen(backlog=1) queues backlog + 1 = 2 completed connections. The next SYN is
dropped silently (no RST, no SYN-ACK): the client stays in SYN_SENT and
retransmits, and ListenOverflows counts the drop. Once the target accepts one
connection, the client's next SYN retransmission completes the handshake.
"""
import time

from conformance.capture import tcp
from conformance.case import connected

PORT = 7878
BACKLOG = 1


def test_queue_full(net, agent, family, record):
    server = net.target.addr(family)
    ls = agent.socket("tcp", family).h
    agent.bind(ls, server, PORT).check()
    agent.listen(ls, BACKLOG).check()

    # Fill the queue: backlog + 1 connections complete without accept().
    for i in range(BACKLOG + 1):
        c = net.peer_connect(family, server, PORT)
        assert connected(c, 2.0) == 0, f"connection {i + 1} of backlog + 1 = {BACKLOG + 1} did not complete"
    listener = net.wait_state(net.target, "LISTEN", sport=PORT, rqueue=BACKLOG + 1)
    assert listener, f"the accept queue does not hold backlog + 1 = {BACKLOG + 1}: {net.sockets(net.target, state='LISTEN')}"
    overflows_before = net.target.counters()["TcpExt.ListenOverflows"]

    # One more: neither refused nor completed.
    late = net.peer_connect(family, server, PORT)
    lport = late.getsockname()[1]
    syns = net.wire.wait_for(tcp(sport=lport, flags="S"), timeout=3.0, count=2)
    assert len(syns) >= 2, "the late client's SYN was not retransmitted"
    assert connected(late, 0) is None, "the connect beyond a full queue completed at once"
    assert net.wait_state(net.peer, "SYN_SENT", sport=lport, dport=PORT), "the late client is not in SYN_SENT"
    assert not net.wire.tcp(dport=lport, has="R"), "the full queue answered with an RST (refused)"
    assert not net.wire.tcp(dport=lport, has="S"), "the full queue answered the SYN with a SYN-ACK"
    overflows = net.target.counters()["TcpExt.ListenOverflows"] - overflows_before
    assert overflows >= 1, "TcpExt.ListenOverflows did not rise"

    # accept() frees a slot: the next retransmitted SYN completes the connection.
    accept_started = time.time()
    agent.accept(ls, 2.0).check()
    accept_done = time.time()
    assert connected(late, 5.0) == 0, "the late connect did not complete after accept() freed a slot"
    done_at = time.time()
    synack = net.wire.expect(tcp(dport=lport, flags="SA"), "a SYN-ACK to the late client")
    sent = [s for s in net.wire.tcp(sport=lport, flags="S") if s.time <= synack.time]
    answered, dropped = sent[-1], sent[:-1]
    assert synack.ack == (answered.seq + 1) % 2**32, "the SYN-ACK does not ack the late client's SYN"
    assert answered.time >= accept_started and all(s.time <= accept_done for s in dropped), \
        "the late connect must complete at the first SYN retransmission after accept()"

    delay = done_at - accept_done
    total = synack.time - syns[0].time
    record("backlog", BACKLOG)
    record("queued", listener.rqueue)
    record("listen_overflows", overflows)
    record("syns_before_completion", len(sent))
    record("delay_after_accept_ms", f"{delay * 1000:.0f}")
    record("connect_delay_ms", f"{total * 1000:.0f}")
    record.key(f"q={listener.rqueue} delayed", f"+{total:.1f}s")
