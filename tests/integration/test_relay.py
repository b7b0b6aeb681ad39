"""Bytes through a tunneld pair on loopback: integrity, concurrency, half-close,
and what happens when either end of the path is missing."""

import hashlib
import os
import socket
import subprocess
import threading
import time

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


class ScriptedBackend:
    """A one-connection TCP server running `script(conn)` on its thread."""

    def __init__(self, script):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            # tunneld's backend check connects and closes without a byte: skip those.
            conn.settimeout(10)
            try:
                first = conn.recv(1)
            except OSError:
                first = b""
            if not first:
                conn.close()
                continue
            try:
                script(conn, first)
            except Exception as e:  # reported by the test
                self.error = e
            return

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def scripted_pair(workdir, cleanup, script):
    """A ScriptedBackend running `script` behind a started tunneld pair; both cleaned up."""
    backend = ScriptedBackend(script)
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    return backend, pair


def reset(conn):
    """close() with SO_LINGER 0: the kernel sends RST instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


def close_lines(pair):
    return pair.server.log_lines(r" close peer=") + pair.client.log_lines(r" close peer=")


def test_server_exiting_with_a_reset_after_the_clients_terminate_is_a_clean_finish(workdir, cleanup):
    """A postgres backend that reads Terminate, sees EOF and exits, resetting the
    socket (bytes unread): both tunnels log `finished` at info, and the client
    gets a clean EOF, not a truncation or a reset."""

    def backend_script(conn, first):
        while conn.recv(65536):
            pass
        conn.sendall(b"keepalive")  # unread by anyone: the client has gone
        reset(conn)

    backend, pair = scripted_pair(workdir, cleanup, backend_script)
    with pair.connect() as c:
        c.sendall(b"X\x00\x00\x00\x04")  # Terminate
        c.shutdown(socket.SHUT_WR)
        c.settimeout(10)
        while c.recv(65536):  # a reset here would raise
            pass
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=finished")
    pair.client.wait_log(r"outbound close peer=server-1 .*reason=finished")
    assert backend.error is None
    lines = close_lines(pair)
    assert all(" info " in l and "reason=finished" in l for l in lines), lines


def test_client_leaving_with_bytes_in_flight_after_its_half_close_is_a_clean_finish(workdir, cleanup):
    """pg_basebackup's end: the client half-closes, the server keeps sending
    (a walsender's keepalives), the client closes with bytes unread. Both tunnels
    log `finished` at info."""
    stop = threading.Event()

    def backend_script(conn, first):
        try:
            while not stop.is_set():
                conn.sendall(b"k" * 16384)
        except OSError:
            pass  # tunneld closed: the client is gone
        conn.close()

    backend = ScriptedBackend(backend_script)
    cleanup.append(backend.close)
    cleanup.append(stop.set)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    c = pair.connect()
    c.settimeout(10)
    c.sendall(b"X\x00\x00\x00\x04")
    c.shutdown(socket.SHUT_WR)
    assert len(c.recv(65536)) > 0
    lab.wait_for(lambda: len(c.recv(65536, socket.MSG_PEEK)) > 0, what="more data queued")
    reset(c)  # unread bytes: RST
    pair.client.wait_log(r"outbound close peer=server-1 .*reason=finished")
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=finished")
    lines = close_lines(pair)
    assert all(" info " in l for l in lines), lines


def test_server_resetting_just_before_the_clients_last_bytes_and_half_close_is_a_clean_finish(workdir, cleanup):
    """PostgreSQL over SSL inside the tunnel (Debian's default ssl=on): the client
    sends Terminate, then its SSL close_notify alert, then closes; the server
    exits after Terminate with the alert unread, so its reset reaches tunneld
    before the client's half-close does. Seen in the README walkthrough's
    pg_basebackup. Both tunnels: finished, at info."""

    done = threading.Event()

    def backend_script(conn, first):
        reset(conn)  # exits after the first byte of Terminate; the rest unread: RST
        done.set()

    backend, pair = scripted_pair(workdir, cleanup, backend_script)
    port = backend.address.rsplit(":", 1)[1]

    def tunneld_side_reset():  # the server tunneld's backend socket is no longer established
        return not subprocess.run(["ss", "-Htn", "state", "established", f"dport = :{port}"],
                                  capture_output=True, text=True).stdout.strip()

    with pair.connect() as c:
        c.sendall(b"X\x00\x00\x00\x04")
        # The reset is back at tunneld before the rest is sent (an event, not a sleep).
        assert done.wait(10), "the backend never saw the first byte"
        lab.wait_for(tunneld_side_reset, timeout=5, what="the RST at the server tunneld's backend socket")
        c.sendall(b"\x15\x03\x03\x00\x02\x01\x00")  # the client's close_notify alert
        c.shutdown(socket.SHUT_WR)
        c.settimeout(10)
        while c.recv(65536):
            pass
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=finished")
    pair.client.wait_log(r"outbound close peer=server-1 .*reason=finished")
    lines = close_lines(pair)
    assert all(" info " in l for l in lines), lines


def test_both_ends_resetting_at_the_end_is_a_clean_finish(workdir, cleanup):
    """Each postgres end closes with the other's last bytes unread (seen with
    pg_basebackup's WAL connection over SSL): both tunnels' local sides reset, with
    no half-close anywhere. Each tunnel says at once that its side is done, so
    neither waits for the other: finished on both, at info."""

    def backend_script(conn, first):
        conn.sendall(b"bye")
        reset(conn)  # the client's remaining bytes unread

    backend, pair = scripted_pair(workdir, cleanup, backend_script)
    c = pair.connect()
    c.settimeout(10)
    c.sendall(b"X\x00\x00\x00\x04")
    lab.wait_for(lambda: c.recv(3, socket.MSG_PEEK) == b"bye", what="the server's last bytes")
    reset(c)  # "bye" unread
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=")
    pair.client.wait_log(r"outbound close peer=server-1 .*reason=")
    lines = close_lines(pair)
    assert all(" info " in l and "reason=finished" in l for l in lines), lines


def test_a_reset_while_the_other_end_goes_on_is_still_a_local_error(workdir, cleanup):
    """The rule above is narrow: a backend that resets while its client keeps the
    session open (a crash mid-conversation) is a failure, logged as one."""

    def backend_script(conn, first):
        reset(conn)

    backend, pair = scripted_pair(workdir, cleanup, backend_script)
    with pair.connect() as c:
        c.sendall(b"Q")
        c.settimeout(10)
        assert c.recv(10) == b""  # the server's end arrives as EOF ...
        try:
            for _ in range(10):  # ... but this client goes on talking, until the tunnel gives up
                c.sendall(b"more")
                time.sleep(0.1)
        except OSError:
            pass
        pair.server.wait_log(r"warning .*inbound close peer=client-1 .*reason=local_error "
                             r"detail=Connection reset by peer")
