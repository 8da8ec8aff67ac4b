"""A server port held by a TIME_WAIT can be listened on again only if both sockets set SO_REUSEADDR.

Seed 003 (docs/seeds.md): the side that closes first ends in TIME_WAIT ("此时客户端进入TIME_WAT d等待
经过2MLS"), 60 s on Linux. When the target's server closes its connection first, that TIME_WAIT holds
the server's own listening port. A new listener on the port then fails with EADDRINUSE,
unless the old socket (the listener the connection came from: the accepted socket inherits
its options) and the new one both set SO_REUSEADDR. Go's bind is deferred, so the error
shows at listen(): the case accepts it at the first step that fails, bind or listen.

The variants: default (no option set by the program: the language's default decides),
reuseaddr (both sockets set it: the new listener works beside the TIME_WAIT), new_only (only
the new socket sets it, the old listener explicitly 0) and old_only (only the old listener,
the new socket explicitly 0): EADDRINUSE but for reuseaddr.

The languages differ in their default: Go, Java's ServerSocketChannel, Rust's TcpListener
and Node set SO_REUSEADDR on every listener, a plain Python socket and C do not. The default
variant is judged by the rebind itself; the default's value is read back (getsockopt on the
listener) and recorded where the API can read it. The portable expectation without options is
EADDRINUSE.
"""

import errno

import pytest

from conformance.capture import tcp
from conformance.case import PORT, End, assert_fin, connected

# SO_REUSEADDR on (the old listener, the new socket); None: left to the language's default
REUSEADDR = {"default": (None, None), "reuseaddr": (1, 1), "new_only": (0, 1), "old_only": (1, 0)}


def server_time_wait(net, agent, family, record, reuse=None):
    """A listener on PORT (SO_REUSEADDR set to `reuse` unless None), one connection, the server closes first.

    Returns (the listener's SO_REUSEADDR as read back after listen, the client's port); a `reuse` that
    does not read back fails here, before anything depends on it. Leaves the target with a TIME_WAIT
    on PORT and nothing listening there.
    """
    addr = net.target.addr(family)
    ls = agent.listener(addr, PORT, reuseaddr=reuse)
    read = agent.getsockopt(ls, "reuseaddr")
    if reuse is None:
        # The language's default is judged by the rebind itself; its value is extra evidence where it
        # can be read ("-": this API cannot read the option back).
        value = read.value if read.ok else "-"
        record("reuseaddr_default", value if read.ok else f"- ({read.outcome})")
    else:
        value = read.check("read back SO_REUSEADDR on the old listener").value
        record("reuseaddr_old", value)
        assert value == str(reuse), f"SO_REUSEADDR set to {reuse} on the old listener reads back {value}"

    client = net.peer_connect(family, addr, PORT)
    assert connected(client) == 0, "the peer could not connect to the target's listener"
    cport = client.getsockname()[1]
    conn = agent.accept(ls).h
    agent.close(ls).check("close the old listener")
    agent.close(conn).check("the server's close()")  # the server closes first...
    assert_fin(net.wire, End("target", net.target, addr, PORT, cport), "close()")
    assert net.peer.wait_state("CLOSE_WAIT", sport=cport, dport=PORT), "the peer did not get the server's FIN"
    client.close()  # ...then the client

    tw = net.target.wait_state("TIME_WAIT", sport=PORT, dport=cport)
    assert tw, f"the server closed first but its port {PORT} is not held by a TIME_WAIT"
    assert not net.target.sockets("LISTEN", sport=PORT), "the old listener is still listening"
    fin_t = net.wire.expect(tcp(sport=PORT, dport=cport, has="F"), "the server's FIN")
    fin_p = net.wire.expect(tcp(sport=cport, dport=PORT, has="F"), "the client's FIN")
    assert fin_t.time < fin_p.time, "the server's FIN must come first (the TIME_WAIT is the server's)"
    return value, cport


def listen_again(agent, family, addr, record, reuse=None):
    """socket, [setsockopt reuseaddr], bind, listen on PORT.

    Returns (step, reply, handle): the first step that failed and its reply, or listen's. A `reuse`
    that does not read back, before bind() (where it counts) or after the last step (a runtime may
    set its own), fails here, before the outcome is judged.
    """
    s = agent.socket("tcp", family).h
    if reuse is not None:
        agent.setsockopt(s, "reuseaddr", reuse).check("set SO_REUSEADDR on the new socket")
        value = agent.getsockopt(s, "reuseaddr").value
        record("reuseaddr_new_before_bind", value)
        assert value == str(reuse), f"SO_REUSEADDR set to {reuse} on the new socket reads back {value} before bind()"
    r = agent.bind(s, addr, PORT)
    if r.status == "unsupported":
        r.check()
    step, r = ("bind", r) if not r.ok else ("listen", agent.listen(s, 4))
    if reuse is not None:
        value = agent.getsockopt(s, "reuseaddr").value
        record("reuseaddr_new_after", value)
        assert value == str(reuse), f"SO_REUSEADDR set to {reuse} on the new socket reads back {value} after {step}()"
    return step, r, s


def assert_in_use(net, family, cport, step, r, note=""):
    assert r.errno == "EADDRINUSE", (
        f"listening again on port {PORT} held by TIME_WAIT must fail with EADDRINUSE (at bind or listen){note}: "
        f"{step}: {r}"
    )
    assert net.target.wait_state("TIME_WAIT", sport=PORT, dport=cport), "the TIME_WAIT is gone"
    assert not net.target.sockets("LISTEN", sport=PORT), "a listener exists on the port after the failure"
    # Nothing listens: a new SYN to the port is refused.
    late = net.peer_connect(family, net.target.addr(family), PORT)
    assert connected(late) == errno.ECONNREFUSED, f"a connect to port {PORT} after the failed listen was not refused"
    net.wire.expect(tcp(sport=PORT, dport=late.getsockname()[1], has="R"), "the RST refusing the new SYN")


def assert_listening_again(net, agent, family, cport, step, r, s):
    assert r.ok, f"with SO_REUSEADDR on both sockets, listening again on port {PORT} must succeed: {step}: {r}"
    # Kernel: the new LISTEN sits beside the TIME_WAIT; wire: it completes a new handshake.
    assert net.target.wait_state("LISTEN", sport=PORT), "no listener on the port after a successful listen"
    assert net.target.wait_state("TIME_WAIT", sport=PORT, dport=cport), "the TIME_WAIT is gone"
    again = net.peer_connect(family, net.target.addr(family), PORT)
    assert connected(again) == 0, "the new listener does not complete connections"
    aport = again.getsockname()[1]
    net.wire.expect(tcp(sport=PORT, dport=aport, flags="SA"), "the new listener's SYN-ACK")
    got = agent.accept(s).check("accept the new client")
    assert got.port == aport, f"accept() returned port {got.port}, the new client is {aport}"


@pytest.mark.parametrize("variant", list(REUSEADDR))
def test_rebind_time_wait(net, agent, family, variant, record):
    """The server closes first, its port held by a TIME_WAIT; a new listener on the port with SO_REUSEADDR as the
    variant sets it: EADDRINUSE unless both sockets set it (portable result without options: EADDRINUSE)."""
    old, new = REUSEADDR[variant]
    old_value, cport = server_time_wait(net, agent, family, record, old)
    step, r, s = listen_again(agent, family, net.target.addr(family), record, new)
    record("rebind_step", step)
    record("rebind_result", r.outcome)
    record.key(f"{r.outcome}@{step}" + (f" ra={old_value}" if old is None else ""))

    if old == new == 1:
        assert_listening_again(net, agent, family, cport, step, r, s)
    else:
        note = f" (the old listener's SO_REUSEADDR, left to the default, reads back {old_value})" if old is None else ""
        assert_in_use(net, family, cport, step, r, note)
