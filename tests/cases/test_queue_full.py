"""A full accept queue delays new connections; it does not refuse them.

Seed 003 (docs/seeds.md): "当TCP连接队列满了之后 Linux并不会书中所说的拒绝连接,只是会延时连接".
listen(backlog=1) queues backlog + 1 = 2 completed connections. The next SYN is
dropped silently (no RST, no SYN-ACK): the client stays in SYN_SENT and
retransmits, and ListenOverflows counts the drop. Once the target accepts one
connection, the client's next SYN retransmission completes the handshake.
"""

import time

from conformance import queue
from conformance.capture import tcp
from conformance.case import PORT, connected

BACKLOG = 1
LATE_COMPLETION = 5.0  # s: bound on the late connect completing after accept() (the next SYN retransmission)


def test_queue_full(net, agent, family, record):
    ls = agent.listener(net.target.addr(family), PORT, backlog=BACKLOG)
    record("backlog", BACKLOG)
    # Kernel: listen(1) took effect (the listener's Send-Q): everything below depends on it.
    queue.listen_took_effect(net, BACKLOG, record=record)

    # Fill the queue: backlog + 1 connections complete without accept().
    _, listener = queue.fill(net, family, PORT, BACKLOG)
    record("queued", listener.rqueue)

    # One more: neither refused nor completed.
    late = queue.knock(net, family, PORT)
    record("listen_overflows", late.overflows)
    queue.assert_held_off(net, late, BACKLOG)

    # accept() frees a slot: the next retransmitted SYN completes the connection.
    accept_started = time.time()
    agent.accept(ls).check("accept one queued connection")
    accept_done = time.time()
    err = connected(late.sock, LATE_COMPLETION)
    record("delay_after_accept_ms", f"{(time.time() - accept_done) * 1000:.0f}")
    assert err == 0, "the late connect did not complete after accept() freed a slot"
    synack = net.wire.expect(tcp(dport=late.port, flags="SA"), "a SYN-ACK to the late client")
    sent = [s for s in net.wire.tcp(sport=late.port, flags="S") if s.time <= synack.time]
    answered, dropped = sent[-1], sent[:-1]
    total = synack.time - late.syns[0].time
    record("syns_before_completion", len(sent))
    record("connect_delay_ms", f"{total * 1000:.0f}")
    record("protocol_wait_s", f"{total:.3f}")  # the SYN retransmission it waited for, for `conformance bench`
    record.key(f"q={listener.rqueue} delayed", f"+{total:.1f}s")
    assert synack.ack == (answered.seq + 1) % 2**32, "the SYN-ACK does not ack the late client's SYN"
    assert answered.time >= accept_started and all(s.time <= accept_done for s in dropped), (
        "the late connect must complete at the first SYN retransmission after accept()"
    )
