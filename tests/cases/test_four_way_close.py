"""The four-way close: FIN and ACK each way, and the states each side passes through.

Seed 003 (docs/seeds.md), TCP 四次挥手: "客户端A向服务器发送FIN ... 服务器B接受到这个FIN 它发回一个
ACK确认报文 确认序列号+1 (客户端处于FIN_WAIT2) ... 服务器B关闭客户端A的连接发送一个FIN报文 ... 客户端A
接受到server的FIN报文 回复ACK报文确认 此时客户端进入TIME_WAT" and "FIN报文 告诉自己 对方没有数据进行
发送 并不能阻止自己发送数据": the active closer goes FIN_WAIT_1 (its FIN not yet acked),
FIN_WAIT_2, TIME_WAIT; the passive side CLOSE_WAIT (its recv() returns 0, end of file), then
LAST_ACK (its own FIN not yet acked) and closed. A FIN closes one direction only: after
shutdown(SHUT_WR) the other side reads end of file and can still send data that the
half-closed side reads.

FIN_WAIT_1 and LAST_ACK last one round trip (microseconds on a veth). To make them
observable, the ACK that ends them is held back for a bounded time, and nothing is dropped:
the acking side's egress is a tbf qdisc (this kernel has tbf, no netem) with filler frames
queued just before, so its next packet, the ACK, leaves about HOLD seconds later
(conformance/shaping.py). So that the side waiting for that ACK does not retransmit its
FIN meanwhile, both namespaces raise the minimum retransmission timeout to 3 s for these cases:
the route metric rto_min on the link's routes (`ip route change ... rto_min 3s`), which every
kernel the suite meets has (the sysctl net.ipv4.tcp_rto_min_us exists from 6.11 only), read back
from the routes and from each end's socket (tcp_info's rto, as `ss -i` shows it) before judging.
"""

import socket
import time

import pytest

from conformance import shaping
from conformance.capture import tcp
from conformance.case import assert_fin, peer_recv_outcome, shut_down

HOLD = 0.8  # s: how long the ACK ending FIN_WAIT1 / LAST_ACK is held back (long enough to be seen on a loaded machine)
STATE_WAIT = 3.0  # bound on waiting out a held ACK
RTO_MIN = 3.0  # s: no retransmission during a hold (see prepare_holds)


def prepare_holds(net):
    """tbf on both veth ends, and a minimum retransmission timeout of 3 s (the route metric) in both namespaces.

    While an ACK is held, the side waiting for it would otherwise retransmit its FIN
    after 200 ms; the duplicate ACK that answers it reaches a socket that is already
    gone, which answers with an RST, and that RST kills the other side's TIME_WAIT
    (RFC 1337 assassination, net.ipv4.tcp_rfc1337=0). Applies to sockets made after this.
    """
    for host in (net.target, net.peer):
        host.set_rto_min(RTO_MIN)  # raises unless the kernel reads the metric back on both routes
        shaping.install(host)


def assert_rto_min(c, record):
    """Both ends of the connection run with the raised minimum RTO: no FIN is retransmitted during a hold."""
    for end in (c.target, c.peer):
        rto = end.host.rto_ms(**end.match)
        record(f"{end.role}_rto_ms", rto)
        assert rto is not None and rto >= RTO_MIN * 1000, (
            f"the {end.role}'s socket has an RTO of {rto} ms, under the {RTO_MIN * 1000:.0f} ms the route asks for"
        )


def no_drops(net):
    for host in (net.target, net.peer):
        drops = shaping.stats(host).get("drops", 0)
        assert drops == 0, f"the tbf on the {host.role}'s egress dropped {drops} packet(s): a hold must only delay"


# -- one end of a connection, target or peer: the same step either way ----------------------
def recv_outcome(c, role) -> str:
    """recv() on that end: "EOF" (it returned 0), "read b'...'", or the errno name it failed with."""
    if role == "peer":
        got = peer_recv_outcome(c.sock)
        return "EOF" if got == "read b''" else got
    r = c.agent.recv(c.handle, 1024)
    if r.eof:
        return "EOF"
    return f"read {r.data!r}" if r.ok else r.outcome


def send(c, role, data: bytes) -> None:
    if role == "peer":
        c.sock.sendall(data)
        return
    sent = c.agent.send(c.handle, data).check("the target's send() after reading end of file")
    assert sent.n == len(data), f"the target's send() after reading end of file must send all {len(data)} bytes: {sent}"


def shutdown_wr(c, role) -> None:
    if role == "peer":
        c.sock.shutdown(socket.SHUT_WR)
    else:
        c.agent.shutdown(c.handle, "wr").check("the target's shutdown(SHUT_WR)")


def seen_in(end, state: str) -> float | None:
    """When (time.time()) end was seen in state, waiting for it; None if it was not."""
    return time.time() if end.wait_state(state) else None


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


# -- the full close, each side first --------------------------------------------------------
KEYS = {"target_active": "FW1 FW2 TIME_WAIT", "target_passive": "EOF CW LAST_ACK"}


@pytest.mark.parametrize("side", ["target_active", "target_passive"])
def test_four_way_close(net, agent, family, side, record):
    """One side closes first and goes FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT; the other reads end of file in
    CLOSE_WAIT, and its close() goes LAST_ACK -> closed. target_active: the target's server closes first;
    target_passive: the peer closes first and the target (the client) is the passive side."""
    prepare_holds(net)
    if side == "target_active":
        c, first, second = net.target_server(agent, family), "target", "peer"
    else:
        c, first, second = net.target_client(agent, family), "peer", "target"
    active, passive = c.end(first), c.end(second)
    assert_rto_min(c, record)
    record(f"states_{first}", "FIN_WAIT1 -> FIN_WAIT2 -> TIME_WAIT")
    record(f"states_{second}", "CLOSE_WAIT -> LAST_ACK -> closed")
    record.key(KEYS[side])

    # 1. The first closes; the second's ACK of its FIN is held back: the first waits in FIN_WAIT1.
    record("fin_wait1_hold", shaping.hold(net, passive.host, HOLD))
    c.close(first)
    fin_wait1_seen = seen_in(active, "FIN_WAIT1")  # looked at first (the state lasts HOLD), judged after the wire
    assert_fin(net.wire, active, "close()")
    assert fin_wait1_seen, f"the {first}'s close() did not leave it in FIN_WAIT1 (its FIN awaiting the {second}'s ACK)"
    assert passive.wait_state("CLOSE_WAIT"), f"the {second} did not enter CLOSE_WAIT on the {first}'s FIN"
    assert passive.stays("CLOSE_WAIT"), (
        f"the {second} left CLOSE_WAIT before its program closed: its runtime answered the {first}'s FIN itself"
    )
    got = recv_outcome(c, second)
    record(f"{second}_recv_after_fin", got)
    assert got == "EOF", f"the {second}'s recv() after the {first}'s FIN must return 0 (end of file), got {got}"
    assert active.wait_state("FIN_WAIT2", STATE_WAIT), f"the {first} did not move to FIN_WAIT2 when its FIN was acked"
    fin_first, ack_second = net.wire.expect_fin_acked(active, STATE_WAIT)
    record("fin_wait1_held_ms", ms(ack_second.time - fin_first.time))
    assert ack_second.time > fin_wait1_seen, (
        f"FIN_WAIT1 was seen after the {second}'s ACK reached the wire: not the held state"
    )

    # 2. The second closes; the first's ACK of its FIN is held back: the second waits in LAST_ACK.
    record("last_ack_hold", shaping.hold(net, active.host, HOLD))
    c.close(second)
    last_ack_seen = seen_in(passive, "LAST_ACK")  # looked at first (the state lasts HOLD), judged after the wire
    assert_fin(net.wire, passive, "close()")
    assert last_ack_seen, (
        f"the {second}'s close() in CLOSE_WAIT did not leave it in LAST_ACK (its FIN awaiting the {first}'s ACK)"
    )
    assert active.wait_state("TIME_WAIT"), f"the {first}, which closed first, is not in TIME_WAIT"
    assert passive.wait_gone(STATE_WAIT), f"the {second}'s socket did not close when the {first} acked its FIN"
    fin_second, ack_first = net.wire.expect_fin_acked(passive, STATE_WAIT)
    record("last_ack_held_ms", ms(ack_first.time - fin_second.time))
    assert ack_first.time > last_ack_seen, (
        f"LAST_ACK was seen after the {first}'s ACK reached the wire: not the held state"
    )

    assert fin_first.time < fin_second.time, f"the {first}'s FIN must come first"
    assert active.wait_state("TIME_WAIT"), f"the {first} left TIME_WAIT (it lasts 60 s)"
    assert not passive.host.sockets("TIME_WAIT"), f"the {second}, which closed second, is in TIME_WAIT"
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
    no_drops(net)


# -- the half-close, by each side -------------------------------------------------------------
def half_close(net, c, closer: str, data: bytes, record):
    """closer shuts down its sending side: the other side reads end of file, still sends `data`, which the
    half-closed closer reads and acks; then the other side closes too, and the closer ends in TIME_WAIT."""
    other = "peer" if closer == "target" else "target"
    closing, sending = c.end(closer), c.end(other)

    # shutdown(SHUT_WR) took effect, and only that: a FIN on the wire (no RST), and the kernel shows the
    # socket shut down for sending only, before anything depends on it.
    shutdown_wr(c, closer)
    assert_fin(net.wire, closing, "shutdown(SHUT_WR)")
    # The other side: CLOSE_WAIT, and it stays there (its program has not closed).
    assert sending.wait_state("CLOSE_WAIT"), f"the {other} did not enter CLOSE_WAIT on the {closer}'s FIN"
    assert sending.stays("CLOSE_WAIT"), (
        f"the {other} left CLOSE_WAIT before its program closed: its runtime answered the {closer}'s FIN itself"
    )
    shut = shut_down(closing)
    record(f"{closer}_shut_down", shut)
    assert shut == "wr", f"the {closer}'s shutdown(SHUT_WR) " + {
        "rdwr": "shut down reading too: the kernel shows its socket shut down for rd and wr, not wr only",
        "closed": "closed the socket: the kernel's socket for it has no file any more (an orphan)",
        None: "closed the socket: the kernel has no socket for it any more",
    }.get(shut, f"did not shut down sending only: the kernel shows its socket shut down {shut!r}")
    fin, _ = net.wire.expect_fin_acked(closing, STATE_WAIT)
    assert closing.wait_state("FIN_WAIT2"), f"the half-closed {closer} is not in FIN_WAIT2"
    got = recv_outcome(c, other)
    record(f"{other}_recv_after_fin", got)
    assert got == "EOF", (
        f"the {other}'s recv() after the {closer}'s shutdown(SHUT_WR) must return 0 (end of file), got {got}"
    )

    # End of file closes one direction only: the other side's data still reaches the half-closed side.
    send(c, other, data)
    sent = net.wire.expect(
        tcp(src=sending.addr, **sending.match, has="P"), f"the {other}'s data after the {closer}'s FIN"
    )
    got = recv_outcome(c, closer)
    record(f"{closer}_read_after_half_close", got)
    assert got == f"read {data!r}", f"the half-closed {closer} must still read the {other}'s data ({data!r}), got {got}"
    net.wire.expect(
        tcp(src=closing.addr, **closing.match, has="A", ack=sent.seq + sent.length),
        f"the {closer}'s ACK of the data it read after its FIN",
    )
    assert sent.time > fin.time, f"the {other}'s data must follow the {closer}'s FIN"
    assert closing.wait_state("FIN_WAIT2"), f"the half-closed {closer} left FIN_WAIT2 while the {other} sent"
    assert not net.wire.tcp(has="R"), "an RST was sent: data after a half-close must be accepted"

    # Then the other side closes too: the closer reads end of file and ends in TIME_WAIT (it sent the first FIN).
    c.close(other)
    assert_fin(net.wire, sending, "close()")
    got = recv_outcome(c, closer)
    record(f"{closer}_recv_after_close", got)
    assert got == "EOF", f"after the {other}'s FIN the {closer}'s recv() must return 0 (end of file), got {got}"
    assert closing.wait_state("TIME_WAIT"), f"the {closer}, whose FIN came first, is not in TIME_WAIT"
    assert sending.wait_gone(STATE_WAIT), f"the {other}'s socket did not close when its FIN was acked"
    c.close(closer)
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"


HALF = b"sent after the half-close"
REPLY = b"the target still writes after reading EOF"


def test_half_close(net, agent, family, record):
    """shutdown(SHUT_WR) on the target sends a FIN but keeps reading: the peer reads EOF, then sends data the
    target reads."""
    record.key(f"EOF, then read {len(HALF)}B")
    half_close(net, net.target_client(agent, family), "target", HALF, record)


def test_half_close_by_peer(net, agent, family, record):
    """The peer half-closes: the target's recv() returns 0, and the target can still send, which the peer reads."""
    record.key(f"EOF, then sent {len(REPLY)}B")
    half_close(net, net.target_client(agent, family), "peer", REPLY, record)
