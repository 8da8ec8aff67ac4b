"""The three-way handshake is the kernel's work: it completes before, and without, accept().

Seeds 000 and 001: a client connects to a listener that never calls accept();
both ends are ESTABLISHED, the data the client sends waits in the server-side
socket's receive queue, and accept() later just hands over that connection.
"""
from conformance.capture import tcp
from conformance.case import connected

PORT = 7878
PAYLOAD = b"This is tcp client"  # 18 bytes, as in seed 000


def test_handshake(net, agent, family, record):
    server_addr, client_addr = net.target.addr(family), net.peer.addr(family)
    ls = agent.socket("tcp", family).h
    agent.bind(ls, server_addr, PORT).check()
    agent.listen(ls, 4).check()

    client = net.peer_connect(family, server_addr, PORT)
    assert connected(client, 2.0) == 0, "the peer's connect() did not complete while the target never called accept()"
    cport = client.getsockname()[1]

    # Wire: SYN, SYN-ACK, ACK, each acknowledging the other's sequence number + 1.
    syn = net.wire.expect(tcp(sport=cport, flags="S"), "the client's SYN")
    synack = net.wire.expect(tcp(dport=cport, flags="SA", ack=syn.seq + 1), "a SYN-ACK acking the SYN's seq + 1")
    net.wire.expect(tcp(sport=cport, flags="A", seq=syn.seq + 1, ack=synack.seq + 1),
                    "the client's ACK of the SYN-ACK's seq + 1")

    # Kernel, before any accept(): the connection is ESTABLISHED and waits in the accept queue.
    listener = net.wait_state(net.target, "LISTEN", sport=PORT)
    assert listener is not None, "the target has no listening socket"
    assert listener.rqueue == 1, f"accept queue holds {listener.rqueue} connections before accept(), expected 1"
    assert net.wait_state(net.target, "ESTABLISHED", sport=PORT, dport=cport), \
        "no ESTABLISHED server-side socket before accept()"
    assert net.wait_state(net.peer, "ESTABLISHED", sport=cport, dport=PORT), "the client is not ESTABLISHED"

    # Data sent before accept() waits in the not-yet-accepted socket's receive queue.
    client.setblocking(True)
    client.sendall(PAYLOAD)
    queued = net.wait_state(net.target, "ESTABLISHED", sport=PORT, dport=cport, rqueue=len(PAYLOAD))
    assert queued, f"the {len(PAYLOAD)} bytes sent before accept() are not in the socket's Recv-Q"

    # accept() hands over that very connection, with the client's address and ephemeral port.
    accepted = agent.accept(ls, 2.0).check()
    assert (accepted["addr"], int(accepted["port"])) == (client_addr, cport), \
        f"accept() returned {accepted['addr']}:{accepted['port']}, the client is {client_addr}:{cport}"
    got = agent.recv(accepted.h, 1024, 2.0).check()
    assert got["data"] == PAYLOAD.hex(), f"read {got['data']!r} after accept(), sent {PAYLOAD!r}"
    assert net.wait_state(net.target, "LISTEN", sport=PORT, rqueue=0), "the accept queue is not empty after accept()"

    record("syn_to_synack_ms", f"{(synack.time - syn.time) * 1000:.3f}")
    record("accept_queue_before_accept", listener.rqueue)
    record("recvq_before_accept", queued.rqueue)
    record.key(f"q=1 recvq={queued.rqueue}")


def test_handshake_as_client(net, agent, family, record):
    """The target's connect() to a peer listener that never accepts completes."""
    net.peer_listener(family, PORT)
    s = agent.socket("tcp", family).h
    done = agent.connect(s, net.peer.addr(family), PORT, 2.0)
    assert done.ok, f"connect() to a listener that never accepts did not complete: {done}"
    cport = int(agent.getsockname(s).check()["port"])

    syn = net.wire.expect(tcp(sport=cport, flags="S"), f"a SYN from the target's port {cport}")
    synack = net.wire.expect(tcp(dport=cport, flags="SA", ack=syn.seq + 1), "a SYN-ACK acking the target's SYN")
    net.wire.expect(tcp(sport=cport, has="A", ack=synack.seq + 1), "the target's ACK of the SYN-ACK")

    assert net.wait_state(net.peer, "LISTEN", sport=PORT, rqueue=1), "the peer's accept queue does not hold it"
    assert net.wait_state(net.target, "ESTABLISHED", sport=cport, dport=PORT), "the target is not ESTABLISHED"
    record("connect_ms", f"{done.ms:.3f}")
    record.key("ESTABLISHED", f"{done.ms:.2f}ms")
