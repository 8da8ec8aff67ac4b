"""Python target agent: executes socket calls on command, see targets/PROTOCOL.md.

It uses the socket module the way a Python program would and reports what it
returned. No test logic lives here.
"""

import errno
import os
import socket
import sys
import time

FAMILIES = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}
KINDS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
SHUT = {"rd": socket.SHUT_RD, "wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}
MAX_LINE = 4096  # bytes in a command line, its newline not counted


class Proto(Exception):
    """The command itself is wrong: reply `proto CODE`."""

    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


# Percent-encoding by hand (PROTOCOL.md, "Values"): importing urllib.parse (and re with it) and
# platform cost a Python agent 35 ms of its start, and an agent starts for every case.
UNESCAPED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/")


def pct(text):
    return "".join(chr(b) if b in UNESCAPED else f"%{b:02X}" for b in str(text).encode())


def timeout_arg(text):
    if text == "none":
        return None
    return number(text, 1) / 1000.0


def number(text, low=0, high=2**31 - 1):
    try:
        value = int(text, 10)
    except ValueError:
        raise Proto("badarg", f"not a number: {text}") from None
    if not low <= value <= high:
        raise Proto("badarg", f"out of range: {text}")
    return value


def keyword(table, text):
    if text not in table:
        raise Proto("badarg", f"unknown keyword {text}")
    return table[text]


def unhex(text):
    if text == "-":
        return b""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Proto("badarg", "bad hex") from None


def sockaddr(sock, addr, port):
    port = number(port, 0, 65535)
    try:
        packed = socket.inet_pton(sock.family, addr)
    except OSError:
        raise Proto("badarg", f"bad address {addr}") from None
    return (socket.inet_ntop(sock.family, packed), port)


def addr_fields(address):
    return {"addr": address[0], "port": address[1]}


class Agent:
    def __init__(self):
        self.sockets = {}
        self.next_handle = 1

    def handle(self, text):
        h = number(text)
        if h not in self.sockets:
            raise Proto("badhandle", f"no handle {text}")
        return self.sockets[h]

    def add(self, sock):
        h = self.next_handle
        self.next_handle += 1
        self.sockets[h] = sock
        return h

    # Each op returns a dict of reply fields; OSError propagates as `err`.
    def op_socket(self, kind, family):
        sock = socket.socket(keyword(FAMILIES, family), keyword(KINDS, kind))
        return {"h": self.add(sock)}

    def op_setsockopt(self, h, opt, *values):
        sock = self.handle(h)
        want = {"reuseaddr": 1, "linger": 2, "syncnt": 1, "user_timeout": 1, "nonblock": 1}
        if opt not in want:
            raise Proto("badarg", f"unknown option {opt}")
        if len(values) != want[opt]:
            raise Proto("badline", f"{opt} takes {want[opt]} value(s)")
        nums = [number(v) for v in values]
        if opt == "reuseaddr":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, nums[0])
        elif opt == "linger":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_struct(*nums))
        elif opt == "syncnt":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT, nums[0])
        elif opt == "user_timeout":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, nums[0])
        else:
            sock.setblocking(not nums[0])
        return {}

    def op_getsockopt(self, h, opt):
        sock = self.handle(h)
        if opt == "reuseaddr":
            value = sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR)
        elif opt == "linger":
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
            value = f"{int.from_bytes(raw[:4], sys.byteorder)},{int.from_bytes(raw[4:], sys.byteorder)}"
        elif opt == "syncnt":
            value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_SYNCNT)
        elif opt == "user_timeout":
            value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        elif opt == "nonblock":
            value = int(not sock.getblocking())
        else:
            raise Proto("badarg", f"unknown option {opt}")
        return {"value": value}

    def op_bind(self, h, addr, port):
        sock = self.handle(h)
        sock.bind(sockaddr(sock, addr, port))
        return {}

    def op_listen(self, h, backlog):
        sock = self.handle(h)
        if backlog == "default":
            sock.listen()
        else:
            sock.listen(number(backlog))
        return {}

    def op_accept(self, h, ms):
        sock = self.handle(h)
        with timeout(sock, timeout_arg(ms)):
            conn, peer = sock.accept()
        return {"h": self.add(conn), **addr_fields(peer)}

    def op_connect(self, h, addr, port, ms):
        sock = self.handle(h)
        target = sockaddr(sock, addr, port)
        with timeout(sock, timeout_arg(ms)):
            sock.connect(target)
        return {}

    def op_send(self, h, data):
        sock = self.handle(h)
        return {"n": sock.send(unhex(data))}

    def op_recv(self, h, size, ms):
        sock = self.handle(h)
        size = number(size, 1, 1 << 20)
        with timeout(sock, timeout_arg(ms)):
            if sock.type == socket.SOCK_DGRAM:
                data, peer = sock.recvfrom(size)
                return {"n": len(data), "data": data.hex() or "-", **addr_fields(peer)}
            data = sock.recv(size)
        return {"n": len(data), "data": data.hex() or "-"}

    def op_shutdown(self, h, how):
        self.handle(h).shutdown(keyword(SHUT, how))
        return {}

    def op_close(self, h):
        sock = self.handle(h)
        del self.sockets[number(h)]
        sock.close()
        return {}

    def op_getsockname(self, h):
        return addr_fields(self.handle(h).getsockname())

    def op_getpeername(self, h):
        return addr_fields(self.handle(h).getpeername())

    def op_quit(self):
        return {}


def linger_struct(onoff, seconds):
    return onoff.to_bytes(4, sys.byteorder) + seconds.to_bytes(4, sys.byteorder)


class timeout:
    """Apply an operation's own timeout, restoring the socket's mode after."""

    def __init__(self, sock, seconds):
        self.sock, self.seconds = sock, seconds

    def __enter__(self):
        self.saved = self.sock.gettimeout()
        # A non-blocking socket stays non-blocking: the call fails at once.
        if self.saved != 0.0:
            self.sock.settimeout(self.seconds)

    def __exit__(self, *exc):
        self.sock.settimeout(self.saved)


def execute(agent, line):
    words = line.split()
    if not words:
        raise Proto("badline", "empty line")
    op = getattr(agent, "op_" + words[0], None)
    if op is None:
        raise Proto("badop", f"unknown command {words[0]}")
    code = op.__code__
    positional = code.co_argcount - 1
    takes_more = bool(code.co_flags & 0x04)
    args = words[1:]
    if len(args) < positional or (len(args) > positional and not takes_more):
        raise Proto("badline", f"{words[0]} takes {positional} argument(s)")
    return op(*args)


def reply(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fields(values):
    return "".join(f" {k}={v}" for k, v in values.items())


def serve(stream):
    agent = Agent()
    for raw in stream:
        start = time.monotonic_ns()
        line = ""
        try:
            if len(raw) - raw.endswith(b"\n") > MAX_LINE:
                raise Proto("badline", "line too long")
            try:
                line = raw.decode("ascii").rstrip("\n")
            except UnicodeDecodeError:
                raise Proto("badline", "not ASCII") from None
            result = execute(agent, line)
            us = (time.monotonic_ns() - start) // 1000
            reply(f"ok {us}{fields(result)}")
            if line.split() == ["quit"]:
                return
        except Proto as e:
            reply(f"proto {e.code} msg={pct(e)}")
        except TimeoutError as e:  # socket.timeout is TimeoutError since Python 3.10
            us = (time.monotonic_ns() - start) // 1000
            # settimeout's own expiry: TimeoutError with errno None.
            if e.errno is None:
                reply(f"err timeout {us} msg={pct(e)}")
            else:
                reply(f"err {errno.errorcode.get(e.errno, 'noerrno')} {us} msg={pct(e.strerror)}")
        except OSError as e:
            us = (time.monotonic_ns() - start) // 1000
            name = errno.errorcode.get(e.errno, "noerrno") if e.errno else "noerrno"
            reply(f"err {name} {us} msg={pct(e.strerror or e)}")


def main():
    reply(f"ready proto=1 lang=python version={pct(sys.version.split()[0])} pid={os.getpid()}")
    serve(sys.stdin.buffer)


if __name__ == "__main__":
    main()
