"""Deviations for the five mission cases."""
import errno
import socket
import threading

from common import base, original


def eager_accept(self, h, backlog):
    """Accepts every connection itself as soon as it arrives (nothing waits in the queue)."""
    sock = self.handle(h)
    sock.listen(int(backlog) if backlog != "default" else 128)
    kept = []

    def loop():
        while True:
            try:
                kept.append(sock.accept())
            except OSError:
                return

    threading.Thread(target=loop, daemon=True).start()
    return {}


def wrong_errno(self, h, addr, port, ms):
    """Reports ECONNRESET where the API said ECONNREFUSED."""
    try:
        return original("connect")(self, h, addr, port, ms)
    except ConnectionRefusedError:
        raise OSError(errno.ECONNRESET, "Connection reset by peer") from None


def fake_refused(self, h, addr, port, ms):
    """Never connects: answers ECONNREFUSED without sending a SYN."""
    self.handle(h)
    raise OSError(errno.ECONNREFUSED, "Connection refused")


def client_timeout(self, h, addr, port, ms):
    """Gives up by a timer of its own (settimeout), not the kernel's ETIMEDOUT."""
    return original("connect")(self, h, addr, port, "500" if ms == "none" else ms)


def big_backlog(self, h, backlog):
    """Ignores the backlog it is given and listens with 128."""
    self.handle(h).listen(128)
    return {}


def linger_close(self, h):
    """Closes with SO_LINGER {1, 0}: an RST instead of a FIN, no TIME_WAIT."""
    sock = self.handle(h)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, base.linger_struct(1, 0))
    return original("close")(self, h)


def ignore_syncnt(self, h, opt, *values):
    """Accepts TCP_SYNCNT but does not set it: a connect to a silent address waits the kernel's 133 s."""
    if opt == "syncnt":
        self.handle(h)
        return {}
    return original("setsockopt")(self, h, opt, *values)


MODES = {
    "ignore-syncnt": ("setsockopt", ignore_syncnt),
    "eager-accept": ("listen", eager_accept),
    "wrong-errno": ("connect", wrong_errno),
    "fake-refused": ("connect", fake_refused),
    "client-timeout": ("connect", client_timeout),
    "big-backlog": ("listen", big_backlog),
    "linger-close": ("close", linger_close),
}
