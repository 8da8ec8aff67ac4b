"""connect() to an unreachable destination fails with the errno of what made it unreachable.

Seed 002 (docs/seeds.md): "客户端发出的SYN包在网络上引起destination unreachable,即目标不可达错误 ...
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
No outcome waits for a SYN retransmission timer, so no option is asked of the target
(TCP_SYNCNT is not needed, and runtimes without it run these cases): every connect() has
a 5 s timeout of its own instead, so a target that ignores the ICMP or the failed
neighbour discovery fails the case in 5 s, not after 127 s of SYN retransmissions.
"""

import errno

from conformance import shaping
from conformance.capture import tcp
from conformance.timing import slack, wait_until

REMOTE_PORT = 80
CONNECT_TIMEOUT = 5.0
REMOTE = {"v4": ("203.0.113.5", "203.0.113.0/24"), "v6": ("2001:db8:1::5", "2001:db8:1::/64")}  # (address, prefix)
ON_LINK = {"v4": "198.51.100.50", "v6": "2001:db8::50"}  # on the target's link; nobody owns it
PROBES, PROBE_MS = 2, 100  # lowered neighbour discovery: 2 probes, 100 ms apart
ROUTER_DELAY = 0.4  # s: the net-unreachable router's ICMP waits this long in its egress (clear of connect()'s lock
# even when a loaded machine is slow to call it; short of the 1 s SYN retransmission)
LINK_LOCAL_WAIT = 3.0  # s: a veth end's IPv6 link-local address comes up to ~1 s after the link
HOST_UNREACH = {"v4": (3, 1), "v6": (1, 3)}  # ICMP host unreachable / ICMPv6 address unreachable
NET_UNREACH = {"v4": (3, 0), "v6": (1, 0)}  # ICMP net unreachable / ICMPv6 no route
IN_UNREACH = {"v4": "Icmp.InDestUnreachs", "v6": "Icmp6.InDestUnreachs"}
OUT_NO_ROUTES = {"v4": "Ip.OutNoRoutes", "v6": "Ip6.OutNoRoutes"}
# Tolerances (ms), scaled by the run's timing slack:
CLOCK_MS = 2.0  # the capture's and the agent's clocks: connect() may look this much shorter than the wire
ICMP_LATE_MS = 500.0  # connect() ended by an ICMP returns within this of it
AT_ONCE_MS = 300.0  # a failure with no route is this fast: far short of any timer (the 1 s SYN retransmission);
# Node under load took up to 170 ms (its event loop starved), C and Python under 1 ms
PROBE_EARLY_MS = 20.0  # the target's probes may finish this much before PROBES x PROBE_MS
PROBES_LATE_MS = 1000.0  # connect() ended by failed neighbour discovery returns within this


def test_unreachable_host_icmp(net, agent, family, record):
    """A router's ICMP host (v6: address) unreachable makes connect() fail with EHOSTUNREACH."""
    remote, prefix = REMOTE[family]
    net.topo.route_through_peer(prefix)
    net.peer.add_route(prefix)  # the router has the prefix on its link, but no host answers its neighbour discovery
    net.peer.neighbour_probes(PROBES, PROBE_MS)
    if family == "v6":
        assert wait_until(net.peer.has_link_local, LINK_LOCAL_WAIT), (
            "the router has no IPv6 link-local address to send solicitations from"
        )
    before = net.target.counters(IN_UNREACH[family], "TcpExt.LockDroppedIcmps")

    r = unreachable_connect(agent, family, remote, record)
    assert r.errno == "EHOSTUNREACH", f"expected err EHOSTUNREACH, got {r}"

    what = "host unreachable" if family == "v4" else "address unreachable"
    icmp_ended_connect(net, family, r, remote, HOST_UNREACH[family], what, record)
    probes = net.wire.wait_for(neighbour_probe(family, remote), timeout=1.0)
    record("router_probes", len(probes))
    assert probes and all(p.mac == net.peer.mac for p in probes), (
        f"the router's neighbour probes for {remote} are not on the wire: {probes}"
    )
    assert not net.wire.tcp(src=remote), f"something answered as {remote}"

    # Kernel: the router's neighbour entry failed; the target counted the ICMP; no socket is left.
    state = net.peer.neighbour_state(remote)
    assert state == "FAILED", f"the router's neighbour entry for {remote} is {state!r}, expected FAILED"
    icmp_counted(net, family, remote, before, record)


def test_unreachable_net_icmp(net, agent, family, record):
    """A router's ICMP net unreachable (v6: no route) makes connect() fail with ENETUNREACH."""
    remote, prefix = REMOTE[family]
    net.topo.route_through_peer(prefix)
    assert net.peer.route_error(remote) == errno.ENETUNREACH, f"the router has a route for {remote}"
    shaping.install(net.peer)
    held = shaping.hold(net, net.peer, ROUTER_DELAY)  # the router's ICMP leaves ~100 ms after the SYN arrives
    record("router_hold", str(held))
    before = net.target.counters(IN_UNREACH[family], "TcpExt.LockDroppedIcmps")

    r = unreachable_connect(agent, family, remote, record)
    assert r.errno == "ENETUNREACH", f"expected err ENETUNREACH, got {r}"

    what = "net unreachable" if family == "v4" else "no route"
    icmp_ended_connect(net, family, r, remote, NET_UNREACH[family], what, record)
    assert not net.wire.tcp(src=remote), f"something answered as {remote}"
    icmp_counted(net, family, remote, before, record)


def test_unreachable_no_route(net, agent, family, record):
    """With no route to the destination, connect() fails at once with ENETUNREACH; nothing is sent."""
    remote = REMOTE[family][0]
    assert net.target.route_error(remote) == errno.ENETUNREACH, f"the target has a route for {remote}"
    before = net.target.counters(OUT_NO_ROUTES[family])

    r = unreachable_connect(agent, family, remote, record, digits=3)
    assert r.errno == "ENETUNREACH", f"expected err ENETUNREACH, got {r}"
    assert r.ms < slack(AT_ONCE_MS), f"connect() took {r.ms:.1f} ms: with no route it must fail at once"

    # Wire: no TCP segment left the target, and nothing was sent towards the destination.
    sent = net.wire.wait_for(lambda s: s.proto == "tcp", timeout=0.2)
    assert not sent, f"TCP segments on the wire though there is no route: {[str(s) for s in sent]}"
    assert not icmp_errors(net), "an ICMP unreachable is on the wire: the failure must be the target's own"

    # Kernel: the route lookup fails, the output counted it, no socket is left.
    counted = net.target.rise(before)
    record("counters", counted)
    if OUT_NO_ROUTES[family] in counted:  # a userspace stack keeps none: recorded as not checked
        assert counted[OUT_NO_ROUTES[family]] >= 1, f"{OUT_NO_ROUTES[family]} did not rise: {counted}"
    assert not net.target.sockets(dst=remote), f"a socket towards {remote} is left"


def test_unreachable_on_link(net, agent, family, record):
    """An on-link address nobody answers for: connect() fails with EHOSTUNREACH after neighbour discovery."""
    addr = ON_LINK[family]
    net.target.neighbour_probes(PROBES, PROBE_MS)

    r = unreachable_connect(agent, family, addr, record)
    assert r.errno == "EHOSTUNREACH", f"expected err EHOSTUNREACH, got {r}"

    # Wire: the target's probes for the address, and no TCP segment (the SYN waited for a neighbour).
    probes = net.wire.wait_for(neighbour_probe(family, addr), timeout=1.0, count=PROBES)
    record("probes", len(probes))
    assert len(probes) == PROBES and all(p.mac == net.target.mac for p in probes), (
        f"expected {PROBES} neighbour probes from the target for {addr}, saw {[str(p) for p in probes]}"
    )
    assert not net.wire.tcp(), f"a TCP segment left the target: {[str(s) for s in net.wire.tcp()]}"
    probe_span_ms = (probes[-1].time - probes[0].time) * 1000
    record("probe_span_ms", f"{probe_span_ms:.1f}")
    assert r.ms >= probe_span_ms, f"connect() failed ({r.ms:.1f} ms) before the last probe ({probe_span_ms:.1f} ms)"
    assert PROBES * PROBE_MS - slack(PROBE_EARLY_MS) <= r.ms < slack(PROBES_LATE_MS), (
        f"connect() failed after {r.ms:.1f} ms; {PROBES} probes {PROBE_MS} ms apart take about {PROBES * PROBE_MS} ms"
    )

    # Kernel: the target's neighbour entry failed; no socket is left.
    state = net.target.neighbour_state(addr)
    assert state == "FAILED", f"the target's neighbour entry for {addr} is {state!r}, expected FAILED"
    assert not net.target.sockets(dst=addr), f"a socket towards {addr} is left"


# -- steps and evidence the outcomes share --------------------------------------------
def unreachable_connect(agent, family: str, addr: str, record, digits: int = 1):
    """connect() to addr with a timeout of its own; its errno and time are recorded
    (to `digits` decimals; the matrix detail one fewer)."""
    s = agent.socket("tcp", family).h
    r = agent.connect(s, addr, REMOTE_PORT, CONNECT_TIMEOUT)
    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.{digits}f}")
    record.key(r.errno, f"{r.ms:.{digits - 1}f}ms")
    return r


def icmp_ended_connect(net, family, r, remote, expected, what, record):
    """One SYN, one ICMP of the expected type and code from the router quoting it, and connect() ended by it."""
    syn = net.wire.expect(tcp(dst=remote, dport=REMOTE_PORT, flags="S"), f"the target's SYN towards {remote}")
    errors = net.wire.wait_for(lambda x: x.quoted[1:] == (remote, syn.sport, REMOTE_PORT), timeout=1.0)
    syns = net.wire.tcp(dst=remote, dport=REMOTE_PORT, flags="S")
    assert errors, f"no ICMP unreachable quoting the SYN on the wire: {[str(e) for e in icmp_errors(net)]}"
    err = errors[0]
    gap_ms = (err.time - syn.time) * 1000
    record("icmp", str(err))
    record("syn_to_icmp_ms", f"{gap_ms:.1f}")
    assert (err.icmp_type, err.icmp_code) == expected, (
        f"expected {what} (type {expected[0]} code {expected[1]}) from the router, got {err}"
    )
    assert (err.src, err.dst) == (net.peer.addr(family), net.target.addr(family)), (
        f"the ICMP is not router -> target: {err}"
    )
    assert len(syns) == 1, f"the SYN was retransmitted ({len(syns)} SYNs): connect() must fail at the first ICMP"
    assert r.ms >= gap_ms - slack(CLOCK_MS), (
        f"connect() failed {r.ms:.1f} ms in, before the ICMP left the router ({gap_ms:.1f} ms)"
    )
    assert r.ms <= gap_ms + slack(ICMP_LATE_MS), (
        f"connect() failed {r.ms:.1f} ms in, long after the ICMP ({gap_ms:.1f} ms): the ICMP did not end it"
    )


def icmp_counted(net, family, remote, before, record):
    """Kernel: the target counted the ICMP and aborted the connection: no socket towards remote is left,
    unless the ICMP met the socket locked (TcpExt.LockDroppedIcmps: the kernel keeps the error as a soft
    one, which connect() reports, and the socket stays in SYN_SENT until the program closes it)."""
    counted = net.target.rise(before)
    left = net.target.sockets(dst=remote)
    record("counters", counted)
    assert counted[IN_UNREACH[family]] >= 1, f"the target's kernel did not count the ICMP: {counted}"
    # A target that does not report LockDroppedIcmps (a userspace stack) cannot show the exception.
    locked = "TcpExt.LockDroppedIcmps" in counted and counted["TcpExt.LockDroppedIcmps"] >= 1
    assert not left or (locked and {s.state for s in left} == {"SYN_SENT"}), (
        f"a socket towards {remote} is left, though the ICMP did not meet it locked: {counted}"
    )


def icmp_errors(net) -> list:
    """Every ICMP destination unreachable on the wire (Segment.quoted: the packet it quotes)."""
    return [x for x in net.wire.segments() if x.quoted]


def neighbour_probe(family: str, addr: str):
    """A predicate: an ARP request (v4) or neighbour solicitation (v6) for addr."""
    if family == "v4":
        return lambda x: x.proto == "arp" and x.flags == "request" and x.target == addr
    return lambda x: x.proto == "icmp6" and x.icmp_type == 135 and x.target == addr
