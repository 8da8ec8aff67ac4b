"""A listener bound to the wildcard address takes connections to every local address; a specific one does not.

Seed 002 (docs/seeds.md): "通配地址:一台机器有两块网卡,向这两块网卡发送的IP包都会被处理 (IPv4:INADDR_ANY;
IPv6:IN6ADDR_ANY)" and "可以把地址设置为本机IP地址 — 告诉操作系统内核,仅仅对目标IP是本机IP地址的IP包进行处理".

The target gets a second address on its link (SECOND4 / SECOND6, nodad), and the
peer a permanent neighbour entry for it (the topology installs them only for the
link's first two addresses). A connect to an address the listener is not bound
to finds no listener: the kernel answers the SYN with an RST.
"""

from conformance.capture import tcp
from conformance.case import PORT, connected

SECOND4, SECOND6 = "198.51.100.3", "2001:db8::3"
WILDCARD = {"v4": "0.0.0.0", "v6": "::"}


def add_second_address(net, family) -> str:
    return net.topo.add_address(SECOND4 if family == "v4" else SECOND6, family)


def bound_to(net, addr: str, record) -> None:
    """Kernel: the target's one listener on PORT is bound to addr, as its bind() asked, before any connect."""
    rows = net.target.sockets("LISTEN", sport=PORT)
    record("listen_addrs", " ".join(x.src for x in rows) or "none")
    assert [x.src for x in rows] == [addr], (
        f"bind() to {addr} did not take effect: the kernel's listener on port {PORT} is on "
        f"{', '.join(x.src for x in rows) or 'no address (no listener)'}"
    )


def test_wildcard_any(net, agent, family, record):
    """A listener on INADDR_ANY / in6addr_any accepts connections to both of the target's addresses."""
    first, second = net.target.addr(family), add_second_address(net, family)
    client_addr = net.peer.addr(family)
    ls = agent.listener(WILDCARD[family], PORT)
    bound_to(net, WILDCARD[family], record)

    used = []
    for dst in (first, second):
        client = net.peer_connect(family, dst)
        err = connected(client)
        assert err == 0, f"a connect to {dst}:{PORT} did not reach the wildcard listener (errno {err!r})"
        cport = client.getsockname()[1]
        syn = net.wire.expect(tcp(sport=cport, dst=dst, dport=PORT, flags="S"), f"the SYN to {dst}")
        net.wire.expect(tcp(src=dst, sport=PORT, dport=cport, flags="SA", ack=syn.seq + 1), f"a SYN-ACK from {dst}")
        a = agent.accept(ls).check(f"accept the connection to {dst}")
        assert a.endpoint == (client_addr, cport), (
            f"accept() returned the peer {a.addr}:{a.port}, the client is {client_addr}:{cport}"
        )
        local = agent.getsockname(a.h)
        used.append(local.addr)
        record("accepted_local_addrs", " ".join(used))
        assert local.endpoint == (dst, PORT), (
            f"the connection to {dst} was accepted with the local name {local.addr}:{local.port}"
        )
        assert net.target.wait_state("ESTABLISHED", src=dst, sport=PORT, dport=cport), (
            f"the kernel has no ESTABLISHED socket {dst}:{PORT} for the client port {cport}"
        )

    record.key("both addrs")
    assert not net.wire.tcp(sport=PORT, has="R"), "a connection to the wildcard listener was refused"
    name = agent.getsockname(ls)
    assert name.endpoint == (WILDCARD[family], PORT), (
        f"the listener's name is {name.addr}:{name.port}, expected {WILDCARD[family]}:{PORT}"
    )
    bound_to(net, WILDCARD[family], record)  # still the one listener


def test_wildcard_specific(net, agent, family, record):
    """A listener bound to one address refuses connections to the target's other address."""
    first, second = net.target.addr(family), add_second_address(net, family)
    ls = agent.listener(first, PORT)
    bound_to(net, first, record)

    other = net.peer_connect(family, second)
    err = connected(other)
    assert err == 111, f"a connect to the other address {second} gave {err!r}, expected ECONNREFUSED (111)"
    oport = other.getsockname()[1]
    syn = net.wire.expect(tcp(sport=oport, dst=second, dport=PORT, flags="S"), f"the SYN to {second}")
    rst = net.wire.expect(tcp(src=second, sport=PORT, dport=oport, has="R"), f"an RST from {second}")
    record("rst", str(rst))
    record.key("other addr: RST")
    assert rst.flags == "RA" and rst.ack == (syn.seq + 1) % 2**32, f"the RST must ack the SYN: {rst}"
    assert not net.wire.tcp(src=second, sport=PORT, has="S"), f"{second} answered with a SYN-ACK"

    mine = net.peer_connect(family, first)
    assert connected(mine) == 0, f"a connect to the bound address {first} did not complete"
    mport = mine.getsockname()[1]
    a = agent.accept(ls).check(f"accept the connection to {first}")
    assert a.port == mport, f"accept() returned the peer port {a.port}, expected {mport}"
    local = agent.getsockname(a.h)
    assert local.addr == first, f"the accepted connection's local address is {local.addr}, expected {first}"
    bound_to(net, first, record)  # still the one listener
    assert not net.target.sockets(src=second, sport=PORT), f"the kernel has a socket on {second}:{PORT}"
