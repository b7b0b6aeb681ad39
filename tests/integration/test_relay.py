"""Bytes through a tunneld pair on loopback: integrity, concurrency, half-close,
and what happens when either end of the path is missing."""

import hashlib
import os
import socket
import threading

import lab


def test_relays_256_mib_each_way_with_equal_sha256(workdir, cleanup):
    total = 256 << 20
    backend = lab.Backend("sink", reply_bytes=total)
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)

    conn = pair.connect(timeout=120)
    sender = threading.Thread(target=lab.send_pattern, args=(conn, total))
    sender.start()
    h = hashlib.sha256()
    received = 0
    buf = bytearray(1 << 20)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        received += n
        h.update(memoryview(buf)[:n])
    sender.join()
    conn.close()

    expected = lab.pattern_sha256(total)
    assert received == total
    assert h.hexdigest() == expected
    lab.wait_for(lambda: backend.results, what="backend result")
    assert backend.results[0] == {"received": total, "sha256": expected}
    pair.server.wait_log(rf"inbound close .* rx={total} tx={total} .*reason=finished")
    pair.client.wait_log(rf"outbound close .* rx={total} tx={total} .*reason=finished")


def test_fifty_concurrent_connections_each_get_their_own_bytes(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    # All 50 handshakes come from one address at once: above the default unauthenticated
    # budget per source (16, refused at once beyond that), which this test is not about.
    pair = lab.Pair(workdir, backend.address, extra_server="limits: {max_handshakes_per_source: 64}\n")
    cleanup.append(pair.stop)
    errors = []

    def one(i):
        try:
            payload = os.urandom(256 * 1024) + i.to_bytes(4, "big")
            with pair.connect(timeout=30) as c:
                threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR))).start()
                got = bytearray()
                while chunk := c.recv(65536):
                    got += chunk
            if bytes(got) != payload:
                errors.append(f"connection {i}: {len(got)} bytes back, content differs")
        except Exception as e:  # noqa: BLE001
            errors.append(f"connection {i}: {e!r}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert backend.accepted == 50
    pair.server.wait_log(r"inbound close .*reason=finished", count=50)


def test_client_half_close_reaches_backend_and_reply_still_flows(workdir, cleanup):
    backend = lab.Backend("echo")  # echoes, and only closes after it sees EOF
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    with pair.connect() as c:
        c.sendall(b"x" * 100_000)
        c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := c.recv(65536):
            got += chunk
    assert len(got) == 100_000


def test_backend_half_close_reaches_client_and_client_can_still_send(workdir, cleanup):
    backend = lab.Backend("sink", reply_bytes=0)  # closes its write side at once, keeps reading
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    with pair.connect() as c:
        assert c.recv(10) == b""  # EOF from the backend arrives through both tunnels
        c.sendall(b"y" * 500_000)  # ... and our direction is still open
        c.shutdown(socket.SHUT_WR)
        lab.wait_for(lambda: backend.results, what="backend saw EOF")
    assert backend.results[0]["received"] == 500_000


def test_backend_down_closes_client_at_once_and_logs_reason(workdir, cleanup):
    dead = f"127.0.0.1:{lab.free_port()}"
    pair = lab.Pair(workdir, dead)
    cleanup.append(pair.stop)
    with pair.connect(timeout=5) as c:
        lab.assert_closed_by_peer(c)
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=backend_unreachable detail=.*refused")


def test_peer_down_closes_local_client_at_once_and_logs_reason(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False)
    pair.client.start()
    cleanup.append(pair.client.stop)
    with pair.connect(timeout=5) as c:
        lab.assert_closed_by_peer(c)
    pair.client.wait_log(r"outbound close peer=server-1 .*reason=peer_unreachable detail=.*refused")


def test_backend_over_unix_socket(workdir, cleanup):
    path = os.path.join(workdir, "backend.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    cleanup.append(srv.close)

    def echo(c):
        while data := c.recv(65536):
            c.sendall(data)
        c.close()

    def serve():  # tunneld's backend health check connects too, every probe_interval
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    pair = lab.Pair(workdir, f"unix:{path}")
    cleanup.append(pair.stop)
    with pair.connect() as c:
        c.sendall(b"over unix")
        assert c.recv(100) == b"over unix"


def test_no_fd_leak_after_many_connections(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    with pair.connect() as c:  # warm up: thread pools, resolver
        c.sendall(b"w")
        c.recv(1)
    lab.wait_for(lambda: len(pair.server.log_lines("inbound close")) == 1)
    base_server, base_client = pair.server.fd_count(), pair.client.fd_count()
    for _ in range(100):
        with pair.connect() as c:
            c.sendall(b"ping")
            assert c.recv(4) == b"ping"
    lab.wait_for(lambda: len(pair.server.log_lines("inbound close")) == 101, what="all closed")
    lab.wait_for(lambda: pair.client.fd_count() == base_client and pair.server.fd_count() == base_server,
                 timeout=5, what=f"fd counts back to {base_client}/{base_server}")
