"""The inbound listener refuses everything that is not an allowed peer with a
valid certificate speaking TLS 1.3, logs why, and never touches the backend."""

import datetime
import os
import socket
import ssl
import subprocess
import time

import pytest

import lab


class Server:
    def __init__(self, workdir, ca, handshake_timeout="1s"):
        self.backend = lab.Backend("echo")
        cert, key, _ = ca.issue("server-1", os.path.join(workdir, "server"))
        self.port = lab.free_port()
        # The backend check connects once at start and then not for an hour: after
        # that, every accept at the backend is a connection tunneld relayed.
        self.tunneld = lab.Tunneld(workdir, "server", lab.node_config(
            "server-1", ca.cert_path, cert, key,
            inbound={"listen": f"127.0.0.1:{self.port}", "backend": self.backend.address,
                     "allow": ["client-1", "spiffe://example.org/client-2"]},
            extra=f"timeouts: {{handshake: {handshake_timeout}}}\n"
                  f"health:\n  listen: \"127.0.0.1:{lab.free_port()}\"\n  probe_interval: 1h\n")).start()
        self.baseline = self.backend.accepts_so_far()

    def stop(self):
        self.tunneld.stop()
        self.backend.close()

    def tls_client(self, cert=None, key=None, ca_path=None, max_version=None, alpn=("postgresql",)):
        """Connects with Python's ssl; returns the first bytes read (or the exception)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if max_version:
            ctx.maximum_version = max_version
        if cert:
            ctx.load_cert_chain(cert, key)
        if alpn:
            ctx.set_alpn_protocols(list(alpn))
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            with ctx.wrap_socket(raw, server_hostname="server-1") as s:
                s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")  # what postgres would send first
                return s.recv(100)
        except (ssl.SSLError, OSError) as e:
            return e
        finally:
            raw.close()

    def assert_refused(self, reason):
        """The refusal was logged, and the backend never even accepted a
        connection for it (a dial-then-close counts, not only one with data)."""
        self.tunneld.wait_log(rf"inbound handshake failed .*reason={reason}\b")
        assert self.backend.accepts_so_far() == self.baseline, "a refused client made tunneld dial the backend"


@pytest.fixture
def server(workdir, ca):
    s = Server(workdir, ca)
    yield s
    s.stop()


def test_allowed_client_gets_through(server, ca, workdir):
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    assert server.tls_client(cert, key) == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert server.backend.accepted == 1
    assert server.backend.accepts_so_far() == server.baseline + 1  # exactly one dial, the relayed one


def test_allowed_uri_identity_gets_through(server, ca, workdir):
    cert, key, _ = ca.issue("client-2", os.path.join(workdir, "c"), dns=[],
                            uris=["spiffe://example.org/client-2"])
    assert server.tls_client(cert, key) == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


def test_openssl_s_client_with_valid_cert_reaches_backend(server, ca, workdir):
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    proc = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-cert", cert,
                             "-key", key, "-CAfile", ca.cert_path, "-verify_return_error",
                             "-alpn", "postgresql", "-servername", "server-1", "-quiet"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        proc.stdin.write("hello through s_client\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "hello through s_client\n"  # echoed by the backend
    finally:
        proc.kill()
        proc.wait()
    assert server.backend.accepted == 1
    assert server.backend.accepts_so_far() == server.baseline + 1  # exactly one dial, the relayed one


def test_rejects_client_without_certificate(server):
    server.tls_client()
    server.assert_refused("no_certificate")


def test_rejects_certificate_from_foreign_ca(server, workdir):
    foreign = lab.CA(os.path.join(workdir, "foreign"), name="someone else's CA")
    cert, key, _ = foreign.issue("client-1")
    server.tls_client(cert, key)
    server.assert_refused("unknown_ca")


def test_rejects_expired_certificate(server, ca, workdir):
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "old"), not_before=past,
                            not_after=past + datetime.timedelta(days=1))
    server.tls_client(cert, key)
    server.assert_refused("expired")


def test_rejects_valid_certificate_with_identity_not_allowed(server, ca, workdir):
    cert, key, _ = ca.issue("intruder-1", os.path.join(workdir, "i"))
    server.tls_client(cert, key)
    server.assert_refused("identity_not_allowed")
    assert server.tunneld.log_lines(r"identity_not_allowed detail=\"dns:intruder-1\"")


def test_rejects_wildcard_certificate_even_if_it_would_cover_the_name(server, ca, workdir):
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "w"), dns=["*"], cn="client-1")
    server.tls_client(cert, key)
    server.assert_refused("identity_not_allowed")


def test_rejects_tls12_only_client(server, ca, workdir):
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2",
                        "-cert", cert, "-key", key],
                       input="", capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    server.assert_refused("protocol_version")


def test_rejects_plaintext_postgres_startup(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f" + b"\x00" * 64)  # SSLRequest, then junk
        try:
            assert s.recv(100) != b"N"  # never the postgres answer
        except OSError:
            pass
    server.assert_refused("not_tls")


def test_rejects_http_garbage(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            s.recv(100)
        except OSError:
            pass
    server.assert_refused("not_tls")


def test_silent_client_is_dropped_after_handshake_timeout(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        lab.assert_closed_by_peer(s)
        elapsed = time.monotonic() - started
    server.assert_refused("handshake_timeout")
    assert 0.8 < elapsed < 5, f"closed after {elapsed:.2f}s, expected about 1s"


def test_outbound_refuses_server_with_unexpected_identity(workdir, ca, cleanup):
    """The client side checks the server too: a peer presenting another name is refused."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False)
    text = open(pair.client.config_path).read().replace("name: server-1", "name: server-2")
    open(pair.client.config_path, "w").write(text)
    pair.server.start()
    pair.client.start()
    cleanup.append(pair.stop)
    with pair.connect(timeout=5) as c:
        lab.assert_closed_by_peer(c)
    pair.client.wait_log(r'outbound handshake failed peer=server-2 .*reason=identity_not_allowed detail="dns:server-1"')
    assert backend.accepted == 0


def test_outbound_logs_peer_rejected_when_server_refuses_our_identity(workdir, ca, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, server_allow=("someone-else",))
    cleanup.append(pair.stop)
    with pair.connect(timeout=5) as c:
        c.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
        lab.assert_closed_by_peer(c)
    pair.server.wait_log(r'inbound handshake failed .*reason=identity_not_allowed detail="dns:client-1"')
    pair.client.wait_log(r"outbound close peer=server-1 .*reason=peer_rejected detail=.*alert")
    assert backend.accepted == 0


def test_rejects_finite_field_key_exchange_before_any_certificate_check(server, ca, workdir):
    """ffdhe8192 costs the server ~200x an X25519 exchange, and it would be spent
    for anyone before their certificate is checked: only EC groups are offered."""
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-groups", "ffdhe8192",
                        "-cert", cert, "-key", key, "-alpn", "postgresql"],
                       input="", capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    server.assert_refused("no_shared_group")
    # The same client with X25519 gets through.
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-groups", "X25519",
                        "-cert", cert, "-key", key, "-alpn", "postgresql", "-brief"],
                       input="", capture_output=True, text=True, timeout=15)
    assert "Server Temp Key: X25519" in r.stderr + r.stdout, r.stderr


def test_rejects_data_connection_without_alpn(server, ca, workdir):
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    server.tls_client(cert, key, alpn=None)
    server.assert_refused("no_alpn")


def test_own_identity_in_another_case_may_not_relay_data(server, ca, workdir):
    """The "own identity may only probe" rule compares like identity matching:
    SERVER-1 is server-1."""
    cert, key, _ = ca.issue("SERVER-1", os.path.join(workdir, "s"))
    server.tls_client(cert, key)
    server.tunneld.wait_log(r'inbound handshake failed peer=server-1 .*reason=identity_not_allowed '
                            r'detail="this node\'s own identity may only probe"')
    assert server.backend.accepted == 0


def test_resumed_session_of_an_expired_certificate_is_refused(workdir, ca, cleanup):
    """A ticket must not outlive the certificate: resumption re-checks notAfter."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, ca=ca, start=False)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "client"), not_before=now - datetime.timedelta(minutes=5),
                            not_after=now + datetime.timedelta(seconds=4))
    pair.server.start()
    pair.client.start()
    cleanup.append(pair.stop)
    with pair.connect() as c:  # a full handshake: the client now holds a ticket
        c.sendall(b"before")
        assert c.recv(10) == b"before"
    lab.wait_for(lambda: datetime.datetime.now(datetime.timezone.utc) > now + datetime.timedelta(seconds=5),
                 timeout=10, interval=0.2, what="the client certificate to expire")
    with pair.connect() as c:
        c.sendall(b"after")
        lab.assert_closed_by_peer(c)
    pair.server.wait_log(r'inbound handshake failed .*reason=expired detail="resumed session of an expired '
                         r'certificate"')
    assert backend.accepted == 1
