"""Delaying what a host sends, with tbf (this kernel has no netem).

A token bucket filter on a host's veth end shapes its egress to RATE bytes/s.
Packets wait in the qdisc only when the bucket is empty, so a delay is made by
queueing *filler* frames first: raw Ethernet frames of an IEEE 802 local
experimental EtherType (0x88B5) addressed to the other end, which its kernel
drops silently (no protocol handles that EtherType, nothing answers, no IP
counters move). Whatever the host sends next waits behind them, for about
queued bytes / RATE: a *hold* of a known length, read back from the qdisc's
own backlog. The filler is queued synchronously (sendto on an
AF_PACKET socket enqueues into the qdisc before it returns), so the hold is in
place when hold() returns.

    install(net.peer)                # once: tbf as the root qdisc of the peer's veth end
    held = hold(net, net.peer, 0.3)  # the next packet the peer sends leaves about 0.3 s later
    remove(net.peer)                 # if the case needs its egress unshaped again

Only the packets queued behind the filler wait; later ones find the bucket
refilled at RATE (a SYN-ACK of 74 bytes costs 0.6 ms of tokens). The capture
(on the peer's veth end) stamps a packet the peer sends when it leaves the
qdisc, and one the target sends when it arrives, so the wire shows the delay.

Everything lives in the namespaces of one case (removed with them); nothing
touches the host's own namespace.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

RATE = 125_000  # bytes/s (1 Mbit/s): a full frame takes 12 ms, a SYN-ACK under 1 ms
BURST = 1600  # bytes: the bucket holds one full frame (tbf drops frames larger than it)
LIMIT = 256_000  # bytes the qdisc may queue: a hold of up to about 2 s
ETH_P_FILLER = 0x88B5  # IEEE Std 802 Local Experimental EtherType 1
FRAME = 1514  # bytes per filler frame (a full Ethernet frame without FCS)
ROOT = 0x10000  # handle 1:


@dataclass
class Held:
    """What hold() queued: the expected delay of the next packet, from the qdisc's own backlog."""

    frames: int
    backlog_bytes: int
    backlog_packets: int
    seconds: float

    def __str__(self):
        return f"{self.backlog_packets} frames, {self.backlog_bytes} bytes queued: about {self.seconds * 1000:.0f} ms"


def install(host, rate: int = RATE, burst: int = BURST, limit: int = LIMIT) -> None:
    """tbf as the root qdisc of host's veth end (rate in bytes/s)."""
    host.rtnl.add_tbf(host.ifindex, ROOT, rate, burst, limit)


def remove(host) -> None:
    """Remove the root qdisc install() put on host's veth end: its egress is no longer shaped."""
    host.rtnl.delete_root_qdisc(host.ifindex)


def stats(host) -> dict:
    """The root qdisc's kind and counters: {'kind', 'qlen', 'backlog', 'drops', 'packets', 'bytes'}."""

    return host.rtnl.root_qdisc(host.ifindex)


def _frames(host, partner_mac: str, count: int) -> None:
    frame = (
        bytes.fromhex(partner_mac.replace(":", ""))
        + bytes.fromhex(host.mac.replace(":", ""))
        + ETH_P_FILLER.to_bytes(2, "big")
    )
    frame += bytes(FRAME - len(frame))

    def run():
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_FILLER)) as s:
            s.bind((host.ifname, ETH_P_FILLER))
            for _ in range(count):
                s.send(frame)

    host.call(run)


def hold(net, host, seconds: float, rate: int = RATE, burst: int = BURST, limit: int = LIMIT) -> Held:
    """Queue filler so that the next packet host (net.target or net.peer) sends waits about `seconds`.

    install(host) first, with the same rate, burst and limit. The bucket's
    tokens (at most `burst` bytes) let the first frame pass at once; the
    frames queued behind it set the hold, which is read back from the qdisc.
    """
    count = int(seconds * rate / FRAME) + 2  # +1 for the frame the bucket lets through, +1 to round up
    if count * FRAME > limit:
        raise ValueError(f"a hold of {seconds} s needs {count * FRAME} bytes queued, more than the limit {limit}")
    if stats(host).get("kind") != "tbf":
        raise RuntimeError(f"hold() needs tbf as the root qdisc of {host.ifname}: call install() first")
    partner = net.peer if host is net.target else net.target
    _frames(host, partner.mac, count)
    s = stats(host)
    backlog = s.get("backlog", 0)
    return Held(count, backlog, s.get("qlen", 0), backlog / rate)
