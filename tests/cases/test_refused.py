"""connect() to a port with no listener fails with ECONNREFUSED because an RST answers the SYN.

Seed 002: "客户端收到了RST(复位)应答,此时客户端会返回CONNECTION REFUSED错误".
An ICMP port unreachable would give ECONNREFUSED too, so the RST must be seen.
"""
from conformance.capture import tcp
from conformance.case import CLOSED_PORT


def test_refused(net, agent, family, record):
    s = agent.socket("tcp", family).h
    r = agent.connect(s, net.peer.addr(family), CLOSED_PORT, None)
    syn = net.wire.expect(tcp(src=net.target.addr(family), dport=CLOSED_PORT, flags="S"), "the target's SYN")
    rst = net.wire.expect(tcp(sport=CLOSED_PORT, dport=syn.sport, has="R"), "an RST answering the SYN")
    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.3f}")
    record("rst", str(rst))
    record.key(r.errno, f"{r.ms:.2f}ms")

    assert r.errno == "ECONNREFUSED", f"expected err ECONNREFUSED, got {r}"
    assert rst.flags == "RA" and rst.ack == (syn.seq + 1) % 2**32, \
        f"the RST must ack the SYN (flags RA, ack {syn.seq + 1}): {rst}"
    assert not [x for x in net.wire.segments() if x.proto.startswith("icmp") and x.icmp_type in (1, 3)], \
        "an ICMP unreachable was seen: the refusal must come from an RST"
    assert len(net.wire.tcp(src=net.target.addr(family), dport=CLOSED_PORT, flags="S")) == 1, \
        "the SYN was retransmitted: a refused connect must fail at the first RST"
