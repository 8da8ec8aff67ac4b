"""Deviations for the accept group: accept, listen, ephemeral port, wildcard and backlog cases.

Each breaks one behaviour that one case of tests/cases/test_accept_*, test_listen_*,
test_ephemeral_*, test_wildcard_* or test_backlog_* checks, the way a buggy
language binding could.
"""
import socket

from common import base, original

# The target's first address on the link (conformance/topology.py): where a
# deviant that "picks an address of its own" binds.
FIRST_ADDR = {socket.AF_INET: "198.51.100.1", socket.AF_INET6: "2001:db8::1"}
WILDCARD = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
FIXED_PORT = 7777  # outside the narrowed ephemeral range of the cases
FIXED_CLIENT_PORT = 50000


def drops_early_data(self, h, ms):
    """accept() then discards whatever the client sent before it (flushes the receive queue)."""
    reply = original("accept")(self, h, ms)
    conn = self.handle(str(reply["h"]))
    try:
        conn.recv(1 << 16, socket.MSG_DONTWAIT)
    except BlockingIOError:
        pass
    return reply


def closes_listener(self, h, ms):
    """accept() closes the listening socket after handing over one connection (a one-shot server)."""
    reply = original("accept")(self, h, ms)
    self.handle(h).close()  # the handle stays, its socket is gone
    return reply


def fake_peer(self, h, ms):
    """accept() reports a made-up peer port (the real port + 1)."""
    reply = original("accept")(self, h, ms)  # the accepted socket is real; only the reported address lies
    return {**reply, "port": (int(reply["port"]) % 65535) + 1}


def ignores_nonblock(self, h, ms):
    """accept() waits with the call's timeout even on a non-blocking socket."""
    sock = self.handle(h)
    saved = sock.gettimeout()
    sock.settimeout(base.timeout_arg(ms))
    try:
        conn, peer = sock.accept()
    finally:
        sock.settimeout(saved)
    return {"h": self.add(conn), **base.addr_fields(peer)}


def listens_first(self, h, ms):
    """accept() on a socket that is not listening calls listen() itself first (hides EINVAL)."""
    sock = self.handle(h)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(4)
    return original("accept")(self, h, ms)


def bind_listens(self, h, addr, port):
    """bind() also starts listening (a socket that is only bound takes connections)."""
    reply = original("bind")(self, h, addr, port)
    self.handle(h).listen(4)
    return reply


def connect_fixed_port(self, h, addr, port, ms):
    """connect() on an unbound socket binds a fixed source port first instead of the kernel's ephemeral one."""
    sock = self.handle(h)
    if sock.getsockname()[1] == 0:
        sock.bind((WILDCARD[sock.family], FIXED_CLIENT_PORT))
    return original("connect")(self, h, addr, port, ms)


def bind_fixed_port(self, h, addr, port):
    """bind() to port 0 binds a fixed port instead of letting the kernel choose."""
    return original("bind")(self, h, addr, str(FIXED_PORT) if int(port) == 0 else port)


def wildcard_specific(self, h, addr, port):
    """bind() to the wildcard address binds the target's first address instead."""
    sock = self.handle(h)
    if addr in ("0.0.0.0", "::"):
        addr = FIRST_ADDR[sock.family]
    return original("bind")(self, h, addr, port)


def specific_wildcard(self, h, addr, port):
    """bind() to a specific address binds the wildcard instead."""
    sock = self.handle(h)
    return original("bind")(self, h, WILDCARD[sock.family], port)


def backlog_ignored(self, h, backlog):
    """listen() ignores the backlog it is given and always uses 1."""
    self.handle(h).listen(1)
    return {}


MODES = {
    "accept-drops-early-data": ("accept", drops_early_data),
    "accept-closes-listener": ("accept", closes_listener),
    "accept-fake-peer": ("accept", fake_peer),
    "accept-ignores-nonblock": ("accept", ignores_nonblock),
    "accept-listens-first": ("accept", listens_first),
    "accept-bind-listens": ("bind", bind_listens),
    "accept-connect-fixed-port": ("connect", connect_fixed_port),
    "accept-bind-fixed-port": ("bind", bind_fixed_port),
    "accept-wildcard-specific": ("bind", wildcard_specific),
    "accept-specific-wildcard": ("bind", specific_wildcard),
    "accept-backlog-ignored": ("listen", backlog_ignored),
}
