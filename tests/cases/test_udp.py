"""UDP, the contrast: no connection, no handshake; a closed port answers with ICMP, not an RST.

Seed 004 (docs/seeds.md): "而作为无连接的UDP协议,则不需要上述三个函数" — UDP needs none of listen(),
accept() and connect(): a datagram reaches a bound UDP socket directly, and recvfrom()
gives the sender's address with it. The wire shows the datagram alone, no TCP segment.

A UDP socket's connect() only records the peer (nothing is sent). When a datagram sent
on a connected UDP socket reaches a port with no socket, the peer's kernel answers with
an ICMP port unreachable (IPv4 type 3 code 3, IPv6 type 1 code 4), not an RST, and the
kernel reports it to the connected socket: the next send or recv fails with ECONNREFUSED.
"""

import socket

from conformance.case import CLOSED_PORT
from conformance.timing import holds, wait_until

UDP_PORT = 5353
GREETING = b"one datagram, no handshake"
PROBE = b"anyone on port 9?"
PORT_UNREACHABLE = {"v4": ("icmp", 3, 3), "v6": ("icmp6", 1, 4)}
IN_DATAGRAMS = {"v4": "Udp.InDatagrams", "v6": "Udp6.InDatagrams"}  # datagrams delivered to a socket
NO_PORTS = {"v4": "Udp.NoPorts", "v6": "Udp6.NoPorts"}  # datagrams to a port with no socket
IN_UNREACH = {"v4": "Icmp.InDestUnreachs", "v6": "Icmp6.InDestUnreachs"}


def test_udp_no_handshake(net, agent, family, record):
    """A datagram reaches a bound UDP socket with no listen() or accept(); recv() gives the sender's address."""
    addr = net.target.addr(family)
    u = agent.socket("udp", family).h
    agent.bind(u, addr, UDP_PORT).check("bind the UDP socket")
    bound = net.target.sockets(proto="udp", sport=UDP_PORT)
    assert bound and bound[0].state == "CLOSE", f"the target has no unconnected UDP socket on {UDP_PORT}"
    before = net.target.counters(IN_DATAGRAMS[family])

    sender = net.peer_socket(family, socket.SOCK_DGRAM)
    sender.bind((net.peer.addr(family), 0))
    sport = sender.getsockname()[1]
    sender.sendto(GREETING, (addr, UDP_PORT))
    dgram = net.wire.expect(lambda x: x.proto == "udp" and x.dport == UDP_PORT, "the peer's datagram")

    def queued():
        return [x for x in net.target.sockets(proto="udp", sport=UDP_PORT) if x.rqueue > 0]

    waiting = wait_until(queued)
    record("recvq_truesize", waiting[0].rqueue if waiting else 0)
    # The program has not called recv(): the datagram waits in the receive queue, where the runtime
    # leaves it too (an event loop that reads on its own would not). The kernel counts a datagram
    # delivered when a program reads it (udp_recvmsg), so the counter is read after the wait: a
    # runtime that reads ahead may do so at any time during it.
    stayed = bool(waiting) and holds(queued)
    delivered = net.target.rise(before)[IN_DATAGRAMS[family]]
    record("delivered_before_recv", delivered)
    assert stayed, (
        f"the runtime read the datagram before recv() was called: the kernel delivered it ({IN_DATAGRAMS[family]} "
        f"rose by {delivered}) and the receive queue emptied on its own"
        if delivered
        else "the datagram is not waiting in the UDP socket's receive queue before recv()"
    )

    got = agent.recv(u, 2048, 2.0).check("recv() on the bound UDP socket must return the datagram")
    record("sender", f"{got.addr}:{got.port}")
    record.key(f"recv {got.n}B, no TCP")
    assert got.data == GREETING, f"recv() on the bound UDP socket must return the datagram: {got}"
    assert got.endpoint == (net.peer.addr(family), sport), (
        f"recv() must give the sender's address {net.peer.addr(family)}:{sport}: {got}"
    )
    assert dgram.length == len(GREETING) and dgram.sport == sport, f"not the datagram sent: {dgram}"
    assert not net.wire.tcp(), "TCP segments on the wire: UDP has no handshake"
    others = [
        x for x in net.wire.segments() if x.proto in ("udp", "icmp") or (x.proto == "icmp6" and x.icmp_type < 128)
    ]
    assert others == [dgram], f"the datagram must be alone on the wire (no answer, no ICMP error): {others}"
    up = net.target.rise(before)
    assert up[IN_DATAGRAMS[family]] == 1, f"the target's kernel must count one datagram delivered: {up}"


def test_udp_refused(net, agent, family, record):
    """A connected UDP socket: a datagram to a closed port brings an ICMP port unreachable, then ECONNREFUSED."""
    peer = net.peer.addr(family)
    u = agent.socket("udp", family).h
    conn = agent.connect(u, peer, CLOSED_PORT, 2.0).check("connect() the UDP socket to the peer's closed port")
    record("connect_ms", f"{conn.ms:.3f}")
    assert not [x for x in net.wire.segments() if x.proto in ("tcp", "udp")], (
        "connect() on a UDP socket must send nothing"
    )
    name = agent.getsockname(u)
    lport = name.port
    record("local_port", lport)
    assert lport != 0, f"connect() on the UDP socket did not bind it: getsockname gives port 0 ({name})"
    connected = net.target.sockets(proto="udp", sport=lport, dst=peer, dport=CLOSED_PORT)
    record("udp_socket", " ".join(x.state for x in connected) or "(none)")
    assert [x for x in connected if x.state == "ESTABLISHED"], (
        f"connect() on the UDP socket did not connect it: the kernel's UDP table has no socket on port {lport} "
        f"connected to {peer} port {CLOSED_PORT}:\n{net.target.table()}"
    )
    before_target, before_peer = net.target.counters(IN_UNREACH[family]), net.peer.counters(NO_PORTS[family])

    sent = agent.send(u, PROBE).check("the first send() on the connected UDP socket: nothing has refused it yet")
    assert sent.n == len(PROBE), f"the first send() on the connected UDP socket must send the whole datagram: {sent}"
    dgram = net.wire.expect(
        lambda x: x.proto == "udp" and x.sport == lport and x.dport == CLOSED_PORT,
        "the target's datagram to the closed port",
    )
    proto, kind, code = PORT_UNREACHABLE[family]
    icmp = net.wire.expect(
        lambda x: x.proto == proto and x.icmp_type == kind and x.src == peer,
        f"an {proto} port unreachable (type {kind} code {code}) from the peer",
    )
    record("icmp", str(icmp))
    assert icmp.icmp_code == code, f"the ICMP error must be port unreachable (type {kind} code {code}): {icmp}"
    assert icmp.time > dgram.time, "the ICMP error must answer the datagram"

    r = agent.recv(u, 2048, 2.0)
    record("errno", r.errno)
    record.key(f"{icmp.icmp_type}/{icmp.icmp_code} {r.errno}")
    assert r.errno == "ECONNREFUSED", f"recv() after the ICMP port unreachable must fail with ECONNREFUSED: {r}"
    assert not net.wire.tcp(), "TCP segments on the wire: the refusal of a UDP datagram is not an RST"
    up_target, up_peer = net.target.rise(before_target), net.peer.rise(before_peer)
    assert up_peer[NO_PORTS[family]] == 1, (
        f"the peer's kernel must count one datagram to a port with no socket: {up_peer}"
    )
    assert up_target[IN_UNREACH[family]] == 1, (
        f"the target's kernel must count one ICMP destination unreachable: {up_target}"
    )
