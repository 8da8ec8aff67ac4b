"""The rtnetlink requests of the harness, written out: the link a case builds (a veth pair, links up,
addresses, permanent neighbour entries), routes (dump, add, replace with metrics, lookup), neighbour
and address reads, and the tbf qdisc the shaping uses (add, delete, its counters).

Written here instead of pyroute2's IPRoute for speed, measured: every case builds its link with about
fifteen requests, and pyroute2 0.9 spent about 1.4 ms of CPU a request (its asyncio core and request
filters), 4 ms to open its socket, and 10 ms for the route dumps and replacements of one rto_min: a
fifth of a case's CPU in a profile of the catalogue. A request here is one send() and the recv()s of
its answer. What stays with pyroute2: the ingress qdisc and BPF filter that deafen a userspace
stack's kernel (Host.deafen). Layouts: linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
linux/veth.h, linux/if_addr.h, linux/neighbour.h, linux/pkt_sched.h, linux/gen_stats.h.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from .netlink import NLM_F_ACK, NLM_F_DUMP, NetlinkSocket, attributes

NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
RTM_NEWROUTE, RTM_GETROUTE, RTM_NEWNEIGH, RTM_GETNEIGH = 24, 26, 28, 30
RTM_NEWQDISC, RTM_DELQDISC, RTM_GETQDISC = 36, 37, 38
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_METRICS, RTA_TABLE = 1, 4, 5, 6, 7, 8, 15
RTAX_LOCK = 1
RT_TABLE_MAIN = 254
RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 4, 0, 1
TCA_KIND, TCA_OPTIONS, TCA_STATS2 = 1, 2, 7
TCA_STATS_BASIC, TCA_STATS_QUEUE = 1, 3
TCA_TBF_PARMS, TCA_TBF_BURST = 1, 6
TC_H_ROOT = 0xFFFFFFFF
TC_LINKLAYER_ETHERNET = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1
NUD_PERMANENT = 0x80

_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_TCMSG = struct.Struct("=BxxxiIII")  # tcmsg: family, ifindex, handle, parent, info
_RATESPEC = struct.Struct("=BBHhHI")  # tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate
_U32 = struct.Struct("=I")
_STATS_BASIC = struct.Struct("=QI")  # gnet_stats_basic: bytes, packets
_STATS_QUEUE = struct.Struct("=IIIII")  # gnet_stats_queue: qlen, backlog, drops, requeues, overlimits


@dataclass(frozen=True)
class Route:
    """A route of a dump: where it goes, how the kernel made it, and its metrics {RTAX_*: value}."""

    family: int
    dst: str | None
    dst_len: int
    table: int
    protocol: int
    scope: int
    type: int
    oif: int | None
    prefsrc: str | None
    priority: int | None
    metrics: dict


def _ip(family: int, raw: bytes | None) -> str | None:
    return socket.inet_ntop(family, raw) if raw else None


def _psched_ticks_per_us() -> float:
    """The kernel's packet scheduler ticks a microsecond (/proc/net/psched, as tc reads it)."""
    try:
        with open("/proc/net/psched") as f:
            t2us, us2t, clock_res = (int(w, 16) for w in f.read().split()[:3])
    except (OSError, ValueError):
        return 1.0
    if clock_res == 1_000_000_000:  # tc's compatibility rule: a nanosecond clock advertises t2us 1000
        t2us = us2t
    return t2us / us2t * clock_res / 1_000_000


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


class Rtnl(NetlinkSocket):
    """A NETLINK_ROUTE socket of the namespace it was opened in."""

    def __init__(self):
        super().__init__(socket.NETLINK_ROUTE)

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        return self.request(kind, NLM_F_ACK | flags, body, what)

    def _dump(self, kind: int, body: bytes, what: str) -> list[bytes]:
        return self.request(kind, NLM_F_DUMP, body, what)

    def add_veth(self, name: str, peer: str, peer_netns_fd: int) -> None:
        """A veth pair: `name` here, `peer` in the namespace of peer_netns_fd."""
        peer_info = _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(peer))
        peer_info += _attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd))
        info = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer_info))
        body = _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name)) + _attr(IFLA_LINKINFO, info)
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"add veth {name} (peer {peer})")

    def link(self, name: str) -> tuple[int, str]:
        """(index, MAC address) of the link called name."""
        body = _IFINFO.pack(0, 0, 0, 0, 0) + _attr(IFLA_IFNAME, _name(name))
        (answer,) = self._request(RTM_GETLINK, 0, body, f"get link {name}")
        index = _IFINFO.unpack_from(answer)[2]
        mac = attributes(answer, _IFINFO.size).get(IFLA_ADDRESS, b"")
        return index, ":".join(f"{b:02x}" for b in mac)

    def up(self, index: int) -> None:
        self._request(RTM_NEWLINK, 0, _IFINFO.pack(0, 0, index, IFF_UP, IFF_UP), f"set link {index} up")

    def add_address(self, index: int, address: str, prefixlen: int, flags: int = 0) -> None:
        """address/prefixlen on link index, with IFA_F_* flags (IFA_F_NODAD...)."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        body = _IFADDR.pack(family, prefixlen, flags & 0xFF, 0, index)
        body += _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw) + _attr(IFA_FLAGS, struct.pack("=I", flags))
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"add address {address}/{prefixlen}")

    def permanent_neighbour(self, index: int, address: str, mac: str) -> None:
        """A permanent neighbour entry (replacing any): address is at mac on link index."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        body = _NDMSG.pack(family, index, NUD_PERMANENT, 0, 0)
        body += _attr(NDA_DST, socket.inet_pton(family, address))
        body += _attr(NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
        self._request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body, f"neighbour {address} at {mac}")

    # -- routes --------------------------------------------------------------------------------
    def routes(self, family: int) -> list[Route]:
        """Every route of family, in every table."""
        out = []
        for m in self._dump(RTM_GETROUTE, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0), "dump routes"):
            fam, dst_len, _sl, _tos, table, proto, scope, kind, _fl = _RTMSG.unpack_from(m)
            raw = attributes(m, _RTMSG.size)
            u32 = {t: _U32.unpack(v)[0] for t, v in raw.items() if t in (RTA_TABLE, RTA_OIF, RTA_PRIORITY)}
            metrics = {t: _U32.unpack(v)[0] for t, v in attributes(raw.get(RTA_METRICS, b""), 0).items()}
            out.append(
                Route(
                    fam,
                    _ip(fam, raw.get(RTA_DST)),
                    dst_len,
                    u32.get(RTA_TABLE, table),
                    proto,
                    scope,
                    kind,
                    u32.get(RTA_OIF),
                    _ip(fam, raw.get(RTA_PREFSRC)),
                    u32.get(RTA_PRIORITY),
                    metrics,
                )
            )
        return out

    def replace_route(self, route: Route, metrics: dict) -> None:
        """route (from routes()) again, with these metrics {RTAX_*: value} instead of its own."""
        body = _RTMSG.pack(route.family, route.dst_len, 0, 0, route.table, route.protocol, route.scope, route.type, 0)
        if route.dst:
            body += _attr(RTA_DST, socket.inet_pton(route.family, route.dst))
        if route.oif is not None:
            body += _attr(RTA_OIF, _U32.pack(route.oif))
        if route.prefsrc:
            body += _attr(RTA_PREFSRC, socket.inet_pton(route.family, route.prefsrc))
        if route.priority is not None:
            body += _attr(RTA_PRIORITY, _U32.pack(route.priority))
        body += _attr(RTA_METRICS, b"".join(_attr(t, _U32.pack(v)) for t, v in sorted(metrics.items())))
        self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, body, f"replace route {route.dst}/{route.dst_len}")

    def add_route(self, family: int, dst: str, dst_len: int, gateway: str | None = None, oif: int | None = None):
        """A unicast route in the main table, proto static: through gateway, or on link oif."""
        body = _RTMSG.pack(family, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        body += _attr(RTA_DST, socket.inet_pton(family, dst))
        if gateway:
            body += _attr(RTA_GATEWAY, socket.inet_pton(family, gateway))
        if oif is not None:
            body += _attr(RTA_OIF, _U32.pack(oif))
        self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body, f"add route {dst}/{dst_len}")

    def route_error(self, address: str) -> int | None:
        """The errno of a route lookup for address (`ip route get`), None when one is found."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        body = _RTMSG.pack(family, len(raw) * 8, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, raw)
        try:
            self._request(RTM_GETROUTE, 0, body, f"route get {address}")
        except OSError as e:
            if e.errno is None:
                raise
            return e.errno
        return None

    # -- neighbours and addresses --------------------------------------------------------------
    def neighbours(self, index: int) -> list[tuple[str, int]]:
        """(address, NUD state) of every neighbour entry on link index."""
        out = []
        for m in self._dump(RTM_GETNEIGH, _NDMSG.pack(0, 0, 0, 0, 0), "dump neighbours"):
            family, ifindex, state, _flags, _type = _NDMSG.unpack_from(m)
            dst = attributes(m, _NDMSG.size).get(NDA_DST)
            if ifindex == index and dst and family in (socket.AF_INET, socket.AF_INET6):
                out.append((socket.inet_ntop(family, dst), state))
        return out

    def addresses(self, family: int, index: int) -> list[str]:
        """The addresses of family on link index."""
        out = []
        for m in self._dump(RTM_GETADDR, _IFADDR.pack(family, 0, 0, 0, 0), "dump addresses"):
            fam, _plen, _flags, _scope, ifindex = _IFADDR.unpack_from(m)
            raw = attributes(m, _IFADDR.size).get(IFA_ADDRESS)
            if fam == family and ifindex == index and raw:
                out.append(socket.inet_ntop(fam, raw))
        return out

    # -- traffic control: tbf --------------------------------------------------------------------
    def add_tbf(self, index: int, handle: int, rate: int, burst: int, limit: int) -> None:
        """tbf as the root qdisc of link index: rate in bytes/s, a bucket of burst bytes, limit bytes
        queued (as `tc qdisc add dev IF root handle H tbf rate R burst B limit L`)."""
        buffer_ticks = int(int(1_000_000 * burst / rate) * _psched_ticks_per_us())  # burst's transmit time
        rate_spec = _RATESPEC.pack(0, TC_LINKLAYER_ETHERNET, 0, -1, 0, rate)
        parms = rate_spec + _RATESPEC.pack(0, 0, 0, 0, 0, 0) + struct.pack("=III", limit, buffer_ticks, 0)
        options = _attr(TCA_TBF_PARMS, parms) + _attr(TCA_TBF_BURST, _U32.pack(burst))
        body = _TCMSG.pack(0, index, handle, TC_H_ROOT, 0) + _attr(TCA_KIND, b"tbf\0") + _attr(TCA_OPTIONS, options)
        self._request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body, f"add tbf on link {index}")

    def delete_root_qdisc(self, index: int) -> None:
        """Remove the root qdisc of link index (`tc qdisc del dev IF root`)."""
        self._request(RTM_DELQDISC, 0, _TCMSG.pack(0, index, 0, TC_H_ROOT, 0), f"delete the root qdisc of link {index}")

    def root_qdisc(self, index: int) -> dict:
        """The root qdisc of link index: {'kind', 'qlen', 'backlog', 'drops', 'packets', 'bytes'};
        {} if it has none of its own."""
        for m in self._dump(RTM_GETQDISC, _TCMSG.pack(0, index, 0, 0, 0), "dump qdiscs"):
            _fam, ifindex, _handle, parent, _info = _TCMSG.unpack_from(m)
            if ifindex != index or parent != TC_H_ROOT:
                continue
            attrs = attributes(m, _TCMSG.size)
            out = {"kind": attrs.get(TCA_KIND, b"").rstrip(b"\0").decode()}
            stats = attributes(attrs.get(TCA_STATS2, b""), 0)
            if len(stats.get(TCA_STATS_QUEUE, b"")) >= _STATS_QUEUE.size:
                qlen, backlog, drops, _requeues, _overlimits = _STATS_QUEUE.unpack_from(stats[TCA_STATS_QUEUE])
                out.update(qlen=qlen, backlog=backlog, drops=drops)
            if len(stats.get(TCA_STATS_BASIC, b"")) >= _STATS_BASIC.size:
                nbytes, packets = _STATS_BASIC.unpack_from(stats[TCA_STATS_BASIC])
                out.update(packets=packets, bytes=nbytes)
            return out
        return {}
