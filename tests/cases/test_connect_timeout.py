"""connect() with a timeout of the caller's own, to an address that never answers: the runtime gives up at it.

Seed 002 (docs/seeds.md): "三次握手无法建立,客户端发出的SYN包没有任何响应,返回TIMEOUT错误". Here the
timeout is the program's: `connect H ADDR PORT MS` with MS = 300 ms to an address that drops
SYNs silently, well before the kernel's first SYN retransmission (1 s) and its own ETIMEDOUT
(133 s by default). The reply must come at MS (not before, and within a tolerance after), be an
error, and not be the kernel's ETIMEDOUT: one SYN on the wire before it, no retransmission, so
the kernel has not given up.

What the runtime reports and what it leaves behind are its own (measured on Linux 6.18):
Python (settimeout), C (poll) and Go (Dialer with a context deadline) all answer `timeout`
(targets/PROTOCOL.md: the API gave no errno; an API that gives one would show it, ETIMEDOUT or
EAGAIN); Python and C leave the socket in SYN_SENT, the kernel still retransmitting, while Go
closes it. Both are conformant: the matrix key shows the outcome and the socket's state after
("timeout SYN_SENT", "timeout closed").
"""

from conformance.agent import AgentError
from conformance.timing import slack

DEAD_PORT = 80
TIMEOUT_MS = 300  # the operation's own timeout: far from the kernel's first retransmission (1 s)
# How late the reply may come after MS: a runtime's timer and the agent's wake-up (measured: under
# 2 ms idle, about 30 ms under a CPU hog); the kernel's first retransmission is 700 ms past MS.
LATE_MS = 600.0  # how late the reply may come on a loaded machine: still before the 1 s SYN retransmission
CLOCK_MS = 1.0  # how early a reply may come for clock granularity (the timers round to 1 ms)
SETTLE_S = 0.1  # how long a socket the runtime closes may take to leave the kernel's table


def reply_within(pending, seconds: float):
    """The reply to a pending call, or None when the agent has not answered within seconds
    (bounded; the agent is then killed, as a hung one)."""
    pending.deadline = seconds
    try:
        return pending.wait()
    except AgentError as e:
        if e.reason.startswith("no reply within"):
            return None
        raise


def test_connect_timeout(net, agent, family, record):
    dead = net.topo.blackhole(family)
    s = agent.socket("tcp", family).h
    pending = agent.connect_later(s, dead, DEAD_PORT, TIMEOUT_MS / 1000)
    bound_ms = TIMEOUT_MS + slack(LATE_MS)
    r = reply_within(pending, bound_ms / 1000)
    syns = net.wire.tcp(dst=dead, dport=DEAD_PORT, flags="S")
    if r is not None and r.status == "unsupported":
        r.check("connect with a timeout of its own")  # the language cannot: skipped
    if r is None:
        raise AssertionError(
            f"connect() with its own timeout of {TIMEOUT_MS} ms had not returned after "
            f"{bound_ms:.0f} ms: the target ignored MS ({len(syns)} SYN(s) on the wire)"
        )
    gone = net.target.wait_gone(SETTLE_S, dst=dead, dport=DEAD_PORT)
    left = net.target.sockets(dst=dead, dport=DEAD_PORT)
    state = "closed" if gone else " ".join(sorted({x.state for x in left}))
    before = [x for x in syns if x.time - syns[0].time < r.ms / 1000] if syns else []
    record("outcome", r.outcome)
    record("connect_ms", f"{r.ms:.1f}")
    record("syns_before_reply", len(before))
    record("socket_after", state)
    record("protocol_wait_s", f"{r.ms / 1000:.3f}")  # the call's own timeout, for `conformance bench`
    record.key(f"{r.outcome} {state}", f"{r.ms:.0f}ms")

    assert not r.ok, f"connect() to an address that never answers must fail at its timeout: {r}"
    assert r.ms >= TIMEOUT_MS - CLOCK_MS, f"connect() gave up before its own timeout of {TIMEOUT_MS} ms: {r}"
    assert r.ms <= bound_ms, (
        f"connect() gave up {r.ms - TIMEOUT_MS:.0f} ms after its own timeout of "
        f"{TIMEOUT_MS} ms (at most {slack(LATE_MS):.0f} ms): {r}"
    )
    assert syns, "not on the wire: the target's SYN"
    assert len(before) == 1 and len({x.seq for x in syns}) == 1, (
        f"one SYN must precede the reply (the kernel retransmits only after 1 s and gives up later still; "
        f"its ETIMEDOUT means the target ignored MS): saw {len(before)} SYN(s) before {r}"
    )
    assert not net.wire.tcp(src=dead), "something answered the dead address"
