"""Every agent speaks targets/PROTOCOL.md: structured replies, structured protocol errors.

The agents run in a fresh namespace of their own (net fixture); the sockets
here only talk over the namespace's loopback.
"""
import re
import sys

import pytest

from conformance import protocol
from conformance.agent import Agent, AgentError, parse_reply

from .helpers import ROOT

BAD = [
    # command, expected proto code
    ("bogus 1 2", "badop"),
    ("", "badline"),
    ("socket tcp", "badline"),
    ("socket sctp inet", "badarg"),
    ("socket tcp appletalk", "badarg"),
    ("close 999", "badhandle"),
    ("accept 42 10", "badhandle"),
    ("close x", "badarg"),
    ("setsockopt 1 nosuchopt 1", "badarg"),
    ("bind 1 not-an-address 80", "badarg"),
    ("bind 1 127.0.0.1 70000", "badarg"),
    ("send 1 zz", "badarg"),
    ("accept 1 0", "badarg"),
    ("x" * 5000, "badline"),
]


def test_ready_line(net, agent):
    assert agent.info.get("proto") == "1"
    assert agent.info.get("lang")
    assert agent.version, "the ready line must carry the runtime version"
    assert int(agent.info["pid"]) > 0


@pytest.mark.parametrize("command,code", BAD, ids=[c for _, c in BAD])
def test_protocol_error(net, agent, command, code):
    assert agent.socket("tcp", "v4").h == 1  # handle 1 exists, so only the bad part is wrong
    reply = agent.call(command, raw=True)
    assert (reply.status, reply.errno) == ("proto", code), f"{command[:40]!r} -> {reply}"
    # The agent goes on: the next command works.
    assert agent.getsockname(1).status in ("ok", "unsupported")


def test_non_ascii_line(net, agent):
    agent.proc.stdin.write("socket tcp inét\n".encode())
    agent.proc.stdin.flush()
    reply = agent.receive("socket tcp inét", 5, raw=True)
    assert (reply.status, reply.errno) == ("proto", "badline")


def test_errno_names_and_elapsed(net, agent):
    """An API error comes back as the symbolic errno name with the elapsed time."""
    s = agent.socket("tcp", "v4").h
    r = agent.connect(s, "127.0.0.1", 9, 2.0)
    assert (r.status, r.errno) == ("err", "ECONNREFUSED")
    assert r.us >= 0


def test_round_trip_on_loopback(net, agent, family):
    lo = "127.0.0.1" if family == "v4" else "::1"
    ls = agent.socket("tcp", family).h
    agent.bind(ls, lo, 5000).check()
    agent.listen(ls, 4).check()
    c = agent.socket("tcp", family).h
    agent.connect(c, lo, 5000, 2.0).check()
    a = agent.accept(ls, 2.0).check()
    assert a["addr"] == lo
    assert agent.send(c, b"hello").n == 5
    assert agent.recv(a.h, 100, 2.0).data == b"hello"
    assert agent.getpeername(a.h).port == agent.getsockname(c).port
    agent.shutdown(c, "wr").check()
    assert agent.recv(a.h, 100, 2.0).eof
    t = agent.recv(c, 100, 0.1)
    assert (t.status, t.errno) == ("err", "timeout"), "an operation's own timeout must be reported as `timeout`"
    assert agent.close(a.h).ok and agent.close(c).ok and agent.close(ls).ok
    assert agent.call("quit").ok
    assert agent.proc.wait(timeout=5) == 0


def test_parse_reply():
    r = parse_reply("t", "c", "err ECONNREFUSED 61 msg=connection%20refused")
    assert (r.status, r.errno, r.us, r.msg) == ("err", "ECONNREFUSED", 61, "connection refused")
    r = parse_reply("t", "c", "ok 3 h=2 addr=2001:db8::2 port=80")
    assert r.h == 2 and r["addr"] == "2001:db8::2" and r.endpoint == ("2001:db8::2", 80)
    r = parse_reply("t", "c", "ok 3 n=5 data=68656c6c6f")
    assert (r.n, r.data, r.eof) == (5, b"hello", False)
    assert parse_reply("t", "c", "ok 1 n=0 data=-").eof
    assert parse_reply("t", "c", "proto badop msg=x").errno == "badop"
    for bad in ["", "maybe 1", "ok", "ok x", "ok 1 novalue", "ok -5", "err ECONNREFUSED", "err 111 5",
                "ok 1 h=one", "ok 1 data=zz"]:
        with pytest.raises((ValueError, IndexError)):
            parse_reply("t", "c", bad)


def test_unsupported_and_failed_steps_say_what_was_expected():
    from conformance.agent import StepFailed, Unsupported

    with pytest.raises(Unsupported, match="go: `setsockopt 1 nonblock 1` is unsupported: no non-blocking"):
        parse_reply("go", "setsockopt 1 nonblock 1", "unsupported 1 msg=no%20non-blocking").check()
    with pytest.raises(StepFailed, match=r"`listen 1 4` \(listen before the clients connect\) must succeed on c: "
                                         r"expected ok, got EADDRINUSE after 0.012 ms"):
        parse_reply("c", "listen 1 4", "err EADDRINUSE 12").check("listen before the clients connect")


def test_every_command_of_the_table(net, agent, family):
    """Every command of the protocol's table (conformance/protocol.py), sent to every agent on loopback:
    each is understood (no `proto` reply) and each ok reply carries the table's fields."""
    lo = "127.0.0.1" if family == "v4" else "::1"
    sent = set()

    def do(name, *args, **kw):
        sent.add(name)
        reply = agent.do(name, *args, **kw)  # a proto reply, or an ok lacking a field, is an AgentError
        assert reply.status in ("ok", "err", "unsupported"), reply
        return reply

    scratch = do("socket", "tcp", family).h
    for opt, value in (("reuseaddr", (1,)), ("linger", (1, 0)), ("syncnt", (2,)), ("user_timeout", (1000,)),
                       ("nonblock", (1,))):
        assert set(protocol.OPTIONS) >= {opt}
        if do("setsockopt", scratch, opt, *value).status == "ok":
            assert do("getsockopt", scratch, opt).status in ("ok", "unsupported")
    ls = do("socket", "tcp", family).h
    do("bind", ls, lo, 5001).check()
    do("listen", ls, 4).check()
    c = do("socket", "tcp", family).h
    do("connect", c, lo, 5001, timeout=2.0).check()
    a = do("accept", ls, timeout=2.0)
    assert a.endpoint == (lo, do("getsockname", c).port)
    assert do("getpeername", a.h).endpoint == do("getsockname", c).endpoint
    assert do("send", c, b"table").n == 5
    assert do("recv", a.h, 100, timeout=2.0).data == b"table"
    do("shutdown", c, "wr").check()
    for h in (a.h, c, ls, scratch):
        do("close", h).check()
    do("quit").check()
    assert sent == set(protocol.COMMANDS), f"commands of the table not exercised: {set(protocol.COMMANDS) - sent}"
    assert agent.proc.wait(timeout=5) == 0


def test_protocol_md_lists_the_command_table():
    """targets/PROTOCOL.md's command table and conformance/protocol.py's COMMANDS say the same."""
    text = (ROOT / "targets" / "PROTOCOL.md").read_text()
    table = text[text.index("## Commands"):text.index("Options for")]
    documented = {}
    for line in table.splitlines():
        if line.startswith("| `"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            words = cells[0].strip("`").split()
            documented[words[0]] = (words[1:], cells[2])
    assert set(documented) == set(protocol.COMMANDS), "PROTOCOL.md's command table differs from protocol.COMMANDS"
    for name, cmd in protocol.COMMANDS.items():
        args, fields = documented[name]
        assert len(args) == len(cmd.args) - ("VALUE..." in cmd.args) + ("VALUE..." in args), \
            f"{name}: PROTOCOL.md shows {args}, the table {cmd.usage()}"
        for f in cmd.reply:
            assert f"{f}=" in fields, f"{name}: PROTOCOL.md's reply fields lack {f}="
    for code in protocol.ERROR_CODES:
        assert f"`{code}`" in text


@pytest.mark.parametrize("ready,reason", [
    ("ready proto=2 lang=fake version=1 pid=1", "the ready line says proto=2; this harness speaks proto=1 only"),
    ("ready lang=fake version=1 pid=1", "the ready line says proto=(missing)"),
    ("hello", "expected a `ready` line"),
])
def test_agent_with_another_protocol_is_refused_at_start(tmp_path, ready, reason):
    script = tmp_path / "agent.py"
    script.write_text(f"import sys, time\nprint({ready!r}, flush=True)\ntime.sleep(30)\n")
    with pytest.raises(AgentError, match=re.escape(reason)):
        Agent("other", [sys.executable, str(script)], deadline=5)
