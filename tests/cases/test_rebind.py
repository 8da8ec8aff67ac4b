"""A server port held by a TIME_WAIT can be listened on again only if both sockets set SO_REUSEADDR.

Seed 003: the side that closes first ends in TIME_WAIT ("此时客户端进入TIME_WAT d等待 经过2MLS"),
60 s on Linux. When the target's server closes its connection first, that TIME_WAIT holds
the server's own listening port. A new listener on the port then fails with EADDRINUSE,
unless the old socket (the listener the connection came from: the accepted socket inherits
its options) and the new one both set SO_REUSEADDR. Go's bind is deferred, so the error
shows at listen(): the case accepts it at the first step that fails, bind or listen.

The languages differ in their default: Go sets SO_REUSEADDR on every listener, a plain
Python socket and C do not. The default is read back (getsockopt on a fresh listener)
and recorded; the portable expectation without options is EADDRINUSE.
"""
import errno

from conformance.capture import tcp
from conformance.case import connected

PORT = 7878


def server_time_wait(net, agent, family, reuse=None):
    """A listener on PORT (SO_REUSEADDR set to `reuse` unless None), one connection, the server closes first.

    Returns (the listener's SO_REUSEADDR as read back after listen, the client's port).
    Leaves the target with a TIME_WAIT on PORT and nothing listening there.
    """
    addr = net.target.addr(family)
    ls = agent.socket("tcp", family).h
    if reuse is not None:
        agent.setsockopt(ls, "reuseaddr", reuse).check()
    agent.bind(ls, addr, PORT).check()
    agent.listen(ls, 4).check()
    value = agent.getsockopt(ls, "reuseaddr").check()["value"]

    client = net.peer_connect(family, addr, PORT)
    assert connected(client, 2.0) == 0, "the peer could not connect to the target's listener"
    cport = client.getsockname()[1]
    conn = agent.accept(ls, 2.0).check().h
    agent.close(ls).check()
    agent.close(conn).check()  # the server closes first...
    assert net.wait_state(net.peer, "CLOSE_WAIT", sport=cport, dport=PORT), "the peer did not get the server's FIN"
    client.close()  # ...then the client

    tw = net.wait_state(net.target, "TIME_WAIT", sport=PORT, dport=cport)
    assert tw, f"the server closed first but its port {PORT} is not held by a TIME_WAIT: {net.sockets(net.target)}"
    assert not net.sockets(net.target, state="LISTEN", sport=PORT), "the old listener is still listening"
    fin_t = net.wire.expect(tcp(sport=PORT, dport=cport, has="F"), "the server's FIN")
    fin_p = net.wire.expect(tcp(sport=cport, dport=PORT, has="F"), "the client's FIN")
    assert fin_t.time < fin_p.time, "the server's FIN must come first (the TIME_WAIT is the server's)"
    return value, cport


def listen_again(agent, family, addr, reuse=None):
    """socket, [setsockopt reuseaddr], bind, listen on PORT.

    Returns (step, reply, handle): the first step that failed and its reply, or listen's.
    """
    s = agent.socket("tcp", family).h
    if reuse is not None:
        agent.setsockopt(s, "reuseaddr", reuse).check()
    r = agent.bind(s, addr, PORT)
    if r.status == "unsupported":
        r.check()
    if not r.ok:
        return "bind", r, s
    return "listen", agent.listen(s, 4), s


def assert_in_use(net, family, cport, step, r):
    assert r.errno == "EADDRINUSE", \
        f"listening again on port {PORT} held by TIME_WAIT must fail with EADDRINUSE (at bind or listen): {step}: {r}"
    assert net.wait_state(net.target, "TIME_WAIT", sport=PORT, dport=cport), "the TIME_WAIT is gone"
    assert not net.sockets(net.target, state="LISTEN", sport=PORT), "a listener exists on the port after the failure"
    # Nothing listens: a new SYN to the port is refused.
    late = net.peer_connect(family, net.target.addr(family), PORT)
    assert connected(late, 2.0) == errno.ECONNREFUSED, f"a connect to port {PORT} after the failed listen was not refused"
    net.wire.expect(tcp(sport=PORT, dport=late.getsockname()[1], has="R"), "the RST refusing the new SYN")


def test_rebind_time_wait_default(net, agent, family, record):
    """No option set by the program: the language's defaults decide. Portable result: EADDRINUSE."""
    default, cport = server_time_wait(net, agent, family)
    step, r, _ = listen_again(agent, family, net.target.addr(family))
    record("reuseaddr_default", default)
    record("rebind_step", step)
    record("rebind_result", r.errno or r.status)
    record.key(f"{r.errno or r.status}@{step} ra={default}")
    assert_in_use(net, family, cport, step, r)


def test_rebind_time_wait_reuseaddr(net, agent, family, record):
    """Both the old listener and the new socket set SO_REUSEADDR: the new listener works beside the TIME_WAIT."""
    old, cport = server_time_wait(net, agent, family, reuse=1)
    assert old == "1", f"SO_REUSEADDR set to 1 on the old listener reads back {old}"
    step, r, s = listen_again(agent, family, net.target.addr(family), reuse=1)
    assert r.ok, f"with SO_REUSEADDR on both sockets, listening again on port {PORT} must succeed: {step}: {r}"

    # Kernel: the new LISTEN sits beside the TIME_WAIT; wire: it completes a new handshake.
    assert net.wait_state(net.target, "LISTEN", sport=PORT), "no listener on the port after a successful listen"
    assert net.wait_state(net.target, "TIME_WAIT", sport=PORT, dport=cport), "the TIME_WAIT is gone"
    again = net.peer_connect(family, net.target.addr(family), PORT)
    assert connected(again, 2.0) == 0, "the new listener does not complete connections"
    aport = again.getsockname()[1]
    net.wire.expect(tcp(sport=PORT, dport=aport, flags="SA"), "the new listener's SYN-ACK")
    got = agent.accept(s, 2.0).check()
    assert int(got["port"]) == aport, f"accept() returned port {got['port']}, the new client is {aport}"
    record("rebind_step", step)
    record.key(f"ok@{step}")


def test_rebind_time_wait_new_only(net, agent, family, record):
    """Only the new socket sets SO_REUSEADDR (the old listener explicitly 0): EADDRINUSE."""
    old, cport = server_time_wait(net, agent, family, reuse=0)
    assert old == "0", f"SO_REUSEADDR set to 0 on the old listener reads back {old}"
    step, r, _ = listen_again(agent, family, net.target.addr(family), reuse=1)
    record("rebind_step", step)
    record.key(f"{r.errno or r.status}@{step}")
    assert_in_use(net, family, cport, step, r)


def test_rebind_time_wait_old_only(net, agent, family, record):
    """Only the old listener set SO_REUSEADDR (the new socket explicitly 0): EADDRINUSE."""
    old, cport = server_time_wait(net, agent, family, reuse=1)
    assert old == "1", f"SO_REUSEADDR set to 1 on the old listener reads back {old}"
    step, r, _ = listen_again(agent, family, net.target.addr(family), reuse=0)
    record("rebind_step", step)
    record.key(f"{r.errno or r.status}@{step}")
    assert_in_use(net, family, cport, step, r)
