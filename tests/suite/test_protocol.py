"""Every agent speaks targets/PROTOCOL.md: structured replies, structured protocol errors.

The agents run in a fresh namespace of their own (net fixture); the sockets
here only talk over the namespace's loopback.
"""

import re
import sys
import time

import pytest

from conformance import protocol
from conformance.agent import Agent, AgentError, parse_reply
from conformance.timing import slack

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
    t = agent.recv(c, 100, 0.1)  # nothing to read (before any FIN, which a runtime may answer with its own)
    assert (t.status, t.errno) == ("err", "timeout"), "an operation's own timeout must be reported as `timeout`"
    agent.shutdown(c, "wr").check()
    assert agent.recv(a.h, 100, 2.0).eof
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
    for bad in [
        "",
        "maybe 1",
        "ok",
        "ok x",
        "ok 1 novalue",
        "ok -5",
        "err ECONNREFUSED",
        "err 111 5",
        "ok 1 h=one",
        "ok 1 data=zz",
    ]:
        with pytest.raises((ValueError, IndexError)):
            parse_reply("t", "c", bad)


def test_unsupported_and_failed_steps_say_what_was_expected():
    from conformance.agent import StepFailed, Unsupported

    with pytest.raises(Unsupported, match="go: `setsockopt 1 nonblock 1` is unsupported: no non-blocking"):
        parse_reply("go", "setsockopt 1 nonblock 1", "unsupported 1 msg=no%20non-blocking").check()
    with pytest.raises(
        StepFailed,
        match=r"`listen 1 4` \(listen before the clients connect\) must succeed on c: "
        r"expected ok, got EADDRINUSE after 0.012 ms",
    ):
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
    for opt, value in (
        ("reuseaddr", (1,)),
        ("linger", (1, 0)),
        ("syncnt", (2,)),
        ("user_timeout", (1000,)),
        ("nonblock", (1,)),
    ):
        assert set(protocol.OPTIONS) >= {opt}
        do("setsockopt", scratch, opt, *value)
        assert do("getsockopt", scratch, opt).status in ("ok", "err", "unsupported")
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


def documented_commands(text: str, start: str, end: str) -> dict[str, tuple[list[str], str]]:
    """The rows of PROTOCOL.md's table between `start` and `end`: {command: (its arguments, its reply
    fields cell)}; an escaped `\\|` inside a cell is a literal bar."""
    documented = {}
    for line in text[text.index(start) : text.index(end)].splitlines():
        if line.startswith("| `"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            words = cells[0].strip("`").split()
            documented[words[0]] = (words[1:], cells[2])
    return documented


def test_protocol_md_lists_the_command_table():
    """targets/PROTOCOL.md's command table and conformance/protocol.py's COMMANDS say the same."""
    text = (ROOT / "targets" / "PROTOCOL.md").read_text()
    documented = documented_commands(text, "## Commands", "Options for")
    assert set(documented) == set(protocol.COMMANDS), "PROTOCOL.md's command table differs from protocol.COMMANDS"
    for name, cmd in protocol.COMMANDS.items():
        args, fields = documented[name]
        assert len(args) == len(cmd.args) - ("VALUE..." in cmd.args) + ("VALUE..." in args), (
            f"{name}: PROTOCOL.md shows {args}, the table {cmd.usage()}"
        )
        for f in cmd.reply:
            assert f"{f}=" in fields, f"{name}: PROTOCOL.md's reply fields lack {f}="
    for code in protocol.ERROR_CODES:
        assert f"`{code}`" in text


def test_protocol_md_lists_the_introspection_table():
    """PROTOCOL.md's optional introspection table and protocol.INTROSPECTION say the same."""
    text = (ROOT / "targets" / "PROTOCOL.md").read_text()
    documented = documented_commands(text, "## Introspection (optional)", "`ROW` is")
    assert set(documented) == set(protocol.INTROSPECTION), "PROTOCOL.md's introspection table differs"
    assert not set(protocol.INTROSPECTION) & set(protocol.COMMANDS)
    for name, cmd in protocol.INTROSPECTION.items():
        args, fields = documented[name]
        assert args == list(cmd.args), f"{name}: PROTOCOL.md shows {args}, the table {cmd.usage()}"
        for f in cmd.reply:
            assert f"{f}=" in fields, f"{name}: PROTOCOL.md's reply fields lack {f}="


def test_introspection_of_an_agent_that_says_so(net, agent, family):
    """An agent whose ready line says introspect=1 answers every introspection command with the
    table's fields, on stdin as on its state channel; the others need not (PROTOCOL.md)."""
    if agent.info.get("introspect") != "1":
        pytest.skip(f"{agent.name}: its sockets are the kernel's (no introspect=1)")
    ls = agent.listener(net.target.addr(family), 5014)
    for name, cmd in protocol.INTROSPECTION.items():
        line = " ".join([name, *([net.peer.addr(family)] if cmd.args else [])])
        reply = agent.call(line)
        assert reply.ok and all(f in reply.fields for f in cmd.reply), reply
    rows = net.target.stack.rows()
    assert ("tcp", "LISTEN", net.target.addr(family), "5014") in [r[:4] for r in rows], rows
    assert net.target.stack.neighbour_state(net.peer.addr(family)) == "PERMANENT"
    agent.close(ls).check()


@pytest.mark.parametrize(
    "ready,reason",
    [
        ("ready proto=2 lang=fake version=1 pid=1", "the ready line says proto=2; this harness speaks proto=1 only"),
        ("ready lang=fake version=1 pid=1", "the ready line says proto=(missing)"),
        ("hello", "expected a `ready` line"),
    ],
)
def test_agent_with_another_protocol_is_refused_at_start(tmp_path, ready, reason):
    script = tmp_path / "agent.py"
    script.write_text(f"import sys, time\nprint({ready!r}, flush=True)\ntime.sleep(30)\n")
    with pytest.raises(AgentError, match=re.escape(reason)):
        Agent("other", [sys.executable, str(script)], deadline=5)


# -- Rules of targets/PROTOCOL.md that agents written from it alone had to guess (issue 11, hc). --

AT_ONCE_MS = 500  # ms (through slack): a call that must not wait took less than this

PRECEDENCE = [
    # command (handle 1 exists, a fresh TCP socket), the proto code that wins, why
    ("bogus 1 2 3 4 5 6 7 8 9 10", "badop", "unknown command with too many arguments: badop"),
    ("bogus", "badop", "unknown command with no arguments: badop"),
    ("close", "badline", "too few arguments"),
    ("close 999 extra", "badline", "the argument count before the handle"),
    ("close x extra", "badline", "the argument count before the handle's syntax"),
    ("close -1", "badarg", "a handle that is not a number > 0 does not parse"),
    ("close 0", "badhandle", "a number that names no handle"),
    ("bind 999 not-an-address 80", "badhandle", "H comes first: a bad handle before a bad address"),
    ("send 999 zz", "badhandle", "H comes first: a bad handle before bad hex"),
    ("recv 999 0 0", "badhandle", "H comes first: a bad handle before a bad MAX and MS"),
    ("setsockopt 999 nosuchopt 1", "badhandle", "H comes first: a bad handle before an unknown option"),
    ("setsockopt 999 linger 1", "badhandle", "H comes first: a bad handle before a wrong value count"),
    ("setsockopt 1 nosuchopt", "badarg", "an unknown option"),
    ("setsockopt 1 nosuchopt 1 2 3", "badarg", "an unknown option, whatever its values"),
    ("setsockopt 1 linger 1", "badline", "linger takes two values"),
    ("setsockopt 1 linger x", "badline", "the value count before the values"),
    ("setsockopt 1 linger 1 x", "badarg", "the right count, a value that does not parse"),
    ("setsockopt 1 reuseaddr x", "badarg", "a value that does not parse"),
    ("setsockopt 1 nonblock x", "badarg", "proto wins over unsupported (Go has no nonblock)"),
    ("getsockopt 999 nosuchopt", "badhandle", "H comes first"),
    ("accept 1 0", "badarg", "proto wins over err: MS 0 before EINVAL of a socket that does not listen"),
    ("recv 1 0 100", "badarg", "MAX 0 is badarg, not a receive that looks like end of file"),
    ("recv 1 1048577 100", "badarg", "MAX above 1048576"),
    ("setsockopt 1 user_timeout none", "badarg", "user_timeout takes a number of ms, 0 for the default"),
    ("bogüs 1", "badline", "not ASCII before an unknown command"),
    ("bogus " + "1" * 5000, "badline", "too long before an unknown command"),
]


@pytest.mark.parametrize("command,code,why", PRECEDENCE, ids=[f"{i}-{c}" for i, (_, c, _) in enumerate(PRECEDENCE)])
def test_which_proto_code_wins(net, agent, command, code, why):
    """A line with several problems gets the code of the first check that fails (PROTOCOL.md, `proto`):
    the line, then the command word, then the argument count, then the arguments left to right."""
    assert agent.socket("tcp", "v4").h == 1
    agent.proc.stdin.write(command.encode() + b"\n")
    agent.proc.stdin.flush()
    reply = agent.receive(command, 5, raw=True)
    assert (reply.status, reply.errno) == ("proto", code), f"{command[:40]!r} ({why}) -> {reply}"
    assert agent.getsockname(1).status in ("ok", "unsupported"), "the agent must go on after a proto reply"


def loopback_pair(agent, family, port):
    """A listener, a client connected to it and the accepted socket, on the namespace's loopback."""
    lo = "127.0.0.1" if family == "v4" else "::1"
    ls = agent.listener(lo, port)
    c = agent.socket("tcp", family).h
    agent.connect(c, lo, port, 2.0).check("connect on loopback")
    a = agent.accept(ls, 2.0).check("accept on loopback").h
    return ls, c, a


def test_line_limit_does_not_count_the_newline(net, agent):
    """A command line of 4096 bytes (protocol.MAX_LINE, its newline not counted) is executed; 4097 is badline."""
    _, c, a = loopback_pair(agent, "v4", 5010)
    data = bytes(range(256)) * 7 + bytes(208)  # 2000 bytes, 4000 hex digits
    head = f" {c} {data.hex()}"
    line = "send" + " " * (protocol.MAX_LINE - 4 - len(head)) + head  # runs of spaces pad it to the limit
    assert len(line) == protocol.MAX_LINE
    r = agent.call(line, raw=True)
    assert (r.status, r.get("n")) == ("ok", len(data)), f"a {len(line)}-byte line must be executed: {r}"
    assert agent.recv_exactly(a, len(data)) == data
    long = "send " + line[4:]
    assert len(long) == protocol.MAX_LINE + 1
    r = agent.call(long, raw=True)
    assert (r.status, r.errno) == ("proto", "badline"), f"a {len(long)}-byte line must be badline: {r}"
    t = agent.recv(a, 100, 0.2)
    assert t.errno == "timeout", f"nothing of the too long line may be sent: {t}"
    assert agent.getsockname(c).ok, "the agent must go on after a too long line"


def test_nonblocking_wins_over_a_call_timeout(net, agent):
    """On a non-blocking socket a call with MS 2000 fails at once (EAGAIN, EINPROGRESS), and the
    socket stays non-blocking after it."""
    ls = agent.listener("127.0.0.1", 5011)
    agent.setsockopt(ls, "nonblock", 1).check("make the listener non-blocking")  # Go: unsupported, skipped
    r = agent.accept(ls, 2.0)
    assert r.errno in ("EAGAIN", "EWOULDBLOCK") and r.ms < slack(AT_ONCE_MS), (
        f"accept with MS 2000 on a non-blocking listener must fail at once with EAGAIN: {r}"
    )
    assert agent.getsockopt(ls, "nonblock").value == "1", "the listener must stay non-blocking after the call"
    c = agent.socket("tcp", "v4").h
    agent.setsockopt(c, "nonblock", 1).check("make the client non-blocking")
    r = agent.connect(c, "127.0.0.1", 5011, 2.0)
    assert r.errno == "EINPROGRESS" and r.ms < slack(AT_ONCE_MS), (
        f"connect with MS 2000 on a non-blocking socket must fail at once with EINPROGRESS: {r}"
    )
    assert net.target.wait_state("ESTABLISHED", dport=5011), "the non-blocking connect did not complete"
    a = agent.accept(ls, 2.0).check("accept the queued connection on the non-blocking listener")
    assert agent.getsockopt(a.h, "nonblock").value == "0", "a socket from accept starts blocking"
    r = agent.recv(c, 100, 2.0)
    assert r.errno in ("EAGAIN", "EWOULDBLOCK") and r.ms < slack(AT_ONCE_MS), (
        f"recv with MS 2000 on a non-blocking socket must fail at once with EAGAIN: {r}"
    )
    assert agent.getsockopt(c, "nonblock").value == "1"


@pytest.mark.parametrize("second", [None, 2.0], ids=["none", "2000"])
def test_a_call_timeout_does_not_carry_over(net, agent, family, second):
    """MS applies to its own call only: after a recv (an accept) that timed out at 100 ms, a recv
    (an accept) with none or 2000 on the same handle waits for what comes 300 ms later."""
    lo = "127.0.0.1" if family == "v4" else "::1"
    host = net.target
    if net.target.stack is not None:  # a userspace stack's loopback is its own: come from the peer
        lo, host = net.target.addr(family), net.peer
    ls = agent.listener(lo, 5012)
    t = agent.accept(ls, 0.1)
    assert t.errno == "timeout", f"accept with MS 100 on an empty queue must time out: {t}"
    pending = agent.do("accept", ls, timeout=second, later=True)
    time.sleep(0.3)
    peer = host.socket(family)
    try:
        peer.settimeout(2.0)
        peer.connect((lo, 5012))
        a = pending.wait()
        assert a.ok and a.ms >= 250, f"accept after a timed-out accept must wait for the connection: {a}"
        t = agent.recv(a.h, 100, 0.1)
        assert t.errno == "timeout", f"recv with MS 100 and nothing to read must time out: {t}"
        pending = agent.do("recv", a.h, 100, timeout=second, later=True)
        time.sleep(0.3)
        peer.sendall(b"late")
        r = pending.wait()
        assert r.ok and r.data == b"late" and r.ms >= 250, (
            f"recv after a timed-out recv must wait for the data sent 300 ms later: {r}"
        )
    finally:
        peer.close()


def test_getsockopt_nonblock_is_0_or_1(net, agent):
    """getsockopt H nonblock answers value=0 or value=1: the mode the harness set, which a call with
    its own timeout does not change."""
    ls = agent.listener("127.0.0.1", 5013)
    r = agent.getsockopt(ls, "nonblock")
    assert r.check().value == "0", f"a new socket is blocking: {r}"  # Go: unsupported, skipped
    assert agent.accept(ls, 0.1).errno == "timeout"
    assert agent.getsockopt(ls, "nonblock").value == "0", "a timed call must leave the socket blocking"
    agent.setsockopt(ls, "nonblock", 1).check()
    assert agent.getsockopt(ls, "nonblock").value == "1"
    agent.setsockopt(ls, "nonblock", 0).check()
    assert agent.getsockopt(ls, "nonblock").value == "0"


def test_user_timeout_zero_is_the_default(net, agent):
    """user_timeout takes milliseconds as TCP_USER_TIMEOUT does: 0 is the kernel's default (no user
    timeout), not badarg; `none` is badarg."""
    _, c, _ = loopback_pair(agent, "v4", 5014)
    assert agent.getsockopt(c, "user_timeout").check().value == "0", "the kernel's default is 0"
    agent.setsockopt(c, "user_timeout", 1500).check()
    assert agent.getsockopt(c, "user_timeout").value == "1500"
    agent.setsockopt(c, "user_timeout", 0).check("user_timeout 0: back to the kernel's default")
    assert agent.getsockopt(c, "user_timeout").value == "0"
    r = agent.call(f"setsockopt {c} user_timeout none", raw=True)
    assert (r.status, r.errno) == ("proto", "badarg"), r


def test_recv_max_0_is_badarg(net, agent, family):
    """recv H 0 is badarg (a receive of at most 0 bytes would look like end of file), even with data waiting."""
    _, c, a = loopback_pair(agent, family, 5015)
    assert agent.send(c, b"data").n == 4
    r = agent.call(f"recv {a} 0 100", raw=True)
    assert (r.status, r.errno) == ("proto", "badarg"), f"recv of 0 bytes must be badarg: {r}"
    assert agent.recv_exactly(a, 4) == b"data", "the data must still be there"


def test_ipv4_mapped_address_form(net, agent):
    """A dual-stack inet6 listener on :: that accepts an IPv4 client reports the peer as ::ffff:127.0.0.1."""
    ls = agent.listener("::", 5016)
    c = agent.socket("tcp", "v4").h
    r = agent.connect(c, "127.0.0.1", 5016, 2.0)
    if r.errno == "ECONNREFUSED":
        pytest.skip(f"{agent.name}: an inet6 listener on :: is IPv6-only (no IPv4-mapped address to report)")
    r.check("connect an IPv4 client to the inet6 listener on ::")
    a = agent.accept(ls, 2.0).check()
    assert a["addr"] == "::ffff:127.0.0.1", f"the IPv4-mapped peer must be written ::ffff:127.0.0.1: {a}"
    assert a.port == agent.getsockname(c).port
    assert agent.getsockname(a.h).endpoint == ("::ffff:127.0.0.1", 5016)
    assert agent.getpeername(a.h)["addr"] == "::ffff:127.0.0.1"


def test_reply_fields_in_any_order_unknown_ignored():
    """Reply fields come in any order and a field the harness does not know is kept, not an error."""
    r = parse_reply("t", "accept 1 2000", "ok 3 port=80 x-extra=1 addr=2001:db8::2 h=2 msg=fine")
    assert (r.h, r.endpoint, r.msg, r["x-extra"]) == (2, ("2001:db8::2", 80), "fine", "1")
    r = parse_reply("t", "recv 1 10 none", "ok 3 data=6869 future=yes n=2")
    assert (r.n, r.data, r.eof) == (2, b"hi", False)
    r = parse_reply("t", "connect 1 ::1 9 none", "err ECONNREFUSED 7 msg=refused extra=1")
    assert (r.outcome, r.msg) == ("ECONNREFUSED", "refused")


def test_check_target_reports_what_an_outside_agent_gets_wrong(tmp_path):
    """`python -m conformance check-target -- COMMAND` runs these self-tests on any agent, line by line."""
    import subprocess

    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "check-target",
            "--",
            sys.executable,
            "-I",
            "-S",
            str(ROOT / "targets" / "python" / "agent.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    assert "ok   test_every_command_of_the_table[v4-checked]" in good.stdout
    assert good.stdout.strip().splitlines()[-1].endswith("the agent speaks targets/PROTOCOL.md")
    bad = tmp_path / "agent.py"  # answers every command with a numeric errno
    bad.write_text(
        "import sys\nprint('ready proto=1 lang=bad version=1 pid=1', flush=True)\n"
        "for line in sys.stdin:\n    print('err 111 5', flush=True)\n"
    )
    wrong = subprocess.run(
        [sys.executable, "-m", "conformance", "check-target", "--", sys.executable, str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "FAIL test_errno_names_and_elapsed[checked]" in wrong.stdout and "is not an errno name" in wrong.stdout
