"""Deviations for the close group: four-way close, half-close, rebinding after TIME_WAIT, RST causes, UDP.

Each breaks one behaviour that one case of tests/cases/test_four_way_close.py,
test_rebind.py, test_rst.py or test_udp.py checks, the way a buggy language
binding or runtime could.
"""
import errno
import socket

from common import base, original

LEAKED = []  # sockets a deviant "closed" without closing: kept referenced so the GC does not close them


def leaks_on_close(self, h):
    """close() forgets the handle but never closes the socket (a leaked descriptor): no FIN, no RST."""
    sock = self.handle(h)
    del self.sockets[base.number(h)]
    LEAKED.append(sock)
    return {}


def eof_as_reset(self, h, size, ms):
    """recv() reports end of file on a TCP socket as ECONNRESET (the peer's FIN taken for an error)."""
    fields = original("recv")(self, h, size, ms)
    if self.handle(h).type == socket.SOCK_STREAM and fields["n"] == 0:
        raise OSError(errno.ECONNRESET, "Connection reset by peer")
    return fields


def reset_as_eof(self, h, size, ms):
    """recv() reports a reset connection as end of file (n=0), hiding ECONNRESET."""
    try:
        return original("recv")(self, h, size, ms)
    except ConnectionResetError:
        return {"n": 0, "data": "-"}


def shutdown_rdwr(self, h, how):
    """shutdown(SHUT_WR) is carried out as shutdown(SHUT_RDWR): the half-closed side stops reading too."""
    return original("shutdown")(self, h, "rdwr" if how == "wr" else how)


def reuseaddr_always(self, h, addr, port):
    """bind() sets SO_REUSEADDR on every TCP socket, overriding what the program asked for."""
    sock = self.handle(h)
    if sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return original("bind")(self, h, addr, port)


def reuseaddr_ignored(self, h, opt, *values):
    """setsockopt(SO_REUSEADDR) is accepted and ignored."""
    if opt == "reuseaddr":
        self.handle(h)
        return {}
    return original("setsockopt")(self, h, opt, *values)


def linger_off_at_close(self, h):
    """close() turns SO_LINGER off before closing (a runtime resetting options): a FIN instead of the RST."""
    sock = self.handle(h)
    if sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, base.linger_struct(0, 0))
    return original("close")(self, h)


def drains_before_close(self, h):
    """close() first reads and discards whatever waits in the receive buffer: a FIN instead of the RST."""
    sock = self.handle(h)
    if sock.type == socket.SOCK_STREAM:
        sock.setblocking(False)
        try:
            for _ in range(64):  # bounded
                if not sock.recv(1 << 16):
                    break
        except OSError:  # nothing (more) to read, or not connected
            pass
    return original("close")(self, h)


def udp_as_tcp(self, kind, family):
    """socket udp creates a TCP socket."""
    return original("socket")(self, "tcp" if kind == "udp" else kind, family)


def udp_fake_refused(self, h, data):
    """send() on a UDP socket reports ECONNREFUSED without sending anything."""
    if self.handle(h).type == socket.SOCK_DGRAM:
        raise OSError(errno.ECONNREFUSED, "Connection refused")
    return original("send")(self, h, data)


MODES = {
    "close-leak": ("close", leaks_on_close),
    "close-eof-as-reset": ("recv", eof_as_reset),
    "close-reset-as-eof": ("recv", reset_as_eof),
    "close-shutdown-rdwr": ("shutdown", shutdown_rdwr),
    "close-reuseaddr-always": ("bind", reuseaddr_always),
    "close-reuseaddr-ignored": ("setsockopt", reuseaddr_ignored),
    "close-linger-off-at-close": ("close", linger_off_at_close),
    "close-drains-before-close": ("close", drains_before_close),
    "close-udp-as-tcp": ("socket", udp_as_tcp),
    "close-udp-fake-refused": ("send", udp_fake_refused),
}
