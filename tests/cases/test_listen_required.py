"""A bound socket does not take connections until listen(): accept() fails, a connect is refused.

Seed 004 (docs/seeds.md): "listen():使一个绑定的TCP套接字的状态由CLOSE转换成监听(LISTEN),这样来自客户的外来连接
就可在该套接字上由内核接受" — listen() turns a bound socket from CLOSE into LISTEN, and only
then does the kernel accept incoming connections on it. Seed 003: "socket()->bind()->listen()
->accept()"; seed 002: an RST answers "目的地为某端口的SYN到达,然而并没有监听该端口的服务".

Kernel evidence for a bound socket that is not listening uses sock_diag's dump of
bound-only sockets (TCP_BOUND_INACTIVE, Linux 6.8+): such a socket shows in state
CLOSE with its port; on an older kernel that part is recorded as not available.

Go has no separate bind step (the agent defers it to listen/connect): a Go handle
that was only bound is no OS socket at all, so the Go agent answers `unsupported`
to getsockname and accept on it and the case is skipped for Go, with that reason.
"""

from packaging.version import Version

from conformance.capture import tcp
from conformance.case import PORT, connected
from conformance.expectations import kernel_version
from conformance.timing import slack

BOUND_DUMP_KERNEL = Version("6.8")  # sock_diag dumps bound-only sockets (TCP_BOUND_INACTIVE) from here on
AT_ONCE_MS = 500  # ms: accept() on a socket that does not listen fails at once; the call's own timeout is 1 s


def bind_only(agent, family, server, record):
    """A target socket bound to (server, PORT), never listened on."""
    s = agent.socket("tcp", family).h
    bound = agent.bind(s, server, PORT).check("bind the socket that is never listened on")
    record("bind_deferred", bound.get("deferred", 0))
    return s


def check_bound_only(net, agent, s, family, server, record):
    """API and kernel: s is bound to (server, PORT) and does not listen. Skips when the language has no such socket."""
    # Go: unsupported (bind is deferred, no socket exists yet) -> skip
    name = agent.getsockname(s).check("getsockname on the bound socket")
    assert name.endpoint == (server, PORT), f"getsockname after bind: {name.addr}:{name.port}, expected {server}:{PORT}"
    assert not net.target.sockets("LISTEN", sport=PORT), "a socket only bound is LISTEN in the kernel table"
    if Version(kernel_version()) >= BOUND_DUMP_KERNEL:
        rows = [(r.state, r.src, r.sport) for r in net.target.sockets("CLOSE", family=family, bound=True, sport=PORT)]
        record("kernel_bound", ", ".join(f"{state} {src}:{sport}" for state, src, sport in rows) or "none")
        assert rows == [("CLOSE", server, PORT)], (
            f"the kernel should show one bound socket in CLOSE at {server}:{PORT}, shows {rows}"
        )
    else:
        record("kernel_bound", f"not dumped before Linux {BOUND_DUMP_KERNEL}")


def test_listen_accept_einval(net, agent, family, record):
    """accept() on a bound socket that is not listening fails at once with EINVAL; after listen() it works."""
    server = net.target.addr(family)
    s = bind_only(agent, family, server, record)
    # Kernel, before accept() is judged: bind() alone did not make the socket listen.
    assert not net.target.sockets("LISTEN", sport=PORT), (
        f"the socket that was only bound is LISTEN in the kernel table: bind() to port {PORT} listened"
    )

    r = agent.accept(s, 1.0)
    if r.outcome == "unsupported":
        r.check()  # Go: no Accept without a Listener (bind is deferred) -> skipped with that reason
    record("errno", r.errno)
    record("accept_ms", f"{r.ms:.3f}")
    record.key(r.errno, f"{r.ms:.2f}ms")
    assert not net.target.sockets("LISTEN", sport=PORT), (
        f"accept() on the socket that was only bound made it listen (the kernel shows it LISTEN), then gave {r}"
    )
    assert r.errno == "EINVAL", f"expected err EINVAL from accept() on a socket that is not listening, got {r}"
    assert r.ms < slack(AT_ONCE_MS), (
        f"accept() on a non-listening socket took {r.ms:.0f} ms: it waited instead of failing"
    )
    assert not net.wire.tcp(), f"the failed accept() put something on the wire: {net.wire.summary()}"
    check_bound_only(net, agent, s, family, server, record)  # still bound, still not listening

    # listen() is what was missing: the same socket now takes a connection.
    agent.listen(s, 4).check("listen on the bound socket")
    assert net.target.wait_state("LISTEN", sport=PORT), "listen() did not make the socket LISTEN"
    client = net.peer_connect(family, server)
    assert connected(client) == 0, "a connect to the socket after listen() did not complete"
    cport = client.getsockname()[1]
    net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA"), "a SYN-ACK once the socket listens")
    a = agent.accept(s).check("accept on the socket after listen()")
    assert a.endpoint == (net.peer.addr(family), cport), f"accept() after listen() returned {a.addr}:{a.port}"


def test_listen_bound_refused(net, agent, family, record):
    """A connect to a port that is bound but not listening is refused with an RST."""
    server = net.target.addr(family)
    s = bind_only(agent, family, server, record)
    check_bound_only(net, agent, s, family, server, record)

    client = net.peer_connect(family, server)
    err = connected(client)
    assert err == 111, f"the peer's connect to a bound, non-listening port gave {err!r}, expected ECONNREFUSED (111)"
    cport = client.getsockname()[1]

    syn = net.wire.expect(tcp(sport=cport, dport=PORT, flags="S"), "the peer's SYN")
    rst = net.wire.expect(tcp(sport=PORT, dport=cport, has="R"), "an RST answering the SYN")
    record("rst", str(rst))
    record.key("RST, no LISTEN")
    assert rst.flags == "RA" and rst.ack == (syn.seq + 1) % 2**32, (
        f"the RST must ack the SYN (flags RA, ack {syn.seq + 1}): {rst}"
    )
    assert not net.wire.tcp(sport=PORT, has="S"), "the bound, non-listening port answered with a SYN-ACK"
    assert not net.target.sockets("LISTEN", sport=PORT), "the target shows a LISTEN socket on the port"
    assert not net.target.sockets(sport=PORT, dport=cport), "the refused connection left a socket on the target"
    check_bound_only(net, agent, s, family, server, record)  # the bound socket is still there, still not listening
