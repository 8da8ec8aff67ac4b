"""connect() to an unreachable destination fails with the errno of what made it unreachable.

Seed 002: "客户端发出的SYN包在网络上引起destination unreachable,即目标不可达错误 ...
场景:客户端与服务端路由不通". Four outcomes, each checked by what the target's
API returned, what crossed the wire, and the kernel's tables and counters:

- a router answers the SYN with ICMP host unreachable: EHOSTUNREACH. The peer
  is the router for 203.0.113.0/24 (2001:db8:1::/64); it has the prefix on its
  link but nobody owns the address, so its neighbour discovery fails and it
  sends IPv4 type 3 code 1 (host unreachable), IPv6 type 1 code 3 (address
  unreachable). (An IPv6 route of type `unreachable` would send type 1 code 0,
  no route, which gives ENETUNREACH: IPv6's "host unreachable" is code 3.)
- a router answers with ICMP net unreachable: ENETUNREACH. The peer routes but
  has no route for the prefix: IPv4 type 3 code 0, IPv6 type 1 code 0.
- the target itself has no route: ENETUNREACH at once, nothing on the wire.
- an on-link address where no host answers neighbour discovery: EHOSTUNREACH
  after the target's own probes (lowered to 2 x 100 ms in its namespace).

In each ICMP case the first ICMP ends connect(): one SYN on the wire, no
retransmission. The router's ICMP is kept about 100 ms away from the SYN (the
net case delays it with tbf, the host case waits for the router's neighbour
probes): on a zero-latency veth an ICMP that arrives while connect() still
holds the socket lock is only kept as a soft error (TcpExt.LockDroppedIcmps);
measured here, IPv4 still failed at once, but IPv6 failed only at the SYN
retransmission 1 s later, at the second ICMP.
Every connect() has TCP_SYNCNT=1 and a 5 s timeout of its own, so a silent
drop fails in about 3 s, not 133 s.
"""
import socket
import time

from pyroute2 import NetlinkError

from conformance import shaping
from conformance.capture import tcp
from conformance.topology import delta

PORT = 80
SYNCNT = 1
CONNECT_TIMEOUT = 5.0
REMOTE = {"v4": ("203.0.113.5", "203.0.113.0", 24), "v6": ("2001:db8:1::5", "2001:db8:1::", 64)}
ON_LINK = {"v4": "198.51.100.50", "v6": "2001:db8::50"}  # on the target's link; nobody owns it
PROBES, PROBE_MS = 2, 100  # lowered neighbour discovery: 2 probes, 100 ms apart
ROUTER_DELAY = 0.1  # s: the net-unreachable router's ICMP waits this long in its egress
HOST_UNREACH = {"v4": (3, 1), "v6": (1, 3)}  # ICMP host unreachable / ICMPv6 address unreachable
NET_UNREACH = {"v4": (3, 0), "v6": (1, 0)}  # ICMP net unreachable / ICMPv6 no route
NUD_FAILED = 0x20
AF = {"v4": socket.AF_INET, "v6": socket.AF_INET6}


# -- evidence helpers ------------------------------------------------------------
def icmp_errors(net) -> list:
    """Every ICMP destination unreachable on the wire (Segment.quoted: the packet it quotes)."""
    return [x for x in net.wire.segments() if x.quoted]


def neighbour_probe(family: str, addr: str):
    """A predicate: an ARP request (v4) or neighbour solicitation (v6) for addr."""
    if family == "v4":
        return lambda x: x.proto == "arp" and x.flags == "request" and x.target == addr
    return lambda x: x.proto == "icmp6" and x.icmp_type == 135 and x.target == addr


def neighbour_state(host, addr: str) -> int | None:
    def run(ipr):
        for n in ipr.get_neighbours(ifindex=host.ifindex):
            if n.get_attr("NDA_DST") == addr:
                return n["state"]
        return None

    return host.netlink(run)


def route_error(host, addr: str) -> int | None:
    """The errno of a route lookup for addr in host's namespace (None: there is a route)."""

    def run(ipr):
        try:
            ipr.route("get", dst=addr)
        except NetlinkError as e:
            return e.code
        return None

    return host.netlink(run)


def icmp_in_unreach(family: str) -> str:
    return "Icmp.InDestUnreachs" if family == "v4" else "Icmp6.InDestUnreachs"


def out_no_routes(family: str) -> str:
    return "Ip.OutNoRoutes" if family == "v4" else "Ip6.OutNoRoutes"


# -- setup helpers ----------------------------------------------------------------
def route_via_peer(net, family: str) -> str:
    """The target routes REMOTE's prefix via the peer, which forwards; returns the remote address."""
    remote, prefix, plen = REMOTE[family]
    net.target.netlink(lambda ipr: ipr.route("add", dst=prefix, dst_len=plen, gateway=net.peer.addr(family),
                                             family=AF[family]))
    net.peer.sysctls({
        "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
        # ICMP errors unthrottled, and no ICMP redirect (the router forwards back out its only link).
        "net.ipv4.icmp_ratelimit": "0", "net.ipv6.icmp.ratelimit": "0",
        "net.ipv4.conf.all.send_redirects": "0", f"net.ipv4.conf.{net.peer.ifname}.send_redirects": "0",
    })
    # The router also sends an ICMPv6 redirect (the destination is "on-link" behind the same link):
    # the target ignores it, so its route stays via the router.
    net.target.sysctls({"net.ipv6.conf.all.accept_redirects": "0",
                        f"net.ipv6.conf.{net.target.ifname}.accept_redirects": "0"})
    return remote


def wait_link_local(host, timeout: float = 3.0) -> bool:
    """Wait (bounded) until host's veth end has its IPv6 link-local address.

    A router sends neighbour solicitations from it; the kernel adds it when link
    watch reports the veth's carrier, up to about 1 s after the link is made.
    Until then a router's solicitation is not sent at all (the neighbour entry
    still fails, silently).
    """
    deadline = time.monotonic() + timeout

    def has_link_local(ipr):
        return any(a.get_attr("IFA_ADDRESS", "").startswith("fe80:")
                   for a in ipr.get_addr(family=socket.AF_INET6, index=host.ifindex))

    while True:
        if host.netlink(has_link_local):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def lower_neighbour_probes(host) -> None:
    host.sysctls({f"net.{ip}.neigh.{host.ifname}.{key}": value
                  for ip in ("ipv4", "ipv6")
                  for key, value in (("mcast_solicit", PROBES), ("app_solicit", 0), ("retrans_time_ms", PROBE_MS))})


def connect(agent, family: str, addr: str):
    s = agent.socket("tcp", family).h
    agent.setsockopt(s, "syncnt", SYNCNT).check()
    return agent.connect(s, addr, PORT, CONNECT_TIMEOUT)


def check_icmp_ended_connect(net, family, r, remote, expected, what):
    """One SYN, one ICMP of the expected type and code quoting it, and connect() ended by that ICMP."""
    syn = net.wire.expect(tcp(dst=remote, dport=PORT, flags="S"), f"the target's SYN towards {remote}")
    errors = net.wire.wait_for(lambda x: x.quoted[1:] == (remote, syn.sport, PORT), timeout=1.0)
    syns = net.wire.tcp(dst=remote, dport=PORT, flags="S")
    assert errors, f"no ICMP unreachable quoting the SYN on the wire: {[str(e) for e in icmp_errors(net)]}"
    err = errors[0]
    assert (err.icmp_type, err.icmp_code) == expected, \
        f"expected {what} (type {expected[0]} code {expected[1]}) from the router, got {err}"
    assert (err.src, err.dst) == (net.peer.addr(family), net.target.addr(family)), \
        f"the ICMP is not router -> target: {err}"
    assert len(syns) == 1, \
        f"the SYN was retransmitted ({len(syns)} SYNs): connect() must fail at the first ICMP"
    gap_ms = (err.time - syn.time) * 1000
    assert r.ms + 2 >= gap_ms, f"connect() failed {r.ms:.1f} ms in, before the ICMP left the router ({gap_ms:.1f} ms)"
    assert r.ms <= gap_ms + 500, \
        f"connect() failed {r.ms:.1f} ms in, long after the ICMP ({gap_ms:.1f} ms): the ICMP did not end it"
    return syn, err, gap_ms


def icmp_counted_and_recorded(net, family, remote, before, r, err, gap_ms, record) -> dict:
    """Kernel: the target counted the ICMP and kept no socket; the observed values are recorded."""
    counted = delta(before, net.target.counters(), icmp_in_unreach(family), "TcpExt.LockDroppedIcmps")
    assert counted[icmp_in_unreach(family)] >= 1, f"the target's kernel did not count the ICMP: {counted}"
    assert not net.sockets(net.target, dst=remote), f"a socket towards {remote} is left: {net.sockets(net.target)}"
    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.1f}")
    record("icmp", str(err))
    record("syn_to_icmp_ms", f"{gap_ms:.1f}")
    return counted


# -- the cases --------------------------------------------------------------------
def test_unreachable_host_icmp(net, agent, family, record):
    """A router's ICMP host (v6: address) unreachable makes connect() fail with EHOSTUNREACH."""
    remote, prefix, plen = REMOTE[family]
    route_via_peer(net, family)
    # The router has the prefix on its link, but no host answers its neighbour discovery.
    net.peer.netlink(lambda ipr: ipr.route("add", dst=prefix, dst_len=plen, oif=net.peer.ifindex, family=AF[family]))
    lower_neighbour_probes(net.peer)
    if family == "v6":
        assert wait_link_local(net.peer), "the router has no IPv6 link-local address to send solicitations from"
    before = net.target.counters()

    r = connect(agent, family, remote)
    assert r.errno == "EHOSTUNREACH", f"expected err EHOSTUNREACH, got {r}"

    syn, err, gap_ms = check_icmp_ended_connect(net, family, r, remote, HOST_UNREACH[family],
                                                "host unreachable" if family == "v4" else "address unreachable")
    probes = net.wire.wait_for(neighbour_probe(family, remote), timeout=1.0)
    assert probes and all(p.mac == net.peer.mac for p in probes), \
        f"the router's neighbour probes for {remote} are not on the wire: {probes}"
    assert not net.wire.tcp(src=remote), f"something answered as {remote}"

    # Kernel: the router's neighbour entry failed; the target counted the ICMP; no socket is left.
    state = neighbour_state(net.peer, remote)
    assert state == NUD_FAILED, f"the router's neighbour entry for {remote} is {state!r}, expected FAILED (0x20)"
    counted = icmp_counted_and_recorded(net, family, remote, before, r, err, gap_ms, record)
    record("router_probes", len(probes))
    record("counters", counted)
    record.key(r.errno, f"{r.ms:.0f}ms")


def test_unreachable_net_icmp(net, agent, family, record):
    """A router's ICMP net unreachable (v6: no route) makes connect() fail with ENETUNREACH."""
    remote = route_via_peer(net, family)
    # The router has no route for the prefix.
    assert route_error(net.peer, remote) == 101, f"the router has a route for {remote}"
    shaping.install(net.peer)
    held = shaping.hold(net, net.peer, ROUTER_DELAY)  # the router's ICMP leaves ~100 ms after the SYN arrives
    before = net.target.counters()

    r = connect(agent, family, remote)
    assert r.errno == "ENETUNREACH", f"expected err ENETUNREACH, got {r}"

    syn, err, gap_ms = check_icmp_ended_connect(net, family, r, remote, NET_UNREACH[family],
                                                "net unreachable" if family == "v4" else "no route")
    assert not net.wire.tcp(src=remote), f"something answered as {remote}"

    counted = icmp_counted_and_recorded(net, family, remote, before, r, err, gap_ms, record)
    record("router_hold", str(held))
    record("counters", counted)
    record.key(r.errno, f"{r.ms:.0f}ms")


def test_unreachable_no_route(net, agent, family, record):
    """With no route to the destination, connect() fails at once with ENETUNREACH; nothing is sent."""
    remote = REMOTE[family][0]
    assert route_error(net.target, remote) == 101, f"the target has a route for {remote}"
    before = net.target.counters()

    r = connect(agent, family, remote)
    assert r.errno == "ENETUNREACH", f"expected err ENETUNREACH, got {r}"
    assert r.ms < 100, f"connect() took {r.ms:.1f} ms: with no route it must fail at once"

    # Wire: no TCP segment left the target, and nothing was sent towards the destination.
    sent = net.wire.wait_for(lambda s: s.proto == "tcp", timeout=0.2)
    assert not sent, f"TCP segments on the wire though there is no route: {[str(s) for s in sent]}"
    assert not icmp_errors(net), "an ICMP unreachable is on the wire: the failure must be the target's own"

    # Kernel: the route lookup fails, the output counted it, no socket is left.
    counted = delta(before, net.target.counters(), out_no_routes(family))
    assert counted[out_no_routes(family)] >= 1, f"{out_no_routes(family)} did not rise: {counted}"
    assert not net.sockets(net.target, dst=remote), f"a socket towards {remote} is left: {net.sockets(net.target)}"

    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.3f}")
    record("counters", counted)
    record.key(r.errno, f"{r.ms:.2f}ms")


def test_unreachable_on_link(net, agent, family, record):
    """An on-link address nobody answers for: connect() fails with EHOSTUNREACH after neighbour discovery."""
    addr = ON_LINK[family]
    lower_neighbour_probes(net.target)

    r = connect(agent, family, addr)
    assert r.errno == "EHOSTUNREACH", f"expected err EHOSTUNREACH, got {r}"

    # Wire: the target's probes for the address, and no TCP segment (the SYN waited for a neighbour).
    probes = net.wire.wait_for(neighbour_probe(family, addr), timeout=1.0, count=PROBES)
    assert len(probes) == PROBES and all(p.mac == net.target.mac for p in probes), \
        f"expected {PROBES} neighbour probes from the target for {addr}, saw {[str(p) for p in probes]}"
    assert not net.wire.tcp(), f"a TCP segment left the target: {[str(s) for s in net.wire.tcp()]}"
    probe_span_ms = (probes[-1].time - probes[0].time) * 1000
    assert r.ms >= probe_span_ms, f"connect() failed ({r.ms:.1f} ms) before the last probe ({probe_span_ms:.1f} ms)"
    assert PROBES * PROBE_MS - 20 <= r.ms < 1000, \
        f"connect() failed after {r.ms:.1f} ms; {PROBES} probes {PROBE_MS} ms apart take about {PROBES * PROBE_MS} ms"

    state = neighbour_state(net.target, addr)
    assert state == NUD_FAILED, f"the target's neighbour entry for {addr} is {state!r}, expected FAILED (0x20)"
    assert not net.sockets(net.target, dst=addr), f"a socket towards {addr} is left: {net.sockets(net.target)}"

    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.1f}")
    record("probes", len(probes))
    record("probe_span_ms", f"{probe_span_ms:.1f}")
    record.key(r.errno, f"{r.ms:.0f}ms")
