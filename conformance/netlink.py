"""One netlink request and its answer, for the suite's own rtnetlink and sock_diag clients
(conformance/rtnl.py, conformance/sockdiag.py; why they are not pyroute2's is said there)."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import threading

NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
REPLY_TIMEOUT = 10.0  # s: the kernel answers at once; a request left unanswered is a bug, not a wait
_seq = itertools.count(1)


def request(sock, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
    """Send one request (NLM_F_REQUEST is added) on a bound netlink socket; return the bodies of the
    messages answering it, up to its end: a dump's NLMSG_DONE, or the acknowledgement (NLM_F_ACK).
    A refusal raises OSError with the kernel's errno, naming `what`."""
    seq = next(_seq)
    sock.send(HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    answers = []
    while True:
        try:
            data = sock.recv(1 << 16)
        except TimeoutError:
            raise OSError(f"netlink: no answer in {REPLY_TIMEOUT:g} s ({what})") from None
        offset = 0
        while offset + HEADER.size <= len(data):
            length, mtype, _flags, mseq, _pid = HEADER.unpack_from(data, offset)
            if length < HEADER.size:
                raise OSError(f"netlink: malformed message of length {length} ({what})")
            start, offset = offset + HEADER.size, offset + (length + 3 & ~3)
            if mseq != seq:
                continue  # an answer to an earlier request cut short: not ours
            if mtype == NLMSG_DONE:
                return answers
            if mtype == NLMSG_ERROR:
                err = -struct.unpack_from("=i", data, start)[0]
                if err:
                    raise OSError(err, f"{what}: {os.strerror(err)}")
                return answers
            answers.append(data[start : start - HEADER.size + length])


def attributes(data: bytes, offset: int) -> dict[int, bytes]:
    """The attributes (struct rtattr / nlattr: length, type, payload) of a message from offset on, by type."""
    found = {}
    while offset + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, offset)
        if size < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + size]  # without the nested / byte-order flags
        offset += size + 3 & ~3
    return found


class NetlinkSocket:
    """A bound netlink socket of the namespace it was opened in (a socket keeps its namespace), usable
    from any thread: one request at a time (the answers of two would interleave), each bounded by
    REPLY_TIMEOUT."""

    def __init__(self, protocol: int):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
        self.sock.bind((0, 0))
        self.sock.settimeout(REPLY_TIMEOUT)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """request() on this socket (see there)."""
        with self._lock:
            return request(self.sock, kind, flags, body, what)
