"""connect() blocks until the handshake completes; accept() blocks while the accept queue is empty.

Seed 002 (docs/seeds.md): "客户端通过调用socket和connect函数后,也会阻塞等待 ... 客户端的网络协议栈收到ACK包后,
使得应用程序从connect阻塞调用返回"; "服务器端 ... 调用accept,就会阻塞等待客户端的连接".
Seed 004: "accept() ... 当队列中没有完成连接时候 会形成阻塞,直到取出队列中已完成连接的用户连接为止"
(quoted in seed 003) and "服务器进程在accept调用中进入休眠(sleep)状态,等待某个客户连接的到达".

The link has no latency of its own, so the peer's egress is delayed with tbf
(the kernel has no netem): filler frames queued ahead hold whatever the peer
sends next for about HOLD (conformance/shaping.py).

- connect: the peer's SYN-ACK waits about HOLD; the target's connect() returns
  only when it has arrived: its elapsed time tracks the SYN -> SYN-ACK time on
  the wire (within a tolerance), and the socket is in SYN_SENT meanwhile.
- accept: on an empty queue, accept() with a 300 ms timeout of its own reports
  `timeout` after no less than 300 ms; then a blocking accept() waits for a
  client whose SYN the peer's egress holds back, and returns that connection
  once its final ACK has arrived, its elapsed time covering the wait.
"""

import time

from conformance import shaping
from conformance.capture import tcp
from conformance.case import PORT
from conformance.timing import slack

HOLD = 0.7  # s: how long the peer's next packet waits in its egress (a loaded machine may take a while to
# send the SYN the hold is for; short of the 1 s SYN retransmission)
ACCEPT_TIMEOUT = 0.3  # s
# Tolerances (ms), scaled by the run's timing slack:
EARLY_MS = 2.0  # the capture's and the agent's clocks: a call may look this much shorter than the wire
LATE_MS = 400.0  # a blocked call wakes and replies within this (scheduling, the agent's own work: Node's
# event loop took up to 190 ms on a machine loaded 5-fold)
REPORT_MS = 1.0  # the agent's own measure of a call may exceed the harness's by this much


def test_blocking_connect(net, agent, family, record):
    """connect() returns when the (delayed) SYN-ACK arrives: its elapsed time tracks the wire."""
    net.peer_listener(family)
    shaping.install(net.peer)
    held = shaping.hold(net, net.peer, HOLD)  # the peer's SYN-ACK will wait behind this
    record("hold", str(held))

    s = agent.socket("tcp", family).h
    pending = agent.connect_later(s, net.peer.addr(family), PORT, 5.0)
    # Kernel: while connect() waits, the target's socket is in SYN_SENT.
    waiting = net.target.wait_state("SYN_SENT", dport=PORT)
    assert waiting, "the target's socket is not in SYN_SENT while the SYN-ACK is held back"
    r = pending.wait().check("connect() to a listener whose SYN-ACK is delayed")
    record("connect_ms", f"{r.ms:.1f}")

    cport = waiting.sport
    syn = net.wire.expect(tcp(sport=cport, dport=PORT, flags="S"), "the target's SYN")
    synack = net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA", ack=syn.seq + 1), "the peer's SYN-ACK")
    net.wire.expect(tcp(sport=cport, has="A", ack=synack.seq + 1), "the target's ACK of the SYN-ACK")
    gap_ms = (synack.time - syn.time) * 1000
    record("syn_to_synack_ms", f"{gap_ms:.1f}")
    record.key("blocks to SYN-ACK", f"{r.ms:.0f}ms~{gap_ms:.0f}")
    assert gap_ms >= HOLD * 1000 / 2, f"construction: the SYN-ACK came {gap_ms:.1f} ms after the SYN ({held})"

    # API: connect() returned when the SYN-ACK arrived, not before and not much after.
    assert r.ms >= gap_ms - slack(EARLY_MS), (
        f"connect() returned after {r.ms:.1f} ms, before the SYN-ACK arrived ({gap_ms:.1f} ms): it did not block"
    )
    assert r.ms <= gap_ms + slack(LATE_MS), (
        f"connect() returned after {r.ms:.1f} ms, {r.ms - gap_ms:.1f} ms after the SYN-ACK ({gap_ms:.1f} ms)"
    )
    assert net.target.wait_state("ESTABLISHED", sport=cport, dport=PORT), "the target is not ESTABLISHED"


def test_blocking_accept(net, agent, family, record):
    """accept() waits out its timeout on an empty queue, and waits for a connection that arrives late."""
    server = net.target.addr(family)
    ls = agent.listener(server, PORT)

    # An empty queue: accept() blocks until its own timeout.
    empty = agent.accept(ls, ACCEPT_TIMEOUT)
    record("empty_accept_ms", f"{empty.ms:.1f}")
    assert empty.errno == "timeout", (
        f"accept() on an empty queue with a {ACCEPT_TIMEOUT * 1000:.0f} ms timeout must time out: {empty}"
    )
    assert empty.ms >= ACCEPT_TIMEOUT * 1000 - slack(EARLY_MS), (
        f"accept() gave up after {empty.ms:.1f} ms, before its {ACCEPT_TIMEOUT * 1000:.0f} ms timeout: it did not block"
    )
    assert empty.ms <= ACCEPT_TIMEOUT * 1000 + slack(LATE_MS), (
        f"accept() gave up after {empty.ms:.1f} ms, long after its {ACCEPT_TIMEOUT * 1000:.0f} ms timeout"
    )
    assert not net.wire.tcp(), "TCP segments on the wire while no client connected"
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), "the accept queue is not empty"

    # A client arrives while accept() blocks: the peer's SYN is held back in its egress.
    shaping.install(net.peer)
    held = shaping.hold(net, net.peer, HOLD)
    record("hold", str(held))
    sent_at = time.time()
    pending = agent.accept_later(ls, 5.0)
    client = net.peer_connect(family, server, PORT)
    cport = client.getsockname()[1]
    r = pending.wait().check("a blocking accept() must return the connection that arrived")
    replied_at = time.time()
    record("accept_ms", f"{r.ms:.1f}")
    record.key("timeout, then ok", f"{r.ms:.0f}ms")
    assert r.endpoint == (net.peer.addr(family), cport), (
        f"accept() returned {r.addr}:{r.port}, the client is {net.peer.addr(family)}:{cport}"
    )

    syn = net.wire.expect(tcp(sport=cport, dport=PORT, flags="S"), "the client's SYN")
    synack = net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA", ack=syn.seq + 1), "the SYN-ACK")
    ack = net.wire.expect(tcp(sport=cport, dport=PORT, flags="A", ack=synack.seq + 1), "the client's final ACK")
    waited_ms = (ack.time - sent_at) * 1000  # from sending the command to the connection's completion
    record("completed_after_ms", f"{waited_ms:.1f}")
    assert waited_ms >= HOLD * 1000 / 2, (
        f"construction: the client's ACK came {waited_ms:.1f} ms after accept() ({held})"
    )
    assert replied_at >= ack.time, "accept() returned before the client's final ACK"
    assert r.ms >= waited_ms - slack(LATE_MS), (
        f"accept() took {r.ms:.1f} ms, but the connection completed {waited_ms:.1f} ms after it was called"
    )
    assert r.ms <= (replied_at - sent_at) * 1000 + slack(REPORT_MS), (
        f"accept() reports {r.ms:.1f} ms, longer than the call took"
    )
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), "the connection is still in the accept queue"
