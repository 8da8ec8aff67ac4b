"""Driving a target agent over its stdin/stdout (targets/PROTOCOL.md).

Every call has a deadline. A hung, crashed or babbling agent is killed (by its
PID, which we started) and reported as AgentError with the target's name, the
command, and the tail of its stderr. Commands are formatted, and reply fields
typed, from the protocol's table (conformance.protocol).
"""

from __future__ import annotations

import ipaddress
import os
import re
import select
import signal
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

from . import protocol

MAX_REPLY = 1 << 20  # a reply longer than this is a flood, not a reply
# The default deadline in seconds (--agent-deadline sets an agent's own): for the ready line, and
# for a call with no timeout of its own. A call with a timeout gets that timeout + DEADLINE_MARGIN.
DEFAULT_DEADLINE = 10.0
DEADLINE_MARGIN = 5.0  # on top of an operation's own timeout
CALL_TIMEOUT = 2.0  # s: the timeout of the agent's own that a blocking call gets unless the case says otherwise


class AgentError(Exception):
    """The agent broke the protocol or its process failed: the case cannot go on."""

    def __init__(self, target: str, command: str, reason: str, stderr: str = ""):
        self.target, self.command, self.reason, self.stderr = target, command, reason, stderr
        text = f"target {target}: {reason} (command: {command!r})"
        if stderr:
            text += "\n--- stderr tail ---\n" + stderr
        super().__init__(text)


class Unsupported(Exception):
    """The target's language cannot express an operation: the case does not apply to it.

    The pytest plugin reports it as a skip with this message."""


class StepFailed(AssertionError):
    """A step the case needs to succeed did not: says what was expected and what came."""


@dataclass
class Reply:
    target: str
    command: str
    status: str  # ok, err, unsupported, proto
    us: int = 0
    errno: str = ""  # for err: the errno name or 'timeout'; for proto: the code
    fields: dict = field(default_factory=dict)  # typed: h, n, port int; data bytes; others text

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ms(self) -> float:
        return self.us / 1000.0

    @property
    def msg(self) -> str:
        """The agent's own message, control characters escaped (printable)."""
        return printable(str(self.fields.get("msg", "")))

    def __getitem__(self, key):
        return self.fields[key]

    def get(self, key, default=None):
        return self.fields.get(key, default)

    def check(self, why: str = "") -> Reply:
        """Return self if ok; raise Unsupported if the language cannot express it; StepFailed otherwise.

        why: what the step is for, said in the failure ("listen before the clients connect")."""
        if self.status == "unsupported":
            raise Unsupported(f"{self.target}: `{self.command}` is unsupported: {self.msg}")
        if not self.ok:
            purpose = f" ({why})" if why else ""
            raise StepFailed(
                f"`{self.command}`{purpose} must succeed on {self.target}: expected ok, got {self.outcome}"
                f" after {self.ms:.3f} ms{self._extra()}"
            )
        return self

    # typed fields of an ok reply (each checks the reply first)
    @property
    def h(self) -> int:
        return self.check().fields["h"]

    @property
    def n(self) -> int:
        return self.check().fields["n"]

    @property
    def data(self) -> bytes:
        return self.check().fields["data"]

    @property
    def addr(self) -> str:
        return self.check().fields["addr"]

    @property
    def port(self) -> int:
        return self.check().fields["port"]

    @property
    def endpoint(self) -> tuple[str, int]:
        """(addr, port) of accept, getsockname, getpeername, or a UDP recv's sender."""
        return self.addr, self.port

    @property
    def value(self) -> str:
        return self.check().fields["value"]

    @property
    def eof(self) -> bool:
        """A recv that returned end of file (n=0)."""
        return self.ok and self.fields.get("n") == 0

    @property
    def outcome(self) -> str:
        """ok, unsupported, the errno name (or timeout), or `proto CODE`."""
        if self.status == "err":
            return self.errno
        return f"proto {self.errno}" if self.status == "proto" else self.status

    def _extra(self) -> str:
        parts = [f"{k}={v.hex() or '-' if isinstance(v, bytes) else printable(str(v))}" for k, v in self.fields.items()]
        return (" (" + " ".join(parts) + ")") if parts else ""

    def __str__(self):
        return f"{self.target}: `{self.command}` -> {self.outcome} ({self.ms:.3f} ms){self._extra()}"


ERRNO_NAME = re.compile(r"E[A-Z0-9]+|timeout|noerrno")


def parse_reply(target: str, command: str, line: str) -> Reply:
    """Parse one reply line; raise ValueError when it is not a reply."""
    words = line.split()
    if not words:
        raise ValueError("empty reply")
    status, rest = words[0], words[1:]
    errno = ""
    if status == "ok" or status == "unsupported":
        us_text, rest = rest[0], rest[1:]
    elif status == "err":
        errno, us_text, rest = rest[0], rest[1], rest[2:]
        if not ERRNO_NAME.fullmatch(errno):
            raise ValueError(f"err {errno!r} is not an errno name (E..., timeout or noerrno)")
    elif status == "proto":
        errno, us_text, rest = rest[0], "0", rest[1:]
    else:
        raise ValueError(f"unknown status {status!r}")
    us = int(us_text)
    if us < 0:
        raise ValueError("negative time")
    return Reply(target, command, status, us, errno, parse_fields(rest))


def parse_fields(words) -> dict:
    out = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"not KEY=VALUE: {word!r}")
        try:
            out[key] = protocol.typed(key, urllib.parse.unquote(value))
        except ValueError:
            raise ValueError(f"field {key}={value!r} does not parse as the protocol's type") from None
    return out


def family_of(addr: str) -> str:
    return "v4" if ipaddress.ip_address(addr).version == 4 else "v6"


class Agent:
    """One running agent process. Use as a context manager or call stop()."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        launcher: list[str] | None = None,
        env=None,
        deadline: float | None = None,
        pass_fds: tuple[int, ...] = (),
    ):
        """deadline: seconds the agent may take to start, or to answer a call with no timeout of
        its own, before it is killed as hung (default DEFAULT_DEADLINE). pass_fds: descriptors the
        agent inherits (every other one is closed); the launcher (conformance/launch.c) keeps them
        open across its exec."""
        self.name = name
        self.argv = argv
        self.deadline = DEFAULT_DEADLINE if deadline is None else deadline
        self.transcript: list[tuple[str, str]] = []  # (command, reply line) for the evidence
        self._buf = b""
        self._stderr = StderrTail()
        full = (launcher or []) + argv
        try:
            self.proc = subprocess.Popen(
                full,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr.write_end,
                env=env,
                close_fds=True,
                pass_fds=pass_fds,
            )
        except OSError as e:
            self._stderr.close()
            raise AgentError(name, " ".join(full), f"cannot start: {e}") from None
        self._stderr.start()
        self.pid = self.proc.pid
        line = self._readline("(start)", self.deadline)
        words = line.split()
        if not words or words[0] != "ready":
            self._fail("(start)", f"expected a `ready` line, got {line!r}")
        try:
            self.info = parse_fields(words[1:])
        except ValueError as e:
            self._fail("(start)", f"malformed ready line {line!r}: {e}")
        if self.info.get("proto") != protocol.VERSION:
            self._fail(
                "(start)",
                f"the ready line says proto={self.info.get('proto', '(missing)')}; this harness "
                f"speaks proto={protocol.VERSION} only: {line!r}",
            )
        self.transcript.append(("(start)", line))

    @property
    def version(self) -> str:
        return printable(str(self.info.get("version", "")))

    # -- low level -------------------------------------------------------
    def _stderr_tail(self) -> str:
        return printable(self._stderr.tail())

    def _fail(self, command: str, reason: str):
        self.kill()
        raise AgentError(self.name, command, reason, self._stderr_tail())

    def _readline(self, command: str, deadline: float) -> str:
        end = time.monotonic() + deadline
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_REPLY:
                self._fail(command, f"reply longer than {MAX_REPLY} bytes without a newline (flood)")
            left = end - time.monotonic()
            if left <= 0:
                self._fail(command, f"no reply within {deadline:.1f} s: agent hung, killed")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = self._reap()
                self._fail(
                    command,
                    "agent closed its stdout before replying"
                    if code is None
                    else f"agent exited (status {code}) before replying",
                )
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        if len(line) > MAX_REPLY:
            self._fail(command, f"reply longer than {MAX_REPLY} bytes (flood)")
        try:
            return line.decode("ascii")
        except UnicodeDecodeError:
            self._fail(command, f"reply is not ASCII: {line[:80]!r}")

    def submit(self, command: str, deadline: float | None = None) -> Pending:
        """Send a command line without waiting: the agent may block in it while the case acts."""
        if self.proc.poll() is not None:
            self._fail(command, f"agent is not running (status {self.proc.returncode})")
        try:
            self.proc.stdin.write(command.encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            code = self._reap()
            self._fail(command, "agent closed its stdin" if code is None else f"agent exited (status {code})")
        return Pending(self, command, self.deadline if deadline is None else deadline)

    def receive(self, command: str, deadline: float, raw: bool = False) -> Reply:
        """Read the reply to command. A `proto` reply to a well-formed command means the agent
        is broken (say, it lost track of its handles): AgentError, unless raw (protocol tests)."""
        line = self._readline(command, deadline)
        self.transcript.append((command, line))
        try:
            reply = parse_reply(self.name, command, line)
        except (ValueError, IndexError) as e:
            self._fail(command, f"malformed reply {line!r}: {e}")
        if reply.status == "proto" and not raw:
            self._fail(command, f"protocol error from the agent: {line}")
        if reply.ok and not raw:
            name = command.split(" ", 1)[0]
            missing = (
                [f for f in protocol.COMMANDS[name].reply if f not in reply.fields] if name in protocol.COMMANDS else []
            )
            if missing:
                self._fail(command, f"the ok reply lacks {', '.join(missing)}: {line}")
        return reply

    def call(self, command: str, deadline: float | None = None, raw: bool = False) -> Reply:
        """Send a command line and wait for its reply; raw=True returns `proto` replies instead of failing."""
        return self.submit(command, deadline).wait(raw)

    def do(self, name: str, *args, timeout: float | None = None, later: bool = False):
        """Run protocol command `name` with args in the table's order (conformance.protocol).

        timeout: the operation's own timeout (MS) where the command has one; the harness's
        deadline is that plus a margin. later=True returns a Pending instead of waiting."""
        has_ms = "MS" in protocol.COMMANDS[name].args
        line = protocol.command_line(name, *args, *((timeout,) if has_ms else ()))
        deadline = timeout + DEADLINE_MARGIN if has_ms and timeout is not None else None
        pending = self.submit(line, deadline)
        return pending if later else pending.wait()

    # -- operations (targets/PROTOCOL.md) ---------------------------------
    def socket(self, kind: str = "tcp", family: str = "v4") -> Reply:
        return self.do("socket", kind, family)

    def setsockopt(self, h: int, opt: str, *values) -> Reply:
        return self.do("setsockopt", h, opt, *values)

    def getsockopt(self, h: int, opt: str) -> Reply:
        return self.do("getsockopt", h, opt)

    def bind(self, h: int, addr: str, port: int) -> Reply:
        return self.do("bind", h, addr, port)

    def listen(self, h: int, backlog="default") -> Reply:
        return self.do("listen", h, backlog)

    def accept(self, h: int, timeout: float | None = CALL_TIMEOUT) -> Reply:
        return self.do("accept", h, timeout=timeout)

    def accept_later(self, h: int, timeout: float | None = CALL_TIMEOUT) -> Pending:
        return self.do("accept", h, timeout=timeout, later=True)

    def connect(self, h: int, addr: str, port: int, timeout: float | None = CALL_TIMEOUT) -> Reply:
        return self.do("connect", h, addr, port, timeout=timeout)

    def connect_later(self, h: int, addr: str, port: int, timeout: float | None = CALL_TIMEOUT) -> Pending:
        return self.do("connect", h, addr, port, timeout=timeout, later=True)

    def send(self, h: int, data: bytes) -> Reply:
        return self.do("send", h, data)

    def recv(self, h: int, size: int = 65536, timeout: float | None = CALL_TIMEOUT) -> Reply:
        return self.do("recv", h, size, timeout=timeout)

    def shutdown(self, h: int, how: str) -> Reply:
        return self.do("shutdown", h, how)

    def close(self, h: int) -> Reply:
        return self.do("close", h)

    def getsockname(self, h: int) -> Reply:
        return self.do("getsockname", h)

    def getpeername(self, h: int) -> Reply:
        return self.do("getpeername", h)

    def quit(self) -> Reply:
        return self.do("quit")

    # -- steps many cases take ----------------------------------------------
    def listener(self, addr: str, port: int, backlog=4, reuseaddr: int | None = None) -> int:
        """A TCP socket listening on (addr, port): socket, [SO_REUSEADDR], bind, listen; its handle.

        Each step must succeed (StepFailed names the one that did not; Unsupported skips)."""
        ls = self.socket("tcp", family_of(addr)).h
        if reuseaddr is not None:
            self.setsockopt(ls, "reuseaddr", reuseaddr).check("set SO_REUSEADDR on the listener")
        self.bind(ls, addr, port).check(f"bind the listener to {addr} port {port}")
        self.listen(ls, backlog).check(f"listen with backlog {backlog}")
        return ls

    def recv_exactly(self, h: int, size: int, tries: int = 4, timeout: float | None = CALL_TIMEOUT) -> bytes:
        """Read until size bytes came or end of file (bounded: at most `tries` recv calls)."""
        data = b""
        for _ in range(tries):
            r = self.recv(h, size - len(data), timeout).check(f"read {size} bytes")
            if r.n == 0:
                break
            data += r.data
            if len(data) >= size:
                break
        return data

    # -- lifetime ----------------------------------------------------------
    def _reap(self, timeout: float = 1.0) -> int | None:
        """The agent's exit status if it exits within timeout (bounded), else None (it is still running)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap(5.0)  # SIGKILL ends it at once unless the kernel holds it (uninterruptible I/O)

    def stop(self):
        """Ask the agent to quit, then make sure it is gone; close every pipe and file."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: the agent exits
            except OSError:
                pass
            self._reap(1.0)
        self.kill()
        for f in (self.proc.stdout, self.proc.stdin):
            try:
                f.close()
            except OSError:
                pass
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class StderrTail:
    """An agent's stderr, drained by a thread of ours into a bounded tail (a flooding agent
    cannot fill memory or disk): the last LIMIT bytes are kept."""

    LIMIT = 8192

    def __init__(self):
        self._read, self.write_end = os.pipe()
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._thread = None

    def start(self):
        os.close(self.write_end)  # the agent holds the only write end now: its exit is our EOF
        self.write_end = -1
        self._thread = threading.Thread(target=self._drain, name="agent-stderr", daemon=True)
        self._thread.start()

    def _drain(self):
        fd = self._read
        try:
            while chunk := os.read(fd, 65536):  # ends at EOF: every holder of the write end is gone
                with self._lock:
                    self._buf += chunk
                    del self._buf[: -self.LIMIT]
        except OSError:
            pass
        finally:
            os.close(fd)

    def tail(self, limit: int = 2000) -> str:
        if self._thread is not None:
            self._thread.join(timeout=0.2)  # what the agent wrote just before it died
        with self._lock:
            return bytes(self._buf[-limit:]).decode("utf-8", "replace")

    def close(self):
        """After the agent is gone: the drain thread reads to EOF and closes its end (bounded wait)."""
        if self.write_end >= 0:  # never started (the agent did not start)
            os.close(self.write_end)
            self.write_end = -1
        if self._thread is None:
            if self._read >= 0:
                os.close(self._read)
        else:
            self._thread.join(timeout=1.0)
        self._read = -1


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """Text from an agent, safe for a terminal and XML: control characters as \\xNN escapes."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Pending:
    """A command sent, its reply not read yet."""

    def __init__(self, agent: Agent, command: str, deadline: float):
        self.agent, self.command, self.deadline = agent, command, deadline

    def wait(self, raw: bool = False) -> Reply:
        return self.agent.receive(self.command, self.deadline, raw)
