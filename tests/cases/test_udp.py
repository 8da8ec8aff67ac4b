"""UDP, the contrast: no connection, no handshake; a closed port answers with ICMP, not an RST.

Seed 004: "而作为无连接的UDP协议,则不需要上述三个函数" — UDP needs none of listen(),
accept() and connect(): a datagram reaches a bound UDP socket directly, and recvfrom()
gives the sender's address with it. The wire shows the datagram alone, no TCP segment.

A UDP socket's connect() only records the peer (nothing is sent). When a datagram sent
on a connected UDP socket reaches a port with no socket, the peer's kernel answers with
an ICMP port unreachable (IPv4 type 3 code 3, IPv6 type 1 code 4), not an RST, and the
kernel reports it to the connected socket: the next send or recv fails with ECONNREFUSED.
"""
import socket

from conformance.topology import delta

UDP_PORT = 5353
CLOSED_PORT = 9
GREETING = b"one datagram, no handshake"
PROBE = b"anyone on port 9?"
PORT_UNREACHABLE = {"v4": ("icmp", 3, 3), "v6": ("icmp6", 1, 4)}


def snmp(host, family):
    """The namespace's UDP and ICMP counters of the family (from /proc/net/snmp or snmp6)."""
    udp, icmp = ("Udp", "Icmp") if family == "v4" else ("Udp6", "Icmp6")
    c = host.counters()
    return {"InDatagrams": c[f"{udp}.InDatagrams"], "NoPorts": c[f"{udp}.NoPorts"],
            "InDestUnreachs": c[f"{icmp}.InDestUnreachs"], "OutDestUnreachs": c[f"{icmp}.OutDestUnreachs"]}


def rises(before, after):
    return delta(before, after, *before)


def udp_rows(host, **match):
    return [s for s in host.sockets(proto=socket.IPPROTO_UDP) if all(getattr(s, k) == v for k, v in match.items())]


def test_udp_no_handshake(net, agent, family, record):
    """A datagram reaches a bound UDP socket with no listen() or accept(); recv() gives the sender's address."""
    addr = net.target.addr(family)
    u = agent.socket("udp", family).h
    agent.bind(u, addr, UDP_PORT).check()
    bound = udp_rows(net.target, sport=UDP_PORT)
    assert bound and bound[0].state == "CLOSE", f"the target has no unconnected UDP socket on {UDP_PORT}: {bound}"
    before = snmp(net.target, family)

    sender = net.peer_socket(family, socket.SOCK_DGRAM)
    sender.bind((net.peer.addr(family), 0))
    sport = sender.getsockname()[1]
    sender.sendto(GREETING, (addr, UDP_PORT))
    dgram = net.wire.expect(lambda x: x.proto == "udp" and x.dport == UDP_PORT, "the peer's datagram")
    queued = [x for x in udp_rows(net.target, sport=UDP_PORT) if x.rqueue > 0]
    assert queued, "the datagram is not waiting in the UDP socket's receive queue before recv()"

    got = agent.recv(u, 2048, 2.0)
    assert got.ok and got["data"] == GREETING.hex(), f"recv() on the bound UDP socket must return the datagram: {got}"
    assert (got["addr"], int(got["port"])) == (net.peer.addr(family), sport), \
        f"recv() must give the sender's address {net.peer.addr(family)}:{sport}: {got}"
    assert dgram.length == len(GREETING) and dgram.sport == sport, f"not the datagram sent: {dgram}"
    assert not net.wire.tcp(), "TCP segments on the wire: UDP has no handshake"
    others = [x for x in net.wire.segments() if x.proto in ("udp", "icmp") or (x.proto == "icmp6" and x.icmp_type < 128)]
    assert others == [dgram], f"the datagram must be alone on the wire (no answer, no ICMP error): {others}"
    up = rises(before, snmp(net.target, family))
    assert up["InDatagrams"] == 1, f"the target's kernel must count one datagram delivered: {up}"

    record("recvq_truesize", queued[0].rqueue)
    record("sender", f"{got['addr']}:{got['port']}")
    record.key(f"recv {got['n']}B, no TCP")


def test_udp_refused(net, agent, family, record):
    """A connected UDP socket: a datagram to a closed port brings an ICMP port unreachable, then ECONNREFUSED."""
    peer = net.peer.addr(family)
    u = agent.socket("udp", family).h
    conn = agent.connect(u, peer, CLOSED_PORT, 2.0).check()
    assert not [x for x in net.wire.segments() if x.proto in ("tcp", "udp")], \
        "connect() on a UDP socket must send nothing"
    local = agent.getsockname(u).check()
    lport = int(local["port"])
    before_t, before_p = snmp(net.target, family), snmp(net.peer, family)

    sent = agent.send_bytes(u, PROBE)
    assert sent.ok and sent["n"] == str(len(PROBE)), f"the first send() on the connected UDP socket must succeed: {sent}"
    dgram = net.wire.expect(lambda x: x.proto == "udp" and x.sport == lport and x.dport == CLOSED_PORT,
                            "the target's datagram to the closed port")
    proto, kind, code = PORT_UNREACHABLE[family]
    icmp = net.wire.expect(lambda x: x.proto == proto and x.icmp_type == kind and x.src == peer,
                           f"an {proto} port unreachable (type {kind} code {code}) from the peer")
    assert icmp.icmp_code == code, f"the ICMP error must be port unreachable (type {kind} code {code}): {icmp}"
    assert icmp.time > dgram.time, "the ICMP error must answer the datagram"

    r = agent.recv(u, 2048, 2.0)
    assert r.errno == "ECONNREFUSED", f"recv() after the ICMP port unreachable must fail with ECONNREFUSED: {r}"
    assert not net.wire.tcp(), "TCP segments on the wire: the refusal of a UDP datagram is not an RST"
    up_t, up_p = rises(before_t, snmp(net.target, family)), rises(before_p, snmp(net.peer, family))
    assert up_p["NoPorts"] == 1, f"the peer's kernel must count one datagram to a port with no socket: {up_p}"
    assert up_t["InDestUnreachs"] == 1, f"the target's kernel must count one ICMP destination unreachable: {up_t}"

    record("connect_ms", f"{conn.ms:.3f}")
    record("icmp", str(icmp))
    record("errno", r.errno)
    record.key(f"{kind}/{code} {r.errno}")
