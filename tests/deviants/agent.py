"""A deviant target, for the suite's own tests only: the Python agent with one behaviour broken.

Each --mode breaks exactly one behaviour that one case checks, so the tests in
tests/suite/test_deviants.py can show that the case fails on it (a case that
cannot fail is worthless). This file is never a built-in target.
"""
import argparse
import errno
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "targets", "python"))
import agent as base  # noqa: E402  the real Python agent


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
        return ORIGINAL["connect"](self, h, addr, port, ms)
    except ConnectionRefusedError:
        raise OSError(errno.ECONNRESET, "Connection reset by peer") from None


def fake_refused(self, h, addr, port, ms):
    """Never connects: answers ECONNREFUSED without sending a SYN."""
    self.handle(h)
    raise OSError(errno.ECONNREFUSED, "Connection refused")


def client_timeout(self, h, addr, port, ms):
    """Gives up by a timer of its own (settimeout), not the kernel's ETIMEDOUT."""
    return ORIGINAL["connect"](self, h, addr, port, "500" if ms == "none" else ms)


def big_backlog(self, h, backlog):
    """Ignores the backlog it is given and listens with 128."""
    self.handle(h).listen(128)
    return {}


def linger_close(self, h):
    """Closes with SO_LINGER {1, 0}: an RST instead of a FIN, no TIME_WAIT."""
    sock = self.handle(h)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, base.linger_struct(1, 0))
    return ORIGINAL["close"](self, h)


MODES = {
    "eager-accept": ("listen", eager_accept),
    "wrong-errno": ("connect", wrong_errno),
    "fake-refused": ("connect", fake_refused),
    "client-timeout": ("connect", client_timeout),
    "big-backlog": ("listen", big_backlog),
    "linger-close": ("close", linger_close),
}
ORIGINAL = {op: getattr(base.Agent, "op_" + op) for op, _ in MODES.values()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", required=True, choices=sorted(MODES))
    mode = parser.parse_args().mode
    op, fn = MODES[mode]
    setattr(base.Agent, "op_" + op, fn)
    base.main()


if __name__ == "__main__":
    main()
