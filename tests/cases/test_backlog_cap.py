"""listen()'s backlog is capped by net.core.somaxconn, and a backlog of N queues N + 1 connections.

Seed 002 (docs/seeds.md): "backlog:未完成连接队列的大小,决定了可以接收的并发数目,参数过大会占用过多的系统资源";
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

from conformance import queue
from conformance.capture import tcp
from conformance.case import PORT

SOMAXCONN = 3
BACKLOG = 1000


def test_backlog_somaxconn(net, agent, family, record):
    net.target.sysctl("net.core.somaxconn", str(SOMAXCONN))
    assert net.target.sysctl("net.core.somaxconn") == str(SOMAXCONN), "could not set somaxconn in the target namespace"
    agent.listener(net.target.addr(family), PORT, backlog=BACKLOG)
    record("somaxconn", SOMAXCONN)
    record("backlog_asked", BACKLOG)

    listener = queue.listen_took_effect(
        net, BACKLOG, expected=SOMAXCONN, why=f"somaxconn {SOMAXCONN} caps it", record=record
    )

    # The backlog in force is what queues: SOMAXCONN + 1 connections complete without accept().
    queued, full = queue.fill(net, family, PORT, SOMAXCONN)
    record("queued", full.rqueue)
    record.key(f"sendq={listener.wqueue} q={full.rqueue}")
    for cport in queued:
        net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA"), f"the SYN-ACK to queued client port {cport}")

    # One more: its SYN is dropped; the client retransmits it and stays in SYN_SENT.
    late = queue.knock(net, family, PORT)
    record("syn_retransmit_s", f"{late.retransmit_s:.2f}" if late.retransmit_s is not None else "none")
    record("listen_overflows", late.overflows)
    queue.assert_held_off(net, late, SOMAXCONN)
    still = net.target.sockets("LISTEN", sport=PORT)
    assert still and still[0].rqueue == SOMAXCONN + 1, "the accept queue changed when the late SYN came"
