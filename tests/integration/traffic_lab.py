"""Traffic for the tests: backends (echo, sink, replies of a given size), a
checkable byte pattern, a client-1 -> server-1 pair of tunnelds in front of a
backend, and long streams through a tunnel. Imported by lab.py, which
re-exports these names."""

import hashlib
import os
import socket
import threading
import time

from cert_lab import CA
from lab import Tunneld, free_port, node_config, wait_for


# --------------------------------------------------------------------------- backends


class Backend:
    """A TCP server standing in for postgres. mode: 'echo' returns what it reads,
    'sink' hashes what it reads and then sends `reply_bytes` of deterministic data.
    `accepted` and `results` count only connections that sent at least one byte."""

    def __init__(self, mode="echo", host="127.0.0.1", reply_bytes=0):
        self.mode = mode
        self.reply_bytes = reply_bytes
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.address = f"{host}:{self.port}"
        self.accepted = 0
        self.peers = []  # the client address of every accepted connection, in accept order
        self._sentinels = set()
        self.results = []  # per connection: dict(received, sha256)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.peers.append(peer[:2])
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _count(self, before, n):
        # tunneld's backend health check connects and closes without a byte; only
        # connections that carry data count as having reached the backend.
        if before == 0 and n > 0:
            with self.lock:
                self.accepted += 1

    def _serve(self, conn):
        h = hashlib.sha256()
        received = 0
        try:
            if self.mode == "echo":
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        break
                    self._count(received, len(data))
                    received += len(data)
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            else:
                # A reply starts with the first byte received: tunneld's backend
                # check connects and closes without one, and a reply racing that
                # close would only meet a reset. (No reply: half-close at once.)
                sender = threading.Thread(target=send_pattern, args=(conn, self.reply_bytes))
                if not self.reply_bytes:
                    sender.start()
                buf = bytearray(1 << 20)
                view = memoryview(buf)
                while True:
                    n = conn.recv_into(buf)
                    if not n:
                        break
                    if not received and self.reply_bytes:
                        sender.start()
                    self._count(received, n)
                    received += n
                    h.update(view[:n])
                if sender.is_alive() or received:
                    sender.join()
        except OSError:
            pass
        finally:
            if received:
                with self.lock:
                    self.results.append({"received": received, "sha256": h.hexdigest()})
            conn.close()

    def accepts_so_far(self):
        """How many connections (with or without data) the backend has accepted,
        not counting its own sentinels: a sentinel connection is made and, since
        the kernel hands out connections in order, every connection made before
        it has been counted once the sentinel has. No sleep, no guess."""
        family = self.sock.family
        s = socket.socket(family)
        s.connect(self.sock.getsockname()[:2])
        me = s.getsockname()[:2]
        with self.lock:
            self._sentinels.add(me)
        wait_for(lambda: me in self.peers, timeout=10, what="the backend accepting its sentinel")
        s.close()
        with self.lock:
            before = self.peers[:self.peers.index(me)]
        return sum(1 for p in before if p not in self._sentinels)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() thread; stops listening
        except OSError:
            pass
        self.sock.close()


def pattern_block():
    rng = hashlib.sha256(b"tunneld").digest()
    block = bytearray()
    counter = 0
    while len(block) < (1 << 20):
        block += hashlib.sha256(rng + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(block)


PATTERN = None


def send_pattern(conn, total):
    """Sends `total` bytes of a deterministic pattern, then half-closes."""
    global PATTERN
    if PATTERN is None:
        PATTERN = pattern_block()
    sent = 0
    while sent < total:
        chunk = PATTERN[: min(len(PATTERN), total - sent)]
        conn.sendall(chunk)
        sent += len(chunk)
    conn.shutdown(socket.SHUT_WR)


def pattern_sha256(total):
    global PATTERN
    if PATTERN is None:
        PATTERN = pattern_block()
    h = hashlib.sha256()
    left = total
    while left > 0:
        chunk = PATTERN[: min(len(PATTERN), left)]
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- pairs


class Pair:
    """A connected tunneld pair on loopback: `client` node's outbound listener
    (local_port) -> `server` node's inbound (tls_port) -> backend."""

    def __init__(self, workdir, backend_address, ca=None, extra_server="", extra_client="",
                 server_allow=("client-1",), start=True, files=None):
        """files: dict(ca=path, server=(cert, key), client=(cert, key)) to use
        existing certificates instead of issuing from `ca`."""
        self.workdir = workdir
        if files:
            self.ca = None
            ca_path = files["ca"]
            self.server_cert = (*files["server"], None)
            self.client_cert = (*files["client"], None)
        else:
            self.ca = ca or CA(os.path.join(workdir, "ca"))
            ca_path = self.ca.cert_path
            self.server_cert = self.ca.issue("server-1", os.path.join(workdir, "server"))
            self.client_cert = self.ca.issue("client-1", os.path.join(workdir, "client"))
        self.ca_path = ca_path
        self.tls_port = free_port()
        self.local_port = free_port()
        self.server = Tunneld(workdir, "server", node_config(
            "server-1", ca_path, self.server_cert[0], self.server_cert[1],
            inbound={"listen": f"127.0.0.1:{self.tls_port}", "backend": backend_address,
                     "allow": list(server_allow)},
            extra=extra_server))
        self.client = Tunneld(workdir, "client", node_config(
            "client-1", ca_path, self.client_cert[0], self.client_cert[1],
            peers=[{"name": "server-1", "connect": f"127.0.0.1:{self.tls_port}",
                    "local": f"127.0.0.1:{self.local_port}"}],
            extra=extra_client))
        if start:
            self.server.start()
            self.client.start()

    def connect(self, timeout=10):
        return socket.create_connection(("127.0.0.1", self.local_port), timeout=timeout)

    def stop(self):
        self.client.stop()
        self.server.stop()


def echo_once(conn, data):
    """Sends `data` and reads until as many bytes came back (an echo backend)."""
    conn.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = conn.recv(65536)
        assert chunk, "connection closed"
        got += chunk
    return got


def assert_closed_by_peer(conn, timeout=5):
    """The other side closes `conn` (EOF or reset) without sending anything."""
    conn.settimeout(timeout)
    try:
        data = conn.recv(10)
    except ConnectionResetError:
        return
    assert data == b"", f"expected the connection to be closed, got {data!r}"


class Stream:
    """A long-lived connection that pushes a deterministic byte stream through a
    pair to an echo backend and checks every byte that comes back, in order."""

    def __init__(self, port, chunk=64 * 1024, pause=0.01):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sent = hashlib.sha256()
        self.received = hashlib.sha256()
        self.count_sent = self.count_received = 0
        self.error = None
        self.running = True
        self.chunk, self.pause = chunk, pause
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader.start()
        self.writer.start()

    def _write(self):
        i = 0
        try:
            while self.running:
                data = hashlib.sha256(i.to_bytes(8, "big")).digest() * (self.chunk // 32)
                self.sock.sendall(data)
                self.sent.update(data)
                self.count_sent += len(data)
                i += 1
                time.sleep(self.pause)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.error = f"write: {e!r}"

    def _read(self):
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                self.received.update(data)
                self.count_received += len(data)
        except OSError as e:
            self.error = f"read: {e!r}"

    def finish(self, timeout=30):
        """Stops sending, waits for the echo of everything; returns True if intact."""
        self.running = False
        self.writer.join(timeout)
        self.reader.join(timeout)
        self.sock.close()
        return (self.error is None and self.count_received == self.count_sent
                and self.sent.hexdigest() == self.received.hexdigest())
