"""The socket tables of a userspace TCP/IP stack, asked of its agent (targets/PROTOCOL.md, "Introspection").

A target whose record says link="packet" (conformance/targets.py) keeps its sockets in its own stack,
not in the kernel: sock_diag and /proc/net/netstat of its namespace know nothing of them. Its agent
answers `sockets`, `counters` and `neighbour` from the stack's own tables, on a socketpair the harness
passes it (--state-fd), at any time, even while a call blocks on its command channel. Host.sockets,
Host.counters and Host.neighbour_state (conformance/topology.py) ask a StackView when their host has
one (Host.stack), so every case reads the target's state through the same calls for both kinds.
"""

from __future__ import annotations

import socket

from .topology import FAMILIES, SockInfo

ASK_TIMEOUT = 10.0  # s: the agent answers at once (after ~1 ms of settle); a hung agent is an error
MAX_REPLY = 1 << 20


class IntrospectionError(Exception):
    """The agent's introspection channel broke or answered something that is not a reply."""


class StackView:
    """The agent's own tables over its introspection channel (one line per command, one reply line)."""

    source = "target"  # recorded with each case: where the kernel-side evidence came from

    def __init__(self, sock: socket.socket, name: str):
        self.sock, self.name = sock, name
        self._buf = b""

    def ask(self, line: str) -> dict[str, str]:
        """Send one introspection command; its reply's fields (IntrospectionError unless `ok`)."""
        self.sock.settimeout(ASK_TIMEOUT)
        try:
            self.sock.sendall(line.encode("ascii") + b"\n")
            while b"\n" not in self._buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise IntrospectionError(f"{self.name}: the introspection channel closed (`{line}`)")
                self._buf += chunk
                if len(self._buf) > MAX_REPLY:
                    raise IntrospectionError(f"{self.name}: introspection reply longer than {MAX_REPLY} bytes")
        except OSError as e:
            raise IntrospectionError(f"{self.name}: introspection `{line}`: {e}") from None
        reply, _, self._buf = self._buf.partition(b"\n")
        words = reply.decode("ascii", "replace").split()
        if len(words) < 2 or words[0] != "ok":
            raise IntrospectionError(f"{self.name}: introspection `{line}` answered {' '.join(words)[:200]!r}")
        return dict(w.split("=", 1) for w in words[2:] if "=" in w)

    def rows(self) -> list[tuple[str, ...]]:
        """PROTO/STATE/SRC/SPORT/DST/DPORT/RQ/WQ/SHUT/RTO rows of `sockets`."""
        text = self.ask("sockets").get("rows", "-")
        return [tuple(r.split("/")) for r in text.split("~")] if text != "-" else []

    def sockets(self, proto: str, family: str | None, bound: bool) -> list[SockInfo]:
        """The stack's rows as the kernel's table would list them (sock_diag: a TCP socket bound but
        neither listening nor connected, CLOSE, only when bound=True)."""
        out = []
        for p, st, src, sport, dst, dport, rq, wq, shut, *_ in self.rows():
            fam = socket.AF_INET6 if ":" in src else socket.AF_INET
            if p != proto or (family and fam != FAMILIES[family]):
                continue
            if p == "tcp" and st == "CLOSE" and not bound:
                continue
            owned = shut != "closed"  # no handle holds it: queued for accept, or an orphan
            out.append(SockInfo(st, src, int(sport), dst, int(dport), int(rq), int(wq), fam, p, owned=owned))
        return out

    def rto_ms(self, match: dict) -> int | None:
        """The RTO column (ms) of the first TCP row whose fields equal every item of match; None if none
        matches or the stack cannot tell (-1, or a row without the column)."""
        for p, _st, src, sport, dst, dport, *rest in self.rows():
            fields = {"src": src, "sport": int(sport), "dst": dst, "dport": int(dport)}
            if p == "tcp" and all(fields.get(k, v) == v for k, v in match.items()):
                rto = int(rest[3]) if len(rest) > 3 else -1
                return rto if rto >= 0 else None
        return None

    def shut(self, addr: str, port: int, remote_port: int) -> str | None:
        """The SHUT column of the TCP row with that local address and port and remote port."""
        for p, _st, src, sport, _dst, dport, _rq, _wq, shut, *_ in self.rows():
            if (p, src, int(sport), int(dport)) == ("tcp", addr, port, remote_port):
                return shut
        return None

    def counters(self) -> dict[str, int]:
        """Every counter the stack keeps, under the kernel's names; the ones it does not keep are absent."""
        return {k: int(v) for k, v in self.ask("counters").items()}

    def neighbour_state(self, addr: str) -> str | None:
        state = self.ask(f"neighbour {addr}").get("state", "-")
        return None if state in ("-", "NONE") else state

    def close(self):
        self.sock.close()
