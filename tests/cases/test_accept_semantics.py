"""What accept() does: it takes a connection the kernel already completed out of the queue.

Seed 000 (docs/seeds.md): "listen后,客户端就可以连接到服务器了,只是这时候连接的客户端都放到了一个队列中,
当调用accept时从队列中取数据,如果队列为空,就阻塞" — after listen() clients can connect;
they wait in a queue, accept() takes one out, and blocks while the queue is empty.
The data a client sends before accept() waits in that connection (netstat shows
Recv-Q 18 on the not-yet-accepted socket in the seed).

Seed 004: "accept():它在侦听套接字sockfd的挂起连接队列上提取第一个连接请求,创建一个新的连接套接字,
并返回一个引用该套接字的新文件描述符" and "The original socket remains open and listens
for new connection requests"; "If the socket is marked as nonblocking and no pending
connections are present on the queue, accept returns an error".
"""

import socket

from conformance import queue
from conformance.capture import tcp
from conformance.case import PORT, peer_recv
from conformance.timing import slack

FIRST, SECOND = b"This is tcp client", b" and more"  # two writes, 18 + 9 bytes
AT_ONCE_MS = 500  # ms: a non-blocking accept() answers at once; the call's own timeout is 2 s


def test_accept_data_before_accept(net, agent, family, record):
    """Two writes before accept(): both wait in the queued connection's Recv-Q and are read in order after."""
    server, client_addr = net.target.addr(family), net.peer.addr(family)
    ls = agent.listener(server, PORT)

    client, cport = queue.queued_client(net, family)
    queue.assert_left_in_queue(net, cport)
    client.setblocking(True)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    syn = net.wire.expect(tcp(sport=cport, flags="S"), "the client's SYN")

    # Two separate writes, each its own segment: the second only after the first is acknowledged.
    client.sendall(FIRST)
    ack1 = net.wire.expect(
        tcp(sport=PORT, dport=cport, has="A", ack=syn.seq + 1 + len(FIRST)),
        f"the target's ACK of the first {len(FIRST)} bytes",
    )
    client.sendall(SECOND)
    total = len(FIRST) + len(SECOND)
    ack2 = net.wire.expect(
        tcp(sport=PORT, dport=cport, has="A", ack=syn.seq + 1 + total), f"the target's ACK of all {total} bytes"
    )
    record("writes", f"{len(FIRST)}+{len(SECOND)}")
    record("ack_times", f"{ack1.time:.6f} {ack2.time:.6f}")
    data_segs = [s for s in net.wire.tcp(sport=cport, dport=PORT) if s.length]
    assert [s.length for s in data_segs] == [len(FIRST), len(SECOND)], (
        f"expected two data segments of {len(FIRST)} and {len(SECOND)} bytes: {[str(s) for s in data_segs]}"
    )
    assert data_segs[1].seq == (data_segs[0].seq + len(FIRST)) % 2**32, "the second write does not follow the first"

    # Kernel, before accept(): the connection waits in the accept queue and holds every byte.
    listener = net.target.wait_state("LISTEN", sport=PORT, rqueue=1)
    assert listener, "the accept queue does not hold the connection"
    record("accept_queue_before_accept", listener.rqueue)
    queued = net.target.wait_state("ESTABLISHED", sport=PORT, dport=cport, rqueue=total)
    assert queued, f"the {total} bytes sent before accept() are not in the queued socket's Recv-Q"
    record("recvq_before_accept", queued.rqueue)

    accepted = agent.accept(ls).check("accept the queued connection")
    assert accepted.endpoint == (client_addr, cport), (
        f"accept() returned {accepted.addr}:{accepted.port}, the client is {client_addr}:{cport}"
    )
    # accept() hands the connection over as it is: the bytes stay unread in its Recv-Q until recv().
    conn = net.target.wait_state("ESTABLISHED", sport=PORT, dport=cport)
    assert conn, "the accepted connection is not ESTABLISHED on the target"
    record("recvq_after_accept", conn.rqueue)
    assert conn.rqueue == total, (
        f"after accept() the connection's Recv-Q holds {conn.rqueue} bytes, not the "
        f"{total} sent before it: accept() must hand over the connection with its data unread"
    )
    got = agent.recv_exactly(accepted.h, total)
    record.key(f"recvq={queued.rqueue} read={len(got)}")
    assert got == FIRST + SECOND, f"read {got!r} after accept(), the client wrote {FIRST!r} then {SECOND!r}"
    assert net.target.wait_state("ESTABLISHED", sport=PORT, dport=cport, rqueue=0), (
        "the accepted socket's Recv-Q is not empty after reading everything"
    )
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), "the accept queue is not empty after accept()"


def test_accept_new_socket(net, agent, family, record):
    """accept() returns a new connected socket with the peer's address; the listener keeps listening."""
    server, client_addr = net.target.addr(family), net.peer.addr(family)
    ls = agent.listener(server, PORT)

    handles = {ls}
    for n in (1, 2):
        client, cport = queue.queued_client(net, family, which=f"connect {n} to the listener")
        syn = net.wire.expect(tcp(sport=cport, flags="S"), f"client {n}'s SYN")
        net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA", ack=syn.seq + 1), f"the SYN-ACK to client {n}")

        a = agent.accept(ls).check(f"accept client {n}")
        h = a.h
        record("handles", " ".join(map(str, sorted(handles | {h}))))
        assert h not in handles, f"accept() {n} returned handle {h}, not a new socket (have {sorted(handles)})"
        handles.add(h)
        assert a.endpoint == (client_addr, cport), (
            f"accept() {n} reported the peer {a.addr}:{a.port}, the client is {client_addr}:{cport}"
        )
        peer = agent.getpeername(h)
        assert peer.endpoint == (client_addr, cport), (
            f"getpeername on accepted socket {n}: {peer.addr}:{peer.port}, the client is {client_addr}:{cport}"
        )
        local = agent.getsockname(h)
        assert local.endpoint == (server, PORT), (
            f"getsockname on accepted socket {n}: {local.addr}:{local.port}, expected {server}:{PORT}"
        )

        # The new socket is the connection: what the target sends on it reaches this client.
        message = f"hello {n}".encode()
        agent.send(h, message).check(f"send on accepted socket {n}")
        assert peer_recv(client, 100) == message, (
            f"client {n} did not receive what the target sent on the accepted socket"
        )
        net.wire.expect(
            tcp(sport=PORT, dport=cport, has="P", length=len(message)), f"the target's data segment to client {n}"
        )

        # Kernel: the listener is still LISTEN (queue empty again), the connection is ESTABLISHED.
        assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), (
            f"after accept() {n} the listening socket is no longer LISTEN"
        )
        assert net.target.wait_state("ESTABLISHED", sport=PORT, dport=cport), (
            f"no ESTABLISHED socket for client {n} on the target"
        )

    name = agent.getsockname(ls)
    assert name.port == PORT, f"the listening socket's name changed: {name.addr}:{name.port}"
    established = net.target.sockets("ESTABLISHED", sport=PORT)
    assert len(established) == 2, f"expected 2 accepted connections in the kernel table, found {len(established)}"
    record.key("new sock, LISTEN")


def test_accept_nonblock(net, agent, family, record):
    """A non-blocking accept() on an empty queue fails at once with EAGAIN (EWOULDBLOCK)."""
    server, client_addr = net.target.addr(family), net.peer.addr(family)
    ls = agent.listener(server, PORT)
    # Go: unsupported (no non-blocking sockets) -> skipped
    agent.setsockopt(ls, "nonblock", 1).check("make the listener non-blocking")
    # The mode took effect (read back: O_NONBLOCK shows nowhere else) before the accept() is judged.
    mode = agent.getsockopt(ls, "nonblock").value
    record("nonblock", mode)
    assert mode == "1", f"setsockopt nonblock 1 did not take effect: the listener reads back nonblock={mode}"

    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), "the target has no listener with an empty queue"
    r = agent.accept(ls)
    record("errno", r.errno)
    record("empty_accept_ms", f"{r.ms:.3f}")
    record.key(r.errno, f"{r.ms:.2f}ms")
    assert r.ms < slack(AT_ONCE_MS), (
        f"accept() on the non-blocking listener (nonblock reads back 1) blocked: it waited {r.ms:.0f} ms and "
        f"ended with {r.outcome} (the call's own timeout is 2 s) instead of failing at once with EAGAIN"
    )
    assert r.errno in ("EAGAIN", "EWOULDBLOCK"), f"expected err EAGAIN on an empty queue, got {r}"
    assert not net.wire.tcp(dport=PORT), "something reached the listener before the empty-queue accept()"

    # Once a connection is queued, the same non-blocking accept() takes it.
    _, cport = queue.queued_client(net, family)
    net.wire.expect(tcp(sport=PORT, dport=cport, flags="SA"), "the SYN-ACK to the client")
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=1), "the connection is not in the accept queue"
    ok = agent.accept(ls)
    assert ok.ok, f"a non-blocking accept() with a queued connection failed: {ok}"
    assert ok.endpoint == (client_addr, cport), (
        f"accept() returned {ok.addr}:{ok.port}, the client is {client_addr}:{cport}"
    )
    assert net.target.wait_state("LISTEN", sport=PORT, rqueue=0), "the queue is not empty after accept()"
