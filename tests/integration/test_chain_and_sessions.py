"""What a peer's identity and keys may outlive (issue 23, items 9, 10 and 12): a
certificate that expires while connected closes its connections; long streams
are rekeyed; revocation on a whole three-level chain, and what a TLS session may outlive: a revoked intermediate or leaf is refused; a resumed
session of a certificate revoked since is refused although the client offered
it; a reload or a restart ends every resumption; tickets live an hour at most;
the server's session cache keeps the 256 newest."""

import datetime
import os
import signal
import socket
import re
import ssl
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import lab
from lab import echo_once

NOW = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer_name, issuer_key, public_key, ca=None, dns=None):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(public_key).serial_number(x509.random_serial_number())
         .not_valid_before(NOW).not_valid_after(NOW + datetime.timedelta(days=10)))
    if ca is not None:
        b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=ca), critical=True)
             .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    else:
        b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
             .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False))
    return b.sign(issuer_key, hashes.SHA256())


def _pem(*objs):
    return b"".join(o.public_bytes(serialization.Encoding.PEM) for o in objs)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Chain:
    """root CA (pathlen 1) -> intermediate CA (pathlen 0) -> client-1; the server's
    own certificate straight from the root. Files in `directory`."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert("test root CA", _name("test root CA"), self.root_key, self.root_key.public_key(), ca=1)
        self.mid_key = ec.generate_private_key(ec.SECP256R1())
        self.mid = _cert("test intermediate CA", self.root.subject, self.root_key, self.mid_key.public_key(), ca=0)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        self.leaf = _cert("client-1", self.mid.subject, self.mid_key, leaf_key.public_key(), dns="client-1")
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _cert("server-1", self.root.subject, self.root_key, server_key.public_key(), dns="server-1")
        self.ca_path = self._write("root.crt", _pem(self.root))
        self.client_cert = self._write("client-1.crt", _pem(self.leaf, self.mid))  # the chain follows the leaf
        self.client_key = self._write("client-1.key", _key_pem(leaf_key), 0o600)
        self.server_cert = self._write("server-1.crt", _pem(server))
        self.server_key = self._write("server-1.key", _key_pem(server_key), 0o600)
        self.crl_path = os.path.join(directory, "chain.crl")
        self.write_crls()

    def _write(self, name, data, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def _crl(self, issuer, key, revoked, number):
        b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
             .last_update(NOW).next_update(NOW + datetime.timedelta(days=7))
             .add_extension(x509.CRLNumber(number), critical=False))
        for cert in revoked:
            b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(cert.serial_number)
                                          .revocation_date(NOW).build())
        return b.sign(key, hashes.SHA256())

    def write_crls(self, revoke_intermediate=False, revoke_leaf=False, number=1):
        """One CRL per CA of the chain (a CRL check of the whole chain needs both)."""
        root_crl = self._crl(self.root, self.root_key, [self.mid] if revoke_intermediate else [], number)
        mid_crl = self._crl(self.mid, self.mid_key, [self.leaf] if revoke_leaf else [], number)
        tmp = self.crl_path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(_pem(root_crl, mid_crl))
        os.replace(tmp, self.crl_path)


def server_for(workdir, chain, backend):
    port = lab.free_port()
    text = lab.node_config("server-1", chain.ca_path, chain.server_cert, chain.server_key,
                           inbound={"listen": f"127.0.0.1:{port}", "backend": backend.address, "allow": ["client-1"]})
    text = text.replace(f"  key: {chain.server_key}\n", f"  key: {chain.server_key}\n  crl: {chain.crl_path}\n")
    return lab.Tunneld(workdir, "server", text), port


def client_context(chain):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(chain.client_cert, chain.client_key)
    ctx.load_verify_locations(chain.ca_path)
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["postgresql"])
    return ctx


def exchange(ctx, port, session=None):
    """One connection: sends a byte, reads the echo. Returns (ok, session, reused)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with ctx.wrap_socket(raw, server_hostname="server-1", session=session) as s:
            s.sendall(b"x")
            ok = s.recv(1) == b"x"  # the ticket arrives with (before) the echo
            got = s.session, s.session_reused
            # A clean end (close_notify both ways): OpenSSL drops a session from
            # the server's cache when a connection ends without one.
            s.unwrap()
            return ok, *got
    except (ssl.SSLError, OSError):
        return False, None, False
    finally:
        raw.close()


def test_a_revoked_intermediate_or_leaf_in_a_three_level_chain_is_refused(workdir, cleanup):
    """`certs` makes pathlen:0 CAs, so nothing tested an intermediate: here the
    client presents leaf + intermediate, tls.ca holds only the root, and tls.crl
    one CRL per CA. Revoking the intermediate (by the root) or the leaf (by the
    intermediate) refuses the client; a chain with nothing revoked gets through."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    chain = Chain(os.path.join(workdir, "chain"))
    server, port = server_for(workdir, chain, backend)
    server.start()
    cleanup.append(server.stop)
    ctx = client_context(chain)
    assert exchange(ctx, port)[0], server.read_log()[-2000:]
    for n, (mid, leaf) in enumerate(((True, False), (False, True)), start=1):
        chain.write_crls(revoke_intermediate=mid, revoke_leaf=leaf, number=n + 1)
        server.wait_log(r"reload \(files changed\): TLS material replaced", count=n, timeout=15)
        assert not exchange(client_context(chain), port)[0]
        server.wait_log(r"inbound handshake failed .*reason=revoked", count=n)
    chain.write_crls(number=9)
    server.wait_log(r"reload \(files changed\): TLS material replaced", count=3, timeout=15)
    assert exchange(client_context(chain), port)[0]
    assert backend.accepted == 2


def test_what_a_session_ticket_may_outlive(workdir, cleanup):
    """Resumption is an id into the server's own cache: a ticket announces at
    most an hour; a reload (new TLS context) and a restart each end every
    resumption; the cache keeps the 256 newest sessions; and a session offered
    after its certificate was revoked is refused (offered: the client held a
    session from a full handshake of this very context)."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    chain = Chain(os.path.join(workdir, "chain"))
    server, port = server_for(workdir, chain, backend)
    server.start()
    cleanup.append(server.stop)
    ctx = client_context(chain)
    ok, session, reused = exchange(ctx, port)
    assert ok and not reused and session is not None and session.has_ticket
    assert 0 < session.ticket_lifetime_hint <= 3600, session.ticket_lifetime_hint
    ok, again, reused = exchange(ctx, port, session)
    assert ok and reused, "a second connection should resume"

    # A reload: a new context and cache, so the old ticket is not honoured (a full
    # handshake follows, and succeeds).
    server.signal(signal.SIGHUP)
    server.wait_log(r"reload \(SIGHUP\): TLS material replaced")
    ok, session, reused = exchange(ctx, port, again)
    assert ok and not reused, "a ticket outlived a reload"

    # The cache keeps 256: after 300 more full handshakes the first is gone, the last is not.
    first = session
    last = None
    for _ in range(300):
        ok, last, reused = exchange(ctx, port)  # no session given: a full handshake
        assert ok and not reused
    ok, _, reused = exchange(ctx, port, first)
    assert ok and not reused, "a session older than the 256 newest was resumed"
    ok, _, reused = exchange(ctx, port, last)
    assert ok and reused, "the newest session was not resumed"

    # A restart: nothing survives it.
    ok, session, _ = exchange(ctx, port)
    server.stop()
    server.start()
    ok, _, reused = exchange(ctx, port, session)
    assert ok and not reused, "a ticket outlived a restart"

    # Revoked since the session was made: the client offers it, and is refused.
    ok, session, _ = exchange(ctx, port)
    assert ok and session is not None and session.has_ticket
    accepted = backend.accepted
    chain.write_crls(revoke_leaf=True, number=5)
    server.wait_log(r"reload \(files changed\): TLS material replaced", timeout=15)
    ok, _, reused = exchange(ctx, port, session)
    assert not ok and not reused
    server.wait_log(r"inbound handshake failed .*reason=revoked")
    assert backend.accepted == accepted


def test_long_streams_are_rekeyed_over_a_live_relay_and_the_data_is_unchanged(workdir, cleanup):
    """A replication connection lives for months; AES-GCM keys must change well
    before ~390 GB and OpenSSL never sends KeyUpdate by itself. With
    tls.rekey_bytes: 1MB, 32 MiB each way through a pair are rekeyed about 32
    times by each end; the bytes arrive unchanged and both ends keep verifying."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False)
    cleanup.append(pair.stop)
    for t in (pair.server, pair.client):
        text = re.sub(r"(\n  key: [^\n]+\n)", r"\1  rekey_bytes: 1MB\n  rekey_interval: 1h\n",
                      open(t.config_path).read(), count=1)
        with open(t.config_path, "w") as f:
            f.write(text)
    pair.server.start()
    pair.client.start()
    block = bytes(range(256)) * 256  # 64 KiB
    with pair.connect() as c:
        got = bytearray()

        def read_all():
            while len(got) < 512 * len(block):
                chunk = c.recv(1 << 20)
                if not chunk:
                    return
                got.extend(chunk)

        reader = threading.Thread(target=read_all)
        reader.start()
        for _ in range(512):
            c.sendall(block)
        reader.join(timeout=60)
        assert bytes(got) == block * 512
        assert echo_once(c, b"still verifying") == b"still verifying"
    for t in (pair.server, pair.client):
        m = re.search(r"^tunneld_tls_key_updates_total (\d+)", t.http("/metrics")[2], re.M)
        assert m and int(m.group(1)) >= 25, (t.name, m and m.group(0))
        assert t.status()["tls"]["key_updates"] >= 25
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=finished")
    assert not pair.server.log_lines(r"reason=peer_error|reason=local_error")


def test_a_peer_certificate_that_expires_while_connected_loses_its_live_connections(workdir, cleanup):
    """Expiry was checked at handshake and resumption only: a stream opened a
    minute before the peer's notAfter lived on with an expired identity. Now the
    live data connection and the peer's probe are closed with reason=expired
    within about a second of notAfter, in the same way a new CRL closes them."""
    import datetime
    ca = lab.CA(os.path.join(workdir, "ca"))
    server_cert = ca.issue("server-1", os.path.join(workdir, "server"))
    now = datetime.datetime.now(datetime.timezone.utc)
    lifetime = 12
    client_cert = ca.issue("client-1", os.path.join(workdir, "client"), not_before=now - datetime.timedelta(minutes=5),
                           not_after=now + datetime.timedelta(seconds=lifetime))
    expires_at = time.time() + lifetime
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, files={"ca": ca.cert_path, "server": server_cert[:2],
                                                     "client": client_cert[:2]})
    cleanup.append(pair.stop)
    c = pair.connect(timeout=30)
    cleanup.append(c.close)
    assert echo_once(c, b"before notAfter") == b"before notAfter"
    assert time.time() < expires_at - 2, "the pair took too long to start for this test"
    line = pair.server.wait_log(r"inbound close peer=client-1 .*reason=expired", timeout=lifetime + 10)[0]
    closed_at = time.time()
    assert closed_at >= expires_at - 1.5 and closed_at - expires_at < 4, (closed_at - expires_at, line)
    assert "the peer's certificate expired while connected" in line
    c.settimeout(5)
    assert c.recv(100) == b""  # the local client sees the end at once
    pair.server.wait_log(r"inbound probe from client-1 closed: its certificate expired while connected")
    m = re.search(r'^tunneld_connection_closes_total\{[^}]*reason="expired"[^}]*\} (\d+)',
                  pair.server.http("/metrics")[2], re.M)
    assert m and int(m.group(1)) >= 1
