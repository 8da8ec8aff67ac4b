"""A userspace-stack target (link = "packet", netstack): the target namespace's kernel stays silent.

Net.start deafens the kernel of the target namespace on the veth (Host.deafen: an ingress qdisc whose
eBPF filter drops every frame after the packet taps saw it), because the kernel keeps the target's
addresses: were it to answer for them, its RST, SYN-ACK or ARP reply would falsify every verdict on
the stack. Checked here against the kernel itself, with a kernel listener in the target namespace that
would answer, and a control run without deafen() that shows each answer the deafened run must lack.
"""

import socket
import time

import pytest

from conformance.case import CLOSED_PORT, PORT, Net, connected
from conformance.targets import builtin_targets
from conformance.timing import wait_until

SILENCE = 0.6  # s: how long the peer's probes get to draw an answer (the kernel answers within a ms)


def from_target_kernel(net, family):
    """Every frame on the wire from the target's side that the target namespace's kernel could have sent
    for the target's address: a TCP segment, an ARP reply, an IPv6 neighbour advertisement."""
    addr = net.target.addr(family)
    return [
        s
        for s in net.wire.segments()
        if (s.proto == "tcp" and s.src == addr)
        or (s.proto == "arp" and s.flags == "reply" and s.src == addr)
        or (s.proto == "icmp6" and s.icmp_type == 136 and s.src == addr)
    ]


@pytest.mark.parametrize("deaf", [True, False], ids=["deafened", "control"])
def test_deafened_kernel_answers_nothing(family, deaf):
    with Net() as net:
        addr = net.target.addr(family)
        listener = net.target.socket(family)  # the kernel's own: it would complete a handshake
        try:
            listener.bind((addr, PORT))
            listener.listen(4)
            if deaf:
                net.target.deafen()
                assert net.target.deafened()
            tap = net.target.packet_socket()  # what a stack's agent reads: it must still see every frame
            tap.setblocking(False)
            try:
                # A SYN to a listening port (SYN-ACK) and to a closed one (RST), both through the peer's
                # permanent neighbour entry for the target.
                syn = net.peer_connect(family, addr, PORT)
                refused = net.peer_connect(family, addr, CLOSED_PORT)
                # Neighbour discovery: the peer forgets the target's link address and asks for it.
                net.peer.netlink(
                    lambda ipr: ipr.neigh("del", dst=addr, lladdr=net.target.mac, ifindex=net.peer.ifindex)
                )
                probe = net.peer.socket(family, socket.SOCK_DGRAM)
                probe.sendto(b"x", (addr, CLOSED_PORT))
                probe.close()
                time.sleep(SILENCE)
                seen = 0
                for _ in range(1000):  # bounded: the tap holds what arrived in SILENCE
                    try:
                        tap.recv(65536)
                    except BlockingIOError:
                        break
                    seen += 1
            finally:
                tap.close()
            answers = from_target_kernel(net, family)
            asked = [s for s in net.wire.segments() if s.proto == "tcp" and s.dst == addr and s.flags == "S"]
            asked_neighbour = wait_until(
                lambda: [
                    s
                    for s in net.wire.segments()
                    if (s.proto == "arp" and s.flags == "request" and s.target == addr)
                    or (s.proto == "icmp6" and s.icmp_type == 135 and s.target == addr)
                ],
                1.0,
            )
        finally:
            listener.close()
        assert len(asked) >= 2, f"the peer's SYNs are not on the wire: {net.wire.summary()}"
        assert asked_neighbour, f"the peer did not ask for {addr}'s link address: {net.wire.summary()}"
        assert seen >= len(asked), f"the target's packet socket saw {seen} frames, fewer than the {len(asked)} SYNs"
        if deaf:
            assert not answers, "the deafened kernel answered for the target's address:\n" + "\n".join(
                map(str, answers)
            )
            assert connected(syn, 0) is None and connected(refused, 0) is None, "a connect finished"
        else:  # the control: the same probes draw each kind of answer from a kernel that hears them
            assert {s.flags for s in answers if s.proto == "tcp"} >= {"SA", "RA"}, answers
            assert [s for s in answers if s.proto in ("arp", "icmp6")], f"no neighbour answer: {answers}"


def test_a_packet_target_starts_deafened_with_its_own_tables():
    """Net.start for netstack: the kernel is deafened, the agent runs unprivileged with the packet socket
    and the state channel, and net.target.stack answers for the target's sockets."""
    with Net() as net:
        agent = net.start(builtin_targets()["netstack"])
        assert net.target.deafened() and net.target.stack is not None
        assert net.target.evidence_source == "target" and net.peer.evidence_source == "kernel"
        assert agent.uid == 65534, f"the agent kept uid {agent.uid}: {agent.uid_reason}"
        assert "--fd" in agent.argv and "--state-fd" in agent.argv
        ls = agent.listener(net.target.addr("v4"), PORT)
        assert net.target.wait_state("LISTEN", sport=PORT), net.target.table()
        assert not net.target.call(lambda: open("/proc/thread-self/net/tcp").read().splitlines()[1:]), (
            "the kernel has a socket of its own in the target namespace"
        )
        agent.close(ls).check()


def test_matrix_and_html_show_the_evidence_source_of_a_column_without_the_kernel():
    from conformance import html, matrix, results

    source = "target: socket states, queues, counters and neighbours from its stack's own tables"
    base = {"verdict": "pass", "reason": "", "key": "ok", "detail": "", "runtime": "", "pcap": None}
    records = [
        {**base, "id": "a", "case": "refused v4", "target": "python", "observed": {}},
        {**base, "id": "b", "case": "refused v4", "target": "netstack", "observed": {"evidence_source": source}},
    ]
    for r in records:
        r.update(test="test_refused", family="v4", duration_s=0.0, evidence={})
    text = matrix.render(records, ["python", "netstack"])
    assert "netstack*" in text and "python*" not in text
    assert "*netstack: socket states, queues, counters and neighbours from its stack's own tables" in text
    doc = results.document(
        records,
        profile="linux-default",
        sysctls={},
        kernel="6.18",
        kernel_version="6.18",
        targets=["python", "netstack"],
    )
    assert doc["targets"]["netstack"]["evidence_source"] == source and "evidence_source" not in doc["targets"]["python"]
    page = html.render(doc)
    assert page.count("evidence: socket states, queues, counters and neighbours") == 1
