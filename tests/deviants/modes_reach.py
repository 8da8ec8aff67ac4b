"""Deviations for the reach cases: unreachable outcomes, abort on overflow, blocking calls."""
import errno
import socket

from common import base, original


def _connect_mapping(src, dst, text):
    def connect(self, h, addr, port, ms):
        try:
            return original("connect")(self, h, addr, port, ms)
        except OSError as e:
            if e.errno == src:
                raise OSError(dst, text) from None
            raise

    return connect


hostunreach_as_timedout = _connect_mapping(errno.EHOSTUNREACH, errno.ETIMEDOUT, "Connection timed out")
hostunreach_as_timedout.__doc__ = "Reports ETIMEDOUT where the API said EHOSTUNREACH (one errno for all failures)."

netunreach_as_hostunreach = _connect_mapping(errno.ENETUNREACH, errno.EHOSTUNREACH, "No route to host")
netunreach_as_hostunreach.__doc__ = "Reports EHOSTUNREACH where the API said ENETUNREACH (no net/host distinction)."


def connect_nowait(self, h, addr, port, ms):
    """Starts the handshake and answers ok at once, without waiting for it to complete."""
    sock = self.handle(h)
    target = base.sockaddr(sock, addr, port)
    saved = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.connect_ex(target)
    finally:
        sock.settimeout(saved)
    return {}


def accept_nowait(self, h, ms):
    """Gives up at once with a timeout instead of waiting for a connection."""
    sock = self.handle(h)
    sock.setblocking(False)
    try:
        conn, peer = sock.accept()
    except BlockingIOError:
        raise socket.timeout("timed out") from None
    finally:
        sock.setblocking(True)
    return {"h": self.add(conn), **base.addr_fields(peer)}


MODES = {
    "reach-hostunreach-as-timedout": ("connect", hostunreach_as_timedout),
    "reach-netunreach-as-hostunreach": ("connect", netunreach_as_hostunreach),
    "reach-connect-nowait": ("connect", connect_nowait),
    "reach-accept-nowait": ("accept", accept_nowait),
}
