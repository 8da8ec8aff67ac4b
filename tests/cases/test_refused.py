"""connect() to a port with no listener fails with ECONNREFUSED because an RST answers the SYN.

Seed 002 (docs/seeds.md): "客户端收到了RST(复位)应答,此时客户端会返回CONNECTION REFUSED错误".
An ICMP port unreachable would give ECONNREFUSED too, so the RST must be seen.
The refusal is immediate (one round trip on the link), and it is final: one SYN,
no retransmission and no second connect after the RST (a runtime that retries a
refused connect on a new socket reports the second attempt's result).
"""

from conformance.capture import tcp
from conformance.case import CLOSED_PORT
from conformance.timing import slack

# A refusal takes one round trip on the link (the RST follows the SYN within 0.05 ms; connect()
# reports it in 0.1-2 ms, at most 11 ms measured for Go under a CPU hog, up to 225 ms for Node's
# event loop on a machine loaded 5-fold): reported at once, well short of the 1 s a SYN retransmission
# takes (the retransmission itself is caught by the SYN count on the wire).
REFUSAL_MS = 500.0
# After the reply, how long the wire is watched for another SYN to the closed port (a retried connect).
RETRY_WINDOW_S = 0.2


def test_refused(net, agent, family, record):
    s = agent.socket("tcp", family).h
    r = agent.connect(s, net.peer.addr(family), CLOSED_PORT, None)
    to_closed = tcp(src=net.target.addr(family), dport=CLOSED_PORT, flags="S")
    syn = net.wire.expect(to_closed, "the target's SYN")
    rst = net.wire.expect(tcp(sport=CLOSED_PORT, dport=syn.sport, has="R"), "an RST answering the SYN")
    syns = net.wire.wait_for(to_closed, RETRY_WINDOW_S, count=2)  # a retry would show within the window
    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.3f}")
    record("rst", str(rst))
    record("wire_rtt_ms", f"{(rst.time - syn.time) * 1000:.3f}")
    record("syns", len(syns))
    record.key(r.errno, f"{r.ms:.2f}ms")

    assert r.errno == "ECONNREFUSED", f"expected err ECONNREFUSED, got {r}"
    assert rst.flags == "RA" and rst.ack == (syn.seq + 1) % 2**32, (
        f"the RST must ack the SYN (flags RA, ack {syn.seq + 1}): {rst}"
    )
    assert not [x for x in net.wire.segments() if x.proto.startswith("icmp") and x.icmp_type in (1, 3)], (
        "an ICMP unreachable was seen: the refusal must come from an RST"
    )
    assert len(syns) == 1, again(syn, syns[1:], rst)
    assert r.ms <= slack(REFUSAL_MS), (
        f"connect() took {r.ms:.1f} ms to report the refusal; the RST came {(rst.time - syn.time) * 1000:.2f} ms "
        f"after the SYN, and a refusal must be reported within {slack(REFUSAL_MS):.0f} ms"
    )


def again(first, later, rst) -> str:
    """What another SYN towards the closed port means: a retransmission of the first, or a new connect."""
    second = later[0]
    when = f"{(second.time - rst.time) * 1000:.1f} ms after the RST"
    more = f" ({len(later)} more SYNs in all)" if len(later) > 1 else ""
    if second.sport == first.sport and second.seq == first.seq:
        what = f"the SYN was retransmitted (same source port {first.sport} and seq) {when}"
    elif second.sport == first.sport:
        what = f"connect() was retried from the same source port {first.sport} with a new seq {when}"
    else:
        what = (
            f"connect() was retried: a new connect from another source port ({second.sport}; the first "
            f"from {first.sport}) {when}"
        )
    return f"{what}{more}: a refused connect must fail at the first RST"
