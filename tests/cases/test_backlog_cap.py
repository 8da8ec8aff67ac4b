"""listen()'s backlog is capped by net.core.somaxconn, and a backlog of N queues N + 1 connections.

Seed 002: "backlog:未完成连接队列的大小,决定了可以接收的并发数目,参数过大会占用过多的系统资源";
seed 003: "参数backlog作用 设置内核中队列的长度" and "当TCP连接队列满了之后 Linux并不会书中所说的
拒绝连接,只是会延时连接".

With somaxconn = 3 in the target's namespace, listen(1000) gets a backlog of 3
(the listener's Send-Q in the kernel table). Then 4 connections complete
without accept() and the 5th stays in SYN_SENT, its SYN dropped and
retransmitted (about 1 s later; the case waits for that retransmission on the
wire, not for a timer of its own).

Go's listen takes its backlog from somaxconn (3 here) and the agent then calls
listen(2) again with the number asked for: the kernel caps that too.
"""
from conformance.capture import tcp
from conformance.case import connected

PORT = 7878
SOMAXCONN = 3
BACKLOG = 1000


def test_backlog_somaxconn(net, agent, family, record):
    server = net.target.addr(family)
    net.target.sysctl("net.core.somaxconn", str(SOMAXCONN))
    assert net.target.sysctl("net.core.somaxconn") == str(SOMAXCONN), "could not set somaxconn in the target namespace"
    ls = agent.socket("tcp", family).h
    agent.bind(ls, server, PORT).check()
    agent.listen(ls, BACKLOG).check()

    listener = net.wait_state(net.target, "LISTEN", sport=PORT)
    assert listener, "the target has no listening socket"
    assert listener.wqueue == SOMAXCONN, \
        f"listen({BACKLOG}) with somaxconn {SOMAXCONN}: the backlog in force (Send-Q) is {listener.wqueue}"

    # The backlog in force is what queues: SOMAXCONN + 1 connections complete without accept().
    queued = []
    for i in range(SOMAXCONN + 1):
        c = net.peer_connect(family, server, PORT)
        assert connected(c, 2.0) == 0, f"connection {i + 1} of backlog + 1 = {SOMAXCONN + 1} did not complete"
        queued.append(c.getsockname()[1])
    full = net.wait_state(net.target, "LISTEN", sport=PORT, rqueue=SOMAXCONN + 1)
    assert full, f"the accept queue does not hold {SOMAXCONN + 1}: {net.sockets(net.target, state='LISTEN')}"
    for cport in queued:
        net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA"), f"the SYN-ACK to queued client port {cport}")
    overflows_before = net.target.counters()["TcpExt.ListenOverflows"]

    # One more: its SYN is dropped; the client retransmits it and stays in SYN_SENT.
    late = net.peer_connect(family, server, PORT)
    lport = late.getsockname()[1]
    syns = net.wire.wait_for(tcp(sport=lport, flags="S"), timeout=3.0, count=2)
    assert len(syns) >= 2, \
        f"connection {SOMAXCONN + 2} was not held off: no SYN retransmission (a backlog above {SOMAXCONN}?)"
    assert connected(late, 0) is None, f"connection {SOMAXCONN + 2} completed beyond a backlog of {SOMAXCONN}"
    assert net.wait_state(net.peer, "SYN_SENT", sport=lport, dport=PORT), "the late client is not in SYN_SENT"
    assert not net.wire.tcp(dport=lport, has="S"), "the full queue answered the late SYN with a SYN-ACK"
    assert not net.wire.tcp(dport=lport, has="R"), "the full queue answered the late SYN with an RST"
    still = net.sockets(net.target, state="LISTEN", sport=PORT)
    assert still and still[0].rqueue == SOMAXCONN + 1, f"the accept queue changed: {still}"
    overflows = net.target.counters()["TcpExt.ListenOverflows"] - overflows_before
    assert overflows >= 1, "TcpExt.ListenOverflows did not rise for the dropped SYN"

    record("somaxconn", SOMAXCONN)
    record("backlog_asked", BACKLOG)
    record("backlog_in_force", listener.wqueue)
    record("queued", full.rqueue)
    record("syn_retransmit_s", f"{syns[1].time - syns[0].time:.2f}")
    record("listen_overflows", overflows)
    record.key(f"sendq={listener.wqueue} q={full.rqueue}")
