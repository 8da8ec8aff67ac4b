"""A socket that did not choose its port gets one from the kernel's ephemeral range.

Seed 000 (docs/seeds.md): "7878是服务器端口,但是客户端连接上后用的却是39709作为通信端口" — the client,
which never bound, talks from a port the kernel picked. Seed 002: "客户端在调用函数connect前
可以不调用bind函数 ... 内核会确定源IP地址,并按照一定的算法选择一个临时端口作为源端口", and
"如果将端口设置为0,相当于把端口的选择权交给操作系统内核".

The range is net.ipv4.ip_local_port_range of the target's namespace (it governs
IPv6 too); the case narrows it to RANGE so that "from the range" is a sharp claim.
For the port 0 case every target binds port 0, listens, then asks getsockname:
Go binds only when it listens (bind is deferred), so that order works everywhere.
"""

from conformance.capture import tcp
from conformance.case import PORT, connected

RANGE = (40000, 40009)
CLIENTS = 3


def narrow_range(net, record):
    net.target.sysctl("net.ipv4.ip_local_port_range", f"{RANGE[0]} {RANGE[1]}")
    got = tuple(int(x) for x in net.target.sysctl("net.ipv4.ip_local_port_range").split())
    assert got == RANGE, f"could not set ip_local_port_range in the target namespace: {got}"
    record("ip_local_port_range", f"{RANGE[0]}-{RANGE[1]}")


def test_ephemeral_range(net, agent, family, record):
    """connect() without bind() gets a source port from ip_local_port_range: kernel, API and SYN agree."""
    narrow_range(net, record)
    net.peer_listener(family)  # backlog 16: the clients wait there, never accepted
    peer, me = net.peer.addr(family), net.target.addr(family)

    ports = []
    for n in range(1, CLIENTS + 1):
        s = agent.socket("tcp", family).h
        agent.connect(s, peer, PORT).check(f"client {n}'s connect to the peer's listener")
        # Kernel first: the new connection's source port is the kernel's choice, whatever the agent reports.
        new = [x for x in net.target.sockets("ESTABLISHED", dport=PORT) if x.sport not in ports]
        record(f"kernel_client_{n}", " ".join(f"{x.src}:{x.sport}" for x in new) or "none")
        assert len(new) == 1, (
            f"client {n}: expected one new ESTABLISHED socket to port {PORT}, the kernel has {len(new)}"
        )
        port = new[0].sport
        ports.append(port)
        record("ports", " ".join(map(str, ports)))
        assert new[0].src == me, f"client {n}'s connection is from {new[0].src} in the kernel, expected {me}"
        assert RANGE[0] <= port <= RANGE[1], (
            f"client {n} got source port {port}, outside ip_local_port_range {RANGE[0]}-{RANGE[1]}"
        )
        name = agent.getsockname(s)
        assert name.endpoint == (me, port), (
            f"client {n}: getsockname reports {name.addr}:{name.port}, the kernel's socket is {me}:{port}"
        )
        net.wire.expect(tcp(src=me, dport=PORT, flags="S", sport=port), f"client {n}'s SYN from port {port}")
        syns = net.wire.tcp(src=me, dport=PORT, flags="S")
        assert {x.sport for x in syns} <= set(ports), (
            f"a SYN left from a port the kernel's table never showed: {[str(x) for x in syns]}"
        )

    record.key("in range", f"{min(ports)}..{max(ports)}")
    assert len(set(ports)) == CLIENTS, f"the {CLIENTS} concurrent clients share ports: {ports}"
    kernel_ports = sorted(x.sport for x in net.target.sockets("ESTABLISHED", dport=PORT))
    assert kernel_ports == sorted(ports), f"kernel table ports {kernel_ports}, the clients were on {sorted(ports)}"


def test_ephemeral_port_zero(net, agent, family, record):
    """bind() to port 0 lets the kernel choose: the kernel listens there, getsockname reports it."""
    narrow_range(net, record)
    server = net.target.addr(family)
    ls = agent.listener(server, 0)
    # Kernel first: where the listener is, whatever the agent reports.
    rows = net.target.sockets("LISTEN")
    record("kernel_listen", " ".join(f"{x.src}:{x.sport}" for x in rows) or "none")
    assert len(rows) == 1, f"the kernel should show one listener after bind to port 0 and listen(), shows {len(rows)}"
    assert rows[0].src == server, f"bind() to {server} did not take effect: the kernel's listener is on {rows[0].src}"
    port = rows[0].sport
    record("port", port)
    record.key("kernel port", str(port))
    assert RANGE[0] <= port <= RANGE[1], (
        f"bind to port 0 gave port {port}, outside ip_local_port_range {RANGE[0]}-{RANGE[1]}"
    )
    name = agent.getsockname(ls)
    assert name.endpoint == (server, port), (
        f"getsockname reports {name.addr}:{name.port}, the kernel's listener is {server}:{port}"
    )

    client = net.peer_connect(family, server, port)
    assert connected(client) == 0, f"a connect to the reported port {port} did not complete"
    cport = client.getsockname()[1]
    syn = net.wire.expect(tcp(sport=cport, dport=port, flags="S"), f"the peer's SYN to port {port}")
    net.wire.expect(tcp(sport=port, dport=cport, flags="SA", ack=syn.seq + 1), f"a SYN-ACK from port {port}")
    a = agent.accept(ls).check("accept on the port-0 listener")
    assert a.port == cport, f"accept() on the port-0 listener returned the peer port {a.port}, expected {cport}"
