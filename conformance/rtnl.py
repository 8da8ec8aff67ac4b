"""The few rtnetlink requests that build a case's link, written out: a veth pair, links up, addresses,
permanent neighbour entries.

Written here instead of pyroute2's IPRoute for speed, measured: every case builds its link with about
fifteen requests, and pyroute2 0.9 spent about 1.4 ms of CPU a request (its asyncio core and request
filters): a fifth of a case's CPU in a profile of the catalogue. A request here is one send() and
one recv() of its acknowledgement. Everything else (routes, traffic control, neighbour reads) stays
with pyroute2. Layouts: linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h,
linux/if_addr.h, linux/neighbour.h.
"""

from __future__ import annotations

import socket
import struct

from .netlink import NLM_F_ACK, attributes, request

NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWNEIGH = 16, 18, 20, 28
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
NDA_DST, NDA_LLADDR = 1, 2
IFF_UP = 0x1
NUD_PERMANENT = 0x80

_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def _name(name: str) -> bytes:
    return name.encode() + b"\0"


class Rtnl:
    """A NETLINK_ROUTE socket of the namespace it was opened in (a socket keeps its namespace)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))

    def close(self) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        return request(self.sock, kind, NLM_F_ACK | flags, body, what)

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
