"""connect() to an address that silently drops SYNs fails with ETIMEDOUT after SYN retransmissions.

Seed 002 (docs/seeds.md): "三次握手无法建立,客户端发出的SYN包没有任何响应,返回TIMEOUT错误".
The kernel's default gives up after about 133 s; the case sets TCP_SYNCNT=1 on
the target's socket (one retransmission allowed), which ends it after about
3 s with three SYNs on this kernel (net.ipv4.tcp_syn_linear_timeouts). The
error must be the kernel's ETIMEDOUT, not a timeout of the agent's own.
"""

DEAD_PORT = 80
SYNCNT = 1


def test_timedout(net, agent, family, record):
    dead = net.topo.blackhole(family)
    s = agent.socket("tcp", family).h
    agent.setsockopt(s, "syncnt", SYNCNT).check("allow one SYN retransmission only")
    record("shortened_by", f"TCP_SYNCNT={SYNCNT} on the target's socket")
    pending = agent.connect_later(s, dead, DEAD_PORT, None)

    # Kernel, while it waits: the target's socket is in SYN_SENT towards the dead address.
    waiting = net.target.wait_state("SYN_SENT", dst=dead, dport=DEAD_PORT)
    assert waiting, "the target's socket is not in SYN_SENT while connect() waits"

    r = pending.wait()
    syns = net.wire.tcp(dst=dead, dport=DEAD_PORT, flags="S")
    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.1f}")
    record("syns", len(syns))
    record("syn_times_s", " ".join(f"{x.time - syns[0].time:.3f}" for x in syns))
    record.key(f"{r.errno} {len(syns)}SYN", f"{r.ms / 1000:.1f}s")
    assert r.errno == "ETIMEDOUT", f"expected err ETIMEDOUT (the kernel's), got {r}"

    assert len(syns) >= 2, f"expected the SYN and its retransmission(s), saw {len(syns)} SYN(s)"
    assert len({x.seq for x in syns}) == 1, "the retransmitted SYNs must carry the same sequence number"
    assert not net.wire.tcp(src=dead), "something answered the dead address"
    # The give-up time follows the SYN timer: it cannot come before the last retransmission.
    assert r.ms / 1000 > syns[-1].time - syns[0].time, "connect() failed before the last SYN was retransmitted"
