"""What a certificate may not get: a revoked peer loses its live connections
and probes without a restart, a CRL past its nextUpdate is refused, and a CSR
cannot obtain another node's identity."""

import datetime
import os
import shutil
import subprocess

import pytest

import lab
from cert_lab import echo_pair, make_pki

cli = lab.tunneld_cli


def test_revoked_peer_is_refused_and_its_live_connection_closed_without_restart(workdir, cleanup):
    ca_dir, files = make_pki(workdir)
    crl = os.path.join(workdir, "ca.crl")
    assert cli("certs", "crl", "--ca", ca_dir, "--out", crl).returncode == 0
    pair = echo_pair(workdir, files, cleanup, start=False)
    text = open(pair.server.config_path).read().replace(f"  key: {files['server'][1]}\n",
                                                          f"  key: {files['server'][1]}\n  crl: {crl}\n")
    open(pair.server.config_path, "w").write(text)
    pair.server.start()
    pair.client.start()
    live = pair.connect()
    live.sendall(b"before")
    assert live.recv(10) == b"before"

    serial = cli("certs", "show", files["client"][0]).stdout.split("serial    ")[1].split()[0]
    r = cli("certs", "revoke", "--ca", ca_dir, "--serial", serial)
    assert r.returncode == 0, r.stderr
    assert cli("certs", "crl", "--ca", ca_dir, "--out", crl).returncode == 0
    pair.server.wait_log(r"reload \(files changed\): TLS material replaced")
    pair.server.wait_log(r"inbound close peer=client-1 .*reason=revoked")
    live.settimeout(5)
    assert live.recv(10) == b""  # the client side is closed at once, through the client tunneld
    live.close()
    with pair.connect() as again:
        again.sendall(b"x")
        again.settimeout(5)
        lab.assert_closed_by_peer(again)
    pair.server.wait_log(r"inbound handshake failed peer=- .*reason=revoked")
    assert "revoked serial(s)" in cli("certs", "show", crl).stdout


def _crl(ca, next_update):
    from cryptography import x509 as cx
    from cryptography.hazmat.primitives import hashes, serialization
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (cx.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
           .last_update(min(now, next_update) - datetime.timedelta(days=1)).next_update(next_update)
           .sign(ca.key, hashes.SHA256()))
    return crl.public_bytes(serialization.Encoding.PEM)


def test_crl_past_next_update_is_refused_and_one_close_to_it_is_warned_about(workdir, ca, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    crl = os.path.join(workdir, "ca.crl")
    now = datetime.datetime.now(datetime.timezone.utc)
    with open(crl, "wb") as f:
        f.write(_crl(ca, now - datetime.timedelta(hours=1)))
    pair = lab.Pair(workdir, backend.address, ca=ca, start=False, extra_server=f"")
    text = open(pair.server.config_path).read().replace(f"  key: {pair.server_cert[1]}\n",
                                                          f"  key: {pair.server_cert[1]}\n  crl: {crl}\n")
    open(pair.server.config_path, "w").write(text)
    r = cli("--peer", pair.server.config_path)
    assert r.returncode == 1 and "this CRL expired (nextUpdate passed); with it every peer would be refused" in r.stderr
    r = cli("check", "--peer", pair.server.config_path)
    assert r.returncode == 1 and "this CRL expired" in r.stdout
    with open(crl, "wb") as f:
        f.write(_crl(ca, now + datetime.timedelta(hours=20)))
    pair.server.start()
    cleanup.append(pair.server.stop)
    pair.server.wait_log(r"warn.* CRL .* reaches its nextUpdate in 0 day\(s\); after that every peer is refused")
    r = cli("check", "--peer", pair.server.config_path)
    assert "warn  tls.crl reaches its nextUpdate in 0 day(s)" in r.stdout


def csr_with_sans(path, cn, dns=(), uris=()):
    """A CSR as a hostile node could make it: any CN and SAN values, signed by a fresh key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(d) for d in dns] + [x509.UniformResourceIdentifier(u) for u in uris]
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    with open(path, "wb") as f:
        f.write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("case", ["second_dns", "injected_uri", "uri_san"])
def test_a_csr_cannot_obtain_another_nodes_identity(workdir, case):
    """A compromised standby sends a CSR asking for the primary's name too: nothing
    is signed, and even with --accept-csr-sans only the names asked for are."""
    ca_dir, _ = make_pki(workdir)
    csr = os.path.join(workdir, "evil.csr")
    if case == "second_dns":
        csr_with_sans(csr, "standby-1", dns=["standby-1", "primary-1"])
    elif case == "injected_uri":
        csr_with_sans(csr, "standby-1", dns=["standby-1", "y,URI:spiffe://x/admin,DNS:z"])
    else:
        csr_with_sans(csr, "standby-1", dns=["standby-1"], uris=["spiffe://example.org/admin"])
    out = os.path.join(workdir, "signed")
    r = cli("certs", "issue", "--ca", ca_dir, "--csr", csr, "--name", "standby-1", "--out", out)
    assert r.returncode == 1, r.stdout
    assert "subjectAltNames differ from what you asked for" in r.stderr and "nothing signed" in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(out, "standby-1.crt"))
    r = cli("certs", "issue", "--ca", ca_dir, "--csr", csr, "--name", "standby-1", "--accept-csr-sans", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "--accept-csr-sans: the CSR also asks for" in r.stdout
    assert "SANs: DNS:standby-1\n" in r.stdout, r.stdout
    shown = cli("certs", "show", os.path.join(out, "standby-1.crt")).stdout
    assert "primary-1" not in shown and "URI" not in shown.upper().replace("SECURITY", "") and "admin" not in shown
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           os.path.join(out, "standby-1.crt")], capture_output=True, text=True).stdout
    assert text.split("\n")[1].strip() == "DNS:standby-1", text


def test_a_csr_for_another_name_or_without_name_is_refused(workdir):
    ca_dir, _ = make_pki(workdir)
    csr = os.path.join(workdir, "c.csr")
    csr_with_sans(csr, "primary-1", dns=["primary-1"])
    r = cli("certs", "issue", "--ca", ca_dir, "--csr", csr, "--name", "standby-1", "--out", workdir)
    assert r.returncode == 1 and "is for 'primary-1', not 'standby-1'" in r.stderr, r.stderr
    r = cli("certs", "issue", "--ca", ca_dir, "--csr", csr, "--out", workdir)
    assert r.returncode == 1 and "give --name" in r.stderr, r.stderr


def test_revoked_peer_loses_its_probe_in_both_directions(workdir, cleanup):
    """Revocation closes probe connections like data connections: the revoked
    client's probe on the server, and our probe to a server revoked on our CRL."""
    ca_dir, files = make_pki(workdir)
    crls = {"server": os.path.join(workdir, "server.crl"), "client": os.path.join(workdir, "client.crl")}
    pair = echo_pair(workdir, files, cleanup, start=False)
    for t, node in ((pair.server, "server"), (pair.client, "client")):
        assert cli("certs", "crl", "--ca", ca_dir, "--out", crls[node]).returncode == 0
        key = files[node][1]
        text = open(t.config_path).read().replace(f"  key: {key}\n", f"  key: {key}\n  crl: {crls[node]}\n")
        open(t.config_path, "w").write(text)
    pair.server.start()
    pair.client.start()
    assert pair.client.http("/readiness")[0] == 200

    def revoke(node, publish_to):
        serial = cli("certs", "show", files[node][0]).stdout.split("serial    ")[1].split()[0]
        assert cli("certs", "revoke", "--ca", ca_dir, "--serial", serial).returncode == 0
        assert cli("certs", "crl", "--ca", ca_dir, "--out", crls[publish_to]).returncode == 0

    # The server learns that the client is revoked: the client's live probe is closed.
    revoke("client", publish_to="server")
    pair.server.wait_log(r"inbound probe from client-1 closed: its certificate is now revoked", timeout=15)
    pair.client.wait_log(r"probe: peer server-1 is down", timeout=10)
    lab.wait_for(lambda: pair.client.http("/readiness")[0] == 503, timeout=10, what="readiness 503")
    pair.stop()


def test_our_probe_to_a_peer_revoked_on_our_crl_goes_down(workdir, cleanup):
    ca_dir, files = make_pki(workdir)
    crl = os.path.join(workdir, "client.crl")
    assert cli("certs", "crl", "--ca", ca_dir, "--out", crl).returncode == 0
    pair = echo_pair(workdir, files, cleanup, start=False)
    key = files["client"][1]
    text = open(pair.client.config_path).read().replace(f"  key: {key}\n", f"  key: {key}\n  crl: {crl}\n")
    open(pair.client.config_path, "w").write(text)
    pair.server.start()
    pair.client.start()
    assert pair.client.http("/readiness")[0] == 200
    serial = cli("certs", "show", files["server"][0]).stdout.split("serial    ")[1].split()[0]
    assert cli("certs", "revoke", "--ca", ca_dir, "--serial", serial).returncode == 0
    assert cli("certs", "crl", "--ca", ca_dir, "--out", crl).returncode == 0
    pair.client.wait_log(r"probe: peer server-1 is down: the peer's certificate is revoked", timeout=15)
    lab.wait_for(lambda: pair.client.http("/readiness")[0] == 503, timeout=10, what="readiness 503")


def test_readme_ca_rollover_works_with_tls_crl_set(workdir, cleanup):
    """The README's rollover steps with revocation on: two CAs made with default
    names (unique now) and both CRLs in tls.crl; no handshake refused at any step."""
    pki1, pki2 = os.path.join(workdir, "pki"), os.path.join(workdir, "pki-2")
    assert cli("certs", "init-ca", "--out", pki1).returncode == 0
    files = {"ca": os.path.join(workdir, "ca.crt")}
    shutil.copy(os.path.join(pki1, "ca.crt"), files["ca"])
    for node in ("server-1", "client-1"):
        assert cli("certs", "issue", "--ca", pki1, "--name", node, "--out", os.path.join(workdir, node)).returncode == 0
    files["server"] = (os.path.join(workdir, "server-1", "server-1.crt"), os.path.join(workdir, "server-1", "server-1.key"))
    files["client"] = (os.path.join(workdir, "client-1", "client-1.crt"), os.path.join(workdir, "client-1", "client-1.key"))
    crl = os.path.join(workdir, "ca.crl")
    assert cli("certs", "crl", "--ca", pki1, "--out", crl).returncode == 0
    pair = echo_pair(workdir, files, cleanup, start=False)
    for t, node in ((pair.server, "server"), (pair.client, "client")):
        key = files[node][1]
        text = open(t.config_path).read().replace(f"  key: {key}\n", f"  key: {key}\n  crl: {crl}\n")
        open(t.config_path, "w").write(text)
    pair.server.start()
    pair.client.start()

    def works():
        with pair.connect(timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(4) == b"ping"

    def replace(path, text):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.rename(path + ".tmp", path)

    def reloads(count):
        for t in (pair.server, pair.client):
            t.wait_log(r"reload \(files changed\): TLS material replaced", count=count, timeout=15)

    works()
    # 1. The new CA, trusted next to the old one; its CRL next to the old CRL.
    assert cli("certs", "init-ca", "--out", pki2).returncode == 0
    crl2 = os.path.join(workdir, "ca-2.crl")
    assert cli("certs", "crl", "--ca", pki2, "--out", crl2).returncode == 0
    replace(crl, open(crl).read() + open(crl2).read())
    replace(files["ca"], open(files["ca"]).read() + open(os.path.join(pki2, "ca.crt")).read())
    reloads(1)  # both files changed together: one settled reload
    works()
    # 2. Reissue every node from the new CA.
    for t in (pair.server, pair.client):
        r = cli("certs", "rotate", "--peer", t.config_path, "--ca", pki2)
        assert r.returncode == 0, r.stdout + r.stderr
        works()
    reloads(2)
    # 3. Only the new CA (and its CRL) remain.
    replace(files["ca"], open(os.path.join(pki2, "ca.crt")).read())
    replace(crl, open(crl2).read())
    reloads(3)
    works()
    for t in (pair.server, pair.client):
        assert not t.log_lines(r"handshake failed"), t.read_log()
    shown = cli("certs", "show", crl).stdout
    assert "revoked serial(s)" in shown
    text = subprocess.run(["openssl", "crl", "-noout", "-text", "-in", crl2], capture_output=True, text=True).stdout
    assert "X509v3 Authority Key Identifier" in text and "X509v3 CRL Number" in text, text
