"""The agent protocol's command table (targets/PROTOCOL.md), machine-readable.

One place says what every command takes and what its `ok` reply carries: the
agent driver (conformance.agent) formats commands and types reply fields from
it, and the protocol self-tests send every command in it to every agent.
PROTOCOL.md's command table is checked against it by a test.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

VERSION = "1"
ERROR_CODES = ("badline", "badop", "badhandle", "badarg")  # `proto CODE` replies
STATUSES = ("ok", "err", "unsupported", "proto")
MAX_LINE = 4096  # bytes of a command line, the newline not counted


def hex_bytes(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


# Reply fields whose type the protocol defines; the others stay text.
FIELD_TYPES = {"h": int, "n": int, "port": int, "deferred": int, "pid": int, "data": hex_bytes}


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...]  # argument kinds, see ARG_KINDS
    reply: tuple[str, ...]  # fields of the `ok` reply
    does: str

    def usage(self) -> str:
        return " ".join([self.name, *self.args])


# Argument kinds, as PROTOCOL.md names them.
ARG_KINDS = {
    "H": "a socket handle, a decimal integer > 0",
    "KIND": "tcp or udp",
    "FAMILY": "inet or inet6",
    "ADDR": "a numeric IPv4 or IPv6 address",
    "PORT": "decimal 0-65535",
    "MS": "milliseconds >= 1, or none",
    "HEX": "bytes in hexadecimal, - for none",
    "BACKLOG": "a number, or default",
    "MAX": "a byte count, 1 to 1048576 (0 is badarg: it would read as end of file)",
    "HOW": "rd, wr or rdwr",
    "OPT": "an option name, see OPTIONS",
    "VALUE...": "the option's value(s)",
}

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("socket", ("KIND", "FAMILY"), ("h",), "create a socket"),
        Command("setsockopt", ("H", "OPT", "VALUE..."), (), "set an option"),
        Command("getsockopt", ("H", "OPT"), ("value",), "read an option"),
        Command("bind", ("H", "ADDR", "PORT"), (), "bind (a deferred bind answers deferred=1)"),
        Command("listen", ("H", "BACKLOG"), (), "listen"),
        Command("accept", ("H", "MS"), ("h", "addr", "port"), "accept one connection (the peer's address)"),
        Command("connect", ("H", "ADDR", "PORT", "MS"), (), "connect"),
        Command("send", ("H", "HEX"), ("n",), "send the bytes once"),
        Command("recv", ("H", "MAX", "MS"), ("n", "data"), "one receive of at most MAX bytes"),
        Command("shutdown", ("H", "HOW"), (), "shutdown"),
        Command("close", ("H",), (), "close; the handle is gone"),
        Command("getsockname", ("H",), ("addr", "port"), "local address"),
        Command("getpeername", ("H",), ("addr", "port"), "remote address"),
        Command("quit", (), (), "reply, then exit 0"),
    )
}

# The optional introspection commands (PROTOCOL.md, "Introspection"): a userspace stack's own tables,
# sent only to an agent whose ready line says introspect=1 (conformance/stack.py asks them).
INTROSPECTION: dict[str, Command] = {
    c.name: c
    for c in (
        Command("sockets", (), ("n", "rows"), "list the stack's sockets"),
        Command("counters", (), (), "report the stack's counters"),
        Command("neighbour", ("ADDR",), ("state",), "the stack's neighbour entry for ADDR"),
    )
}

# setsockopt/getsockopt options: the values they take.
OPTIONS = {
    "reuseaddr": "0|1",
    "linger": "ONOFF SECONDS",
    "syncnt": "N",
    "user_timeout": "N",  # TCP_USER_TIMEOUT in ms as is: 0 is the kernel's default; not an MS (none is badarg)
    "nonblock": "0|1",
}


def ms(timeout: float | None) -> str:
    """A timeout in seconds as the protocol's MS: whole milliseconds (at least 1), or none."""
    return "none" if timeout is None else str(max(1, round(timeout * 1000)))


def family_word(family: str) -> str:
    """v4/v6 (or an address) -> the protocol's FAMILY."""
    if family in ("v4", "v6"):
        return "inet" if family == "v4" else "inet6"
    return "inet" if ipaddress.ip_address(family).version == 4 else "inet6"


def format_arg(kind: str, value) -> str:
    if kind == "HEX":
        return bytes(value).hex() or "-"
    if kind == "MS":
        return ms(value)
    if kind == "FAMILY":
        return family_word(value)
    return str(value)


def command_line(name: str, *values) -> str:
    """The command line for name with values in the table's order (VALUE... takes the rest)."""
    cmd = COMMANDS[name]
    words = [name]
    for i, kind in enumerate(cmd.args):
        if kind == "VALUE...":
            words += [str(v) for v in values[i:]]
            break
        if i >= len(values):
            raise TypeError(f"{name}: missing {kind} (usage: {cmd.usage()})")
        words.append(format_arg(kind, values[i]))
    else:
        if len(values) > len(cmd.args):
            raise TypeError(f"{name}: too many arguments (usage: {cmd.usage()})")
    return " ".join(words)


def typed(key: str, text: str):
    """A reply field's value in the type the protocol gives it (ValueError when it does not parse)."""
    convert = FIELD_TYPES.get(key)
    return convert(text) if convert else text
