"""Every agent speaks targets/PROTOCOL.md: structured replies, structured protocol errors.

The agents run in a fresh namespace of their own (net fixture); the sockets
here only talk over the namespace's loopback.
"""
import pytest

from conformance.agent import parse_reply

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
    agent.socket("tcp", "v4").h  # handle 1 exists, so only the bad part is wrong
    reply = agent.call(command, raw=True)
    assert (reply.status, reply.errno) == ("proto", code), f"{command[:40]!r} -> {reply}"
    # The agent goes on: the next command works.
    assert agent.getsockname(1).status in ("ok", "unsupported")


def test_non_ascii_line(net, agent):
    agent.proc.stdin.write("socket tcp inét\n".encode("utf-8"))
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
    assert agent.send_bytes(c, b"hello").check()["n"] == "5"
    assert agent.recv(a.h, 100, 2.0).check()["data"] == b"hello".hex()
    assert agent.getpeername(a.h).check()["port"] == agent.getsockname(c).check()["port"]
    agent.shutdown(c, "wr").check()
    assert agent.recv(a.h, 100, 2.0).check()["n"] == "0"
    t = agent.recv(c, 100, 0.1)
    assert (t.status, t.errno) == ("err", "timeout"), "an operation's own timeout must be reported as `timeout`"
    assert agent.close(a.h).ok and agent.close(c).ok and agent.close(ls).ok
    assert agent.call("quit").ok
    assert agent.proc.wait(timeout=5) == 0


def test_parse_reply():
    r = parse_reply("t", "c", "err ECONNREFUSED 61 msg=connection%20refused")
    assert (r.status, r.errno, r.us, r.msg) == ("err", "ECONNREFUSED", 61, "connection refused")
    r = parse_reply("t", "c", "ok 3 h=2 addr=2001:db8::2 port=80")
    assert r.h == 2 and r["addr"] == "2001:db8::2"
    assert parse_reply("t", "c", "proto badop msg=x").errno == "badop"
    for bad in ["", "maybe 1", "ok", "ok x", "ok 1 novalue", "ok -5", "err ECONNREFUSED"]:
        with pytest.raises((ValueError, IndexError)):
            parse_reply("t", "c", bad)
