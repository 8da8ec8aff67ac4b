"""The three-way handshake is the kernel's work: it completes before, and without, accept().

Seeds 000 and 001 (docs/seeds.md): a client connects to a listener that never calls accept();
both ends are ESTABLISHED, the data the client sends waits in the server-side
socket's receive queue, and accept() later just hands over that connection.
"""

from conformance import queue
from conformance.capture import tcp
from conformance.case import PORT

PAYLOAD = b"This is tcp client"  # 18 bytes, as in seed 000


def test_handshake(net, agent, family, record):
    server_addr, client_addr = net.target.addr(family), net.peer.addr(family)
    ls = agent.listener(server_addr, PORT)

    client, cport = queue.queued_client(net, family)

    # Wire: SYN, SYN-ACK, ACK, each acknowledging the other's sequence number + 1.
    syn = net.wire.expect(tcp(sport=cport, flags="S"), "the client's SYN")
    synack = net.wire.expect(tcp(dport=cport, flags="SA", ack=syn.seq + 1), "a SYN-ACK acking the SYN's seq + 1")
    record("syn_to_synack_ms", f"{(synack.time - syn.time) * 1000:.3f}")
    net.wire.expect(
        tcp(sport=cport, flags="A", seq=syn.seq + 1, ack=synack.seq + 1), "the client's ACK of the SYN-ACK's seq + 1"
    )

    # Kernel, before any accept(): the connection is ESTABLISHED and waits in the accept queue,
    # where the target's runtime leaves it too (an event loop that accepts on its own would not).
    queue.assert_left_in_queue(net, cport)
    listener = net.target.wait_state("LISTEN", sport=PORT)
    assert listener is not None, "the target has no listening socket"
    record("accept_queue_before_accept", listener.rqueue)
    assert listener.rqueue == 1, f"accept queue holds {listener.rqueue} connections before accept(), expected 1"
    assert net.target.wait_state("ESTABLISHED", sport=PORT, dport=cport), (
        "no ESTABLISHED server-side socket before accept()"
    )
    assert net.peer.wait_state("ESTABLISHED", sport=cport, dport=PORT), "the client is not ESTABLISHED"

    # Data sent before accept() waits in the not-yet-accepted socket's receive queue.
    client.setblocking(True)
    client.sendall(PAYLOAD)
    queued = net.target.wait_state("ESTABLISHED", sport=PORT, dport=cport, rqueue=len(PAYLOAD))
    assert queued, f"the {len(PAYLOAD)} bytes sent before accept() are not in the socket's Recv-Q"
    record("recvq_before_accept", queued.rqueue)
    record.key(f"q={listener.rqueue} recvq={queued.rqueue}")

    # accept() hands over that very connection, with the client's address and ephemeral port.
    accepted = agent.accept(ls).check("accept the queued connection")
    assert accepted.endpoint == (client_addr, cport), (
        f"accept() returned {accepted.addr}:{accepted.port}, the client is {client_addr}:{cport}"
    )
    got = agent.recv(accepted.h, 1024)
    assert got.data == PAYLOAD, f"read {got.data!r} after accept(), sent {PAYLOAD!r}"
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), "the accept queue is not empty after accept()"


def test_handshake_as_client(net, agent, family, record):
    """The target's connect() to a peer listener that never accepts completes."""
    net.peer_listener(family)
    s = agent.socket("tcp", family).h
    done = agent.connect(s, net.peer.addr(family), PORT)
    record("connect_ms", f"{done.ms:.3f}")
    record.key("ESTABLISHED" if done.ok else done.outcome, f"{done.ms:.2f}ms")
    assert done.ok, f"connect() to a listener that never accepts did not complete: {done}"
    cport = agent.getsockname(s).port

    syn = net.wire.expect(tcp(sport=cport, flags="S"), f"a SYN from the target's port {cport}")
    synack = net.wire.expect(tcp(dport=cport, flags="SA", ack=syn.seq + 1), "a SYN-ACK acking the target's SYN")
    net.wire.expect(tcp(sport=cport, has="A", ack=synack.seq + 1), "the target's ACK of the SYN-ACK")

    assert net.peer.wait_state("LISTEN", sport=PORT, rqueue=1), "the peer's accept queue does not hold it"
    assert net.target.wait_state("ESTABLISHED", sport=cport, dport=PORT), "the target is not ESTABLISHED"
