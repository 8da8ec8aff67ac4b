"""Driving a target agent over its stdin/stdout (targets/PROTOCOL.md).

Every call has a deadline. A hung, crashed or babbling agent is killed (by its
PID, which we started) and reported as AgentError with the target's name, the
command, and the tail of its stderr.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field

import pytest

MAX_REPLY = 1 << 20  # a reply longer than this is a flood, not a reply
# Deadlines in seconds (--agent-deadline sets both): for the ready line, and for a call with no
# timeout of its own. A call with a timeout gets that timeout + DEADLINE_MARGIN.
START_DEADLINE = 10.0
DEFAULT_DEADLINE = 10.0
DEADLINE_MARGIN = 5.0  # on top of an operation's own timeout


class AgentError(Exception):
    """The agent broke the protocol or its process failed: the case cannot go on."""

    def __init__(self, target: str, command: str, reason: str, stderr: str = ""):
        self.target, self.command, self.reason, self.stderr = target, command, reason, stderr
        text = f"target {target}: {reason} (command: {command!r})"
        if stderr:
            text += "\n--- stderr tail ---\n" + stderr
        super().__init__(text)


class StepFailed(AssertionError):
    """A step the case needs to succeed did not."""


@dataclass
class Reply:
    target: str
    command: str
    status: str  # ok, err, unsupported, proto
    us: int = 0
    errno: str = ""  # for err: the errno name or 'timeout'; for proto: the code
    fields: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ms(self) -> float:
        return self.us / 1000.0

    @property
    def msg(self) -> str:
        return self.fields.get("msg", "")

    def __getitem__(self, key):
        return self.fields[key]

    def check(self) -> "Reply":
        """Return self if ok; skip the case if the language cannot express it; fail otherwise."""
        if self.status == "unsupported":
            pytest.skip(f"{self.target}: `{self.command}` is unsupported: {self.msg}")
        if not self.ok:
            raise StepFailed(f"{self}")
        return self

    @property
    def h(self) -> int:
        return int(self.check().fields["h"])

    def __str__(self):
        what = self.status if self.status in ("ok", "unsupported") else f"{self.status} {self.errno}"
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return f"{self.target}: `{self.command}` -> {what} ({self.ms:.3f} ms) {extra}".rstrip()


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
        out[key] = urllib.parse.unquote(value)
    return out


class Agent:
    """One running agent process. Use as a context manager or call stop()."""

    def __init__(self, name: str, argv: list[str], launcher: list[str] | None = None, env=None):
        self.name = name
        self.argv = argv
        self.transcript: list[tuple[str, str]] = []  # (command, reply line) for the evidence
        self._buf = b""
        self._last = "(start)"
        self._stderr = tempfile.TemporaryFile(prefix="tcc-agent-")
        full = (launcher or []) + argv
        try:
            self.proc = subprocess.Popen(
                full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                env=env, close_fds=True,
            )
        except OSError as e:
            self._stderr.close()
            raise AgentError(name, " ".join(full), f"cannot start: {e}") from None
        self.pid = self.proc.pid
        line = self._readline("(start)", START_DEADLINE)
        words = line.split()
        if not words or words[0] != "ready":
            self._fail("(start)", f"expected a `ready` line, got {line!r}")
        try:
            self.info = parse_fields(words[1:])
        except ValueError as e:
            self._fail("(start)", f"malformed ready line {line!r}: {e}")
        self.transcript.append(("(start)", line))

    @property
    def version(self) -> str:
        return self.info.get("version", "")

    # -- low level -------------------------------------------------------
    def _stderr_tail(self, limit: int = 2000) -> str:
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - limit))
            return self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

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
                code = self.proc.wait()
                self._fail(command, f"agent exited (status {code}) before replying")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        if len(line) > MAX_REPLY:
            self._fail(command, f"reply longer than {MAX_REPLY} bytes (flood)")
        try:
            return line.decode("ascii")
        except UnicodeDecodeError:
            self._fail(command, f"reply is not ASCII: {line[:80]!r}")

    def send(self, command: str, deadline: float | None = None) -> "Pending":
        """Send a command without waiting: the agent may block in it while the case acts."""
        if self.proc.poll() is not None:
            self._fail(command, f"agent is not running (status {self.proc.returncode})")
        self._last = command
        try:
            self.proc.stdin.write(command.encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            code = self.proc.wait()
            self._fail(command, f"agent exited (status {code})")
        return Pending(self, command, DEFAULT_DEADLINE if deadline is None else deadline)

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
        return reply

    def call(self, command: str, deadline: float | None = None, raw: bool = False) -> Reply:
        """Send command and wait for its reply; raw=True returns `proto` replies instead of failing."""
        return self.send(command, deadline).wait(raw)

    # -- operations (targets/PROTOCOL.md) ---------------------------------
    @staticmethod
    def _ms(timeout: float | None) -> str:
        return "none" if timeout is None else str(int(timeout * 1000))

    @staticmethod
    def _deadline(timeout: float | None, deadline: float | None) -> float:
        if deadline is not None:
            return deadline
        return DEFAULT_DEADLINE if timeout is None else timeout + DEADLINE_MARGIN

    def socket(self, kind: str = "tcp", family: str = "v4") -> Reply:
        return self.call(f"socket {kind} {'inet' if family == 'v4' else 'inet6'}")

    def setsockopt(self, h: int, opt: str, *values) -> Reply:
        return self.call(" ".join(["setsockopt", str(h), opt, *map(str, values)]))

    def getsockopt(self, h: int, opt: str) -> Reply:
        return self.call(f"getsockopt {h} {opt}")

    def bind(self, h: int, addr: str, port: int) -> Reply:
        return self.call(f"bind {h} {addr} {port}")

    def listen(self, h: int, backlog="default") -> Reply:
        return self.call(f"listen {h} {backlog}")

    def accept(self, h: int, timeout: float | None = 2.0, deadline=None) -> Reply:
        return self.call(f"accept {h} {self._ms(timeout)}", self._deadline(timeout, deadline))

    def accept_later(self, h: int, timeout: float | None = 2.0) -> "Pending":
        return self.send(f"accept {h} {self._ms(timeout)}", self._deadline(timeout, None))

    def connect(self, h: int, addr: str, port: int, timeout: float | None = 2.0, deadline=None) -> Reply:
        return self.call(f"connect {h} {addr} {port} {self._ms(timeout)}", self._deadline(timeout, deadline))

    def connect_later(self, h: int, addr: str, port: int, timeout: float | None = 2.0) -> "Pending":
        return self.send(f"connect {h} {addr} {port} {self._ms(timeout)}", self._deadline(timeout, None))

    def send_bytes(self, h: int, data: bytes) -> Reply:
        return self.call(f"send {h} {data.hex() or '-'}")

    def recv(self, h: int, size: int = 65536, timeout: float | None = 2.0) -> Reply:
        return self.call(f"recv {h} {size} {self._ms(timeout)}", self._deadline(timeout, None))

    def shutdown(self, h: int, how: str) -> Reply:
        return self.call(f"shutdown {h} {how}")

    def close(self, h: int) -> Reply:
        return self.call(f"close {h}")

    def getsockname(self, h: int) -> Reply:
        return self.call(f"getsockname {h}")

    def getpeername(self, h: int) -> Reply:
        return self.call(f"getpeername {h}")

    # -- lifetime ----------------------------------------------------------
    def kill(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self):
        """Ask the agent to quit, then make sure it is gone; close every pipe and file."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # EOF: the agent exits
                self.proc.wait(timeout=1)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for f in (self.proc.stdout, self.proc.stdin, self._stderr):
            try:
                f.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Pending:
    """A command sent, its reply not read yet."""

    def __init__(self, agent: Agent, command: str, deadline: float):
        self.agent, self.command, self.deadline = agent, command, deadline

    def wait(self, raw: bool = False) -> Reply:
        return self.agent.receive(self.command, self.deadline, raw)
