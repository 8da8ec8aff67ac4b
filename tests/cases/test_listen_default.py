"""listen() with no backlog of the program's own: each language picks one, and the kernel caps it.

Seed 002 (docs/seeds.md): "backlog:未完成连接队列的大小,决定了可以接收的并发数目" — the backlog sets how many
connections can wait; seed 003: "参数backlog作用 设置内核中队列的长度". A program that does not choose
one gets its language's default: Python's listen() uses min(SOMAXCONN, 128), C programs pass
SOMAXCONN (4096), Go's net.Listen and Java's ServerSocketChannel read or pick their own (Go:
net.core.somaxconn; Java: 50), Node's server.listen 511, Rust's std 128. The kernel shows the
backlog in force as the listener's Send-Q and caps it at net.core.somaxconn (4096 here).

The value differs by design: it is the matrix key, so two runs (a runtime upgrade, another
kernel) are compared on it; the case checks that the listener listens with a backlog the
kernel accepted (at least 1, at most somaxconn).
"""

from conformance.case import PORT


def test_listen_default(net, agent, family, record):
    somaxconn = int(net.target.sysctl("net.core.somaxconn"))
    agent.listener(net.target.addr(family), PORT, backlog="default")
    listener = net.target.wait_state("LISTEN", sport=PORT)
    backlog = listener.wqueue if listener else None
    record("somaxconn", somaxconn)
    record("default_backlog", backlog)
    record.key(f"backlog={backlog}")

    assert listener is not None, "listen with the language's default backlog left no LISTEN socket in the kernel table"
    assert 1 <= backlog <= somaxconn, (
        f"the default backlog in force (Send-Q) is {backlog}: the kernel takes 1 to somaxconn ({somaxconn})"
    )
