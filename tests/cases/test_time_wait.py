"""The side that closes first ends in TIME_WAIT; the other passes through CLOSE_WAIT.

Seed 003: the four-way close; the active closer goes FIN_WAIT_2 then TIME_WAIT
(2MSL, 60 s on Linux: never waited out here). The capture shows a FIN and its
ACK in each direction. Checked both ways: the target closes first (by_target),
then the peer closes first (by_peer). After each close, the first thing checked
is how that side ended on the wire: a FIN (an RST would skip every state below).
"""

import pytest

from conformance.case import assert_fin


@pytest.mark.parametrize("closer", ["by_target", "by_peer"])
def test_time_wait(net, agent, family, closer, record):
    c = net.target_client(agent, family)
    first, second = ("target", "peer") if closer == "by_target" else ("peer", "target")
    record("states", f"{first} FIN_WAIT2 -> TIME_WAIT; {second} CLOSE_WAIT -> closed")
    record.key(f"{first} TIME_WAIT")

    c.close(first)
    assert_fin(net.wire, c.end(first), "close()")
    assert c.end(second).wait_state("CLOSE_WAIT"), f"the {second} did not enter CLOSE_WAIT"
    assert c.end(second).stays("CLOSE_WAIT"), (
        f"the {second} left CLOSE_WAIT before its program closed: its runtime answered the {first}'s FIN itself"
    )
    assert c.end(first).wait_state("FIN_WAIT2"), f"the {first} did not enter FIN_WAIT2"
    if second == "target":
        eof = agent.recv(c.handle, 100)
        record("recv_after_fin", eof.outcome)
        assert eof.eof, f"the target's recv after the peer's FIN must return 0 (EOF): {eof}"

    c.close(second)
    assert_fin(net.wire, c.end(second), "close()")
    assert c.end(first).wait_state("TIME_WAIT"), f"the {first} closed first but is not in TIME_WAIT"
    assert not c.end(second).host.sockets("TIME_WAIT"), f"the {second}, which closed second, is in TIME_WAIT"
    net.wire.expect_fin_acked(c.end(first))
    net.wire.expect_fin_acked(c.end(second))
    assert not net.wire.tcp(has="R"), "an RST was sent: the close must be FIN/ACK both ways"
