"""Wire evidence: a real packet capture on one interface, parsed with dpkt.

The capture is a raw AF_PACKET socket opened inside the namespace and bound to
the interface, so it sees both directions from the first packet on, with
kernel timestamps (SO_TIMESTAMPNS). No capture process to start, wait for or
kill. Packets are written as a standard pcap file (dpkt.pcap.Writer) and parsed
with dpkt into Segment records.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

import dpkt

from . import outputs
from .timing import MAX_POLL, slack

ETH_P_ALL = 0x0003
_CMSG_SPACE = socket.CMSG_SPACE(16)  # one struct timespec (SCM_TIMESTAMPNS)
MAX_ERRORS = 10  # errors the socket may report before the capture thread gives up on it
SO_TIMESTAMPNS = 35
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
FLAG_BITS = [
    ("F", dpkt.tcp.TH_FIN),
    ("S", dpkt.tcp.TH_SYN),
    ("R", dpkt.tcp.TH_RST),
    ("P", dpkt.tcp.TH_PUSH),
    ("A", dpkt.tcp.TH_ACK),
]


@dataclass(frozen=True)
class Segment:
    """One packet as the cases see it. For TCP: flags like 'S', 'SA', 'RA', 'FA', 'PA'."""

    time: float
    proto: str  # tcp, udp, icmp, icmp6, arp, other
    src: str = ""
    dst: str = ""
    sport: int = 0
    dport: int = 0
    flags: str = ""
    seq: int = 0
    ack: int = 0
    length: int = 0
    icmp_type: int = -1
    icmp_code: int = -1
    # ICMP destination unreachable: the packet it quotes (src, dst, sport, dport)
    quoted: tuple = ()
    # ARP request / neighbour solicitation: the address asked for; and every frame's source MAC
    target: str = ""
    mac: str = ""

    def has(self, *flags: str) -> bool:
        return all(f in self.flags for f in flags)

    def __str__(self):
        if self.proto == "tcp":
            return (
                f"{self.time:.6f} {self.src}.{self.sport} > {self.dst}.{self.dport} "
                f"[{self.flags}] seq {self.seq} ack {self.ack} len {self.length}"
            )
        if self.proto.startswith("icmp"):
            text = f"{self.time:.6f} {self.src} > {self.dst} {self.proto} type {self.icmp_type} code {self.icmp_code}"
            if self.quoted:
                text += " quoting {}.{} > {}.{}".format(*self.quoted)
            if self.target:
                text += f" who-has {self.target}"
            return text
        if self.proto == "arp":
            return f"{self.time:.6f} arp {self.flags} who-has {self.target} tell {self.src}"
        return f"{self.time:.6f} {self.proto} {self.src}.{self.sport} > {self.dst}.{self.dport} len {self.length}"


def tcp_flags(bits: int) -> str:
    return "".join(name for name, bit in FLAG_BITS if bits & bit)


def _quoted(family: int, raw: bytes) -> tuple:
    """(src, dst, sport, dport) of the IP packet an ICMP error quotes (its header and 8 bytes)."""
    try:
        if family == socket.AF_INET:
            ihl = (raw[0] & 0xF) * 4
            src, dst, l4 = raw[12:16], raw[16:20], raw[ihl:]
        else:
            src, dst, l4 = raw[8:24], raw[24:40], raw[40:]
        sport, dport = struct.unpack("!HH", l4[:4])
        return (socket.inet_ntop(family, src), socket.inet_ntop(family, dst), sport, dport)
    except (IndexError, ValueError, struct.error):
        return ()


def parse(ts: float, frame: bytes) -> Segment:
    eth = dpkt.ethernet.Ethernet(frame)
    mac = bytes(eth.src).hex(":")
    ip = eth.data
    if isinstance(ip, dpkt.ip.IP):
        fam = socket.AF_INET
    elif isinstance(ip, dpkt.ip6.IP6):
        fam = socket.AF_INET6
    elif isinstance(ip, dpkt.arp.ARP):
        request = ip.op == dpkt.arp.ARP_OP_REQUEST
        return Segment(
            ts,
            "arp",
            socket.inet_ntop(socket.AF_INET, ip.spa),
            socket.inet_ntop(socket.AF_INET, ip.tpa),
            flags="request" if request else "reply",
            target=socket.inet_ntop(socket.AF_INET, ip.tpa),
            mac=mac,
        )
    else:
        return Segment(ts, "other", mac=mac)
    src, dst = socket.inet_ntop(fam, ip.src), socket.inet_ntop(fam, ip.dst)
    l4 = ip.data
    if isinstance(l4, dpkt.tcp.TCP):
        return Segment(
            ts, "tcp", src, dst, l4.sport, l4.dport, tcp_flags(l4.flags), l4.seq, l4.ack, len(l4.data), mac=mac
        )
    if isinstance(l4, dpkt.udp.UDP):
        return Segment(ts, "udp", src, dst, l4.sport, l4.dport, length=len(l4.data), mac=mac)
    if isinstance(l4, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        proto = "icmp" if fam == socket.AF_INET else "icmp6"
        unreachable = (proto, l4.type) in (("icmp", 3), ("icmp6", 1))
        quoted = _quoted(fam, bytes(l4)[8:]) if unreachable else ()
        solicited = bytes(l4)[8:24] if proto == "icmp6" and l4.type == 135 else b""
        target = socket.inet_ntop(socket.AF_INET6, solicited) if len(solicited) == 16 else ""
        return Segment(ts, proto, src, dst, icmp_type=l4.type, icmp_code=l4.code, quoted=quoted, target=target, mac=mac)
    return Segment(ts, "other", src, dst, mac=mac)


class Capture:
    """Capture every frame on one interface from start() to stop()."""

    def __init__(self, host):
        self.host = host
        self.frames: list[tuple[float, bytes]] = []
        self._parsed: list[Segment] = []  # frames[:len(_parsed)], parsed once (every wait looks again)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # notified with every frame appended
        self._parse_lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: list[str] = []  # what the socket reported instead of a frame (shown with the wire)
        # The capture thread sleeps in poll() on the socket and this pipe (stop() writes to it): no
        # timeout to wake on while the wire is quiet, and stop() does not wait for one to run out.
        self._wake_r, self._wake_w = os.pipe()
        # Protocol 0 at first: the socket receives nothing until bind() names the interface and
        # ETH_P_ALL. (Made with ETH_P_ALL, it would hear every interface until then, and bind() would
        # wait for an RCU grace period to unhook it: about 13 ms.)
        self._sock = host.call(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0)
        self._sock.bind((host.ifname, ETH_P_ALL))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.setblocking(False)
        self._thread = threading.Thread(target=self._run, name=f"capture-{host.ifname}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        """Move every frame the kernel has queued on the socket into self.frames, in order, each with
        its kernel timestamp. The capture thread does it as frames arrive, and every reader does it
        too before it looks: what crossed the wire is seen even when the thread has not been
        scheduled yet (a loaded machine), and a late read changes no time."""
        with self._arrived:
            if self._stop.is_set():
                return  # the socket is closed
            count = len(self.frames)
            while True:
                try:
                    data, anc, _flags, _addr = self._sock.recvmsg(65536, _CMSG_SPACE)
                except BlockingIOError:
                    break
                except OSError as e:  # an error the socket reports once (ENETDOWN...): kept as evidence
                    self.errors.append(f"{type(e).__name__}: {e}")
                    break
                ts = time.time()
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS:
                        sec, nsec = struct.unpack("qq", payload[:16])
                        ts = sec + nsec / 1e9
                self.frames.append((ts, data))
            if len(self.frames) > count:
                self._arrived.notify_all()

    def _run(self):
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stop.is_set() and len(self.errors) < MAX_ERRORS:
            poller.poll()
            self._drain()

    def stop(self):
        if not self._stop.is_set():
            with self._arrived:
                self._stop.set()
            os.write(self._wake_w, b"x")
            self._thread.join(timeout=2)
            self._sock.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def segments(self) -> list[Segment]:
        self._drain()
        with self._parse_lock:
            with self._lock:
                new = self.frames[len(self._parsed) :]
            self._parsed.extend(parse(ts, frame) for ts, frame in new)
            return list(self._parsed)

    def tcp(self, **match) -> list[Segment]:
        """TCP segments whose fields equal every keyword given; flags='SA' means exactly SA."""
        return [s for s in self.segments() if s.proto == "tcp" and _matches(s, match)]

    def wait_for(self, predicate, timeout: float, count: int = 1) -> list[Segment]:
        """Wait until `count` segments match predicate (bounded by timeout, scaled by the run's
        slack); return the matches. Woken by each frame that arrives, so it neither polls nor lags."""
        deadline = time.monotonic() + slack(timeout)
        found: list[Segment] = []
        looked = 0  # segments the predicate has seen
        while True:
            segments = self.segments()
            found += [s for s in segments[looked:] if predicate(s)]
            looked = len(segments)
            left = deadline - time.monotonic()
            if len(found) >= count or left <= 0:
                return found
            with self._arrived:
                if len(self.frames) <= looked:  # nothing new since the look: sleep until a frame comes
                    self._arrived.wait(min(left, MAX_POLL))  # (or look again: the thread may be late)

    def expect(self, predicate, what: str, timeout: float = 1.0) -> Segment:
        """The first segment matching predicate (waiting, bounded); fail naming `what` otherwise.
        (The wire itself is in the failure's evidence section.)"""
        found = self.wait_for(predicate, timeout)
        if not found:
            raise AssertionError(f"not on the wire: {what}")
        return found[0]

    def expect_fin_acked(self, end, timeout: float = 1.0):
        """The FIN that connection end `end` (conformance.case.End) sent, and the first ACK covering it: (fin, ack)."""
        fin = self.expect(
            tcp(src=end.addr, sport=end.port, dport=end.remote_port, has="F"), f"a FIN from the {end.role}", timeout
        )
        ack = self.expect(
            tcp(sport=end.remote_port, dport=end.port, has="A", ack=fin.seq + fin.length + 1),
            f"the ACK of the {end.role}'s FIN",
            timeout,
        )
        return fin, ack

    def write_pcap(self, path: str) -> None:
        """Write the frames as a pcap file (never through a symlink: conformance.outputs.open_new)."""
        self._drain()
        with self._lock:
            frames = list(self.frames)
        with outputs.open_new(path) as f:
            writer = dpkt.pcap.Writer(f, nano=True)
            for ts, frame in frames:
                writer.writepkt(frame, ts=ts)

    def summary(self) -> list[str]:
        """The frames the case caused, as tcpdump shows them with -ttttt and relative sequence
        numbers: times from the first frame, seq and ack from each side's first sequence number
        (its ISN where the SYN was seen); link noise (IPv6 multicast listener reports, router
        solicitations, frames of no known protocol) is left out."""
        return relative(s for s in self.segments() if not noise(s)) + [f"(capture: {e})" for e in self.errors]


# ICMPv6 the link sends on its own: multicast listener query/report/done (130-132, 143),
# router solicitation and advertisement (133, 134). No case causes them.
LINK_NOISE_ICMP6 = {130, 131, 132, 133, 134, 143}


def noise(seg: Segment) -> bool:
    return seg.proto == "other" or (seg.proto == "icmp6" and seg.icmp_type in LINK_NOISE_ICMP6)


def relative(segments) -> list[str]:
    """Segments as text with times relative to the first and TCP seq/ack relative to each side's ISN."""
    segments = list(segments)
    if not segments:
        return []
    t0 = segments[0].time
    tcp_segs = [s for s in segments if s.proto == "tcp"]
    isn: dict[tuple, int] = {}  # a side's ISN: its first SYN's seq, else the first seq it sent
    for seg in [s for s in tcp_segs if "S" in s.flags] + tcp_segs:
        isn.setdefault((seg.src, seg.sport, seg.dst, seg.dport), seg.seq)
    lines = []
    for seg in segments:
        when = f"{seg.time - t0:9.6f}"
        if seg.proto != "tcp":
            lines.append(when + str(seg)[str(seg).index(" ") :])
            continue
        mine, theirs = isn[(seg.src, seg.sport, seg.dst, seg.dport)], isn.get((seg.dst, seg.dport, seg.src, seg.sport))
        text = f"{when} {seg.src}.{seg.sport} > {seg.dst}.{seg.dport} [{seg.flags}] seq {(seg.seq - mine) % 2**32}"
        if "A" in seg.flags:
            text += f" ack {(seg.ack - theirs) % 2**32}" if theirs is not None else f" ack {seg.ack}"
        lines.append(text + f" len {seg.length}")
    return lines


def _matches(seg: Segment, match: dict) -> bool:
    return all(getattr(seg, k) == v for k, v in match.items())


def tcp(has: str = "", **match):
    """A predicate for TCP segments: fields equal to **match (seq/ack taken modulo 2**32),
    flags exactly `flags=` if given, and containing every flag in `has`."""
    for k in ("seq", "ack"):
        if k in match:
            match[k] %= 2**32
    return lambda s: s.proto == "tcp" and _matches(s, match) and all(f in s.flags for f in has)


def read_pcap(path: str) -> list[Segment]:
    """Read a pcap written by Capture back into segments."""
    with open(path, "rb") as f:
        return [parse(ts, buf) for ts, buf in dpkt.pcap.Reader(f)]
