"""`tunneld certs`: a private CA whose certificates standard tools accept, and
rotation, invalid new material and CA rollover on running daemons without losing
a byte. Revocation, CRLs and CSRs are in test_revocation_and_csr.py."""

import datetime
import os
import shutil
import subprocess
import threading
import time

import pytest

import lab

from cert_lab import echo_pair, make_pki

cli = lab.tunneld_cli


def openssl_text(path):
    return subprocess.run(["openssl", "x509", "-in", path, "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout


def test_ca_and_node_certificates_have_the_promised_shape_and_verify_with_openssl(workdir):
    ca_dir, files = make_pki(workdir)
    assert oct(os.stat(os.path.join(ca_dir, "ca.key")).st_mode & 0o777) == "0o600"
    assert oct(os.stat(files["server"][1]).st_mode & 0o777) == "0o600"
    ca = openssl_text(files["ca"])
    assert "CA:TRUE, pathlen:0" in ca
    assert "Certificate Sign, CRL Sign" in ca
    assert "X509v3 Subject Key Identifier" in ca
    leaf = openssl_text(files["server"][0])
    assert "DNS:server-1, IP Address:127.0.0.1" in leaf
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in leaf
    assert "X509v3 Authority Key Identifier" in leaf and "CA:FALSE" in leaf
    serial = leaf.split("Serial Number:")[1].split("\n")[1].strip()
    assert len(serial.replace(":", "")) == 32  # 128-bit random serial
    not_after = subprocess.run(["openssl", "x509", "-in", files["server"][0], "-noout", "-enddate"],
                               capture_output=True, text=True).stdout
    end = datetime.datetime.strptime(not_after.split("=")[1].strip(), "%b %d %H:%M:%S %Y %Z")
    assert 89 <= (end - datetime.datetime.utcnow()).days <= 90  # 90-day default
    r = subprocess.run(["openssl", "verify", "-CAfile", files["ca"], "-purpose", "sslclient",
                        files["client"][0]], capture_output=True, text=True)
    assert r.stdout.strip().endswith(": OK"), r.stdout + r.stderr


def test_certificates_work_with_openssl_s_server_and_s_client(workdir):
    _, files = make_pki(workdir)
    port = lab.free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-naccept", "1",
                               "-cert", files["server"][0], "-key", files["server"][1], "-CAfile", files["ca"],
                               "-Verify", "1", "-verify_return_error", "-tls1_3", "-www"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lab.wait_for(lambda: server.stdout.readline().strip() == "ACCEPT", what="s_server listening")
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-cert", files["client"][0],
                            "-key", files["client"][1], "-CAfile", files["ca"], "-verify_return_error",
                            "-verify_hostname", "server-1", "-quiet"],
                           input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=20)
        assert "HTTP/1.0 200 ok" in r.stdout, r.stdout + r.stderr
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize("key_type", ["ec-p256", "ed25519"])
def test_tunneld_pair_runs_on_tunneld_made_certificates(workdir, cleanup, key_type):
    _, files = make_pki(workdir, key_type)
    pair = echo_pair(workdir, files, cleanup)
    with pair.connect() as c:
        c.sendall(b"made by tunneld certs")
        assert c.recv(100) == b"made by tunneld certs"


def test_show_describes_and_flags_problems(workdir, ca):
    _, files = make_pki(workdir)
    r = cli("certs", "show", files["server"][0], files["ca"], files["server"][1])
    assert r.returncode == 0, r.stdout
    for text in ("subject   CN = server-1", "SANs      dns:server-1 ip:127.0.0.1", "issuer    CN = test CA",
                 "days left)", "spki      sha256 ", "key       ec-p256", "issued by a CA given here: ok",
                 "private key, ec-p256"):
        assert text in r.stdout, r.stdout
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    expired, _, _ = ca.issue("old-1", os.path.join(workdir, "old"), not_before=past,
                             not_after=past + datetime.timedelta(days=1))
    r = cli("certs", "show", expired, files["ca"])
    assert r.returncode == 1
    assert "PROBLEM   expired" in r.stdout
    assert "PROBLEM   not issued by any CA given here" in r.stdout


def test_clear_errors_for_bad_input(workdir):
    ca_dir, _ = make_pki(workdir)
    r = cli("certs", "init-ca", "--out", ca_dir)
    assert r.returncode == 1 and "already holds a CA" in r.stderr
    empty = os.path.join(workdir, "empty")
    os.makedirs(empty)
    r = cli("certs", "issue", "--ca", empty, "--name", "n1", "--out", workdir)
    assert r.returncode == 1
    assert f"{empty}/ca.key: cannot read private key: No such file or directory" in r.stderr
    assert "made by `tunneld certs init-ca`" in r.stderr
    os.chmod(os.path.join(ca_dir, "ca.key"), 0o644)
    r = cli("certs", "issue", "--ca", ca_dir, "--name", "n1", "--out", workdir)
    assert r.returncode == 1 and f"run chmod 600 {ca_dir}/ca.key" in r.stderr
    os.chmod(os.path.join(ca_dir, "ca.key"), 0o600)
    r = cli("certs", "issue", "--ca", ca_dir, "--name", "bad_name!", "--out", workdir)
    assert r.returncode == 1 and "'bad_name!' is not a valid node name" in r.stderr
    r = cli("certs", "issue", "--ca", ca_dir, "--name", "n1", "--out", files_dir := "/etc/hostname/x")
    assert r.returncode == 1 and f"{files_dir}: cannot create directory" in r.stderr
    r = cli("certs", "issue", "--ca", ca_dir, "--name", "n1", "--ip", "300.1.1.1", "--out", workdir)
    assert r.returncode == 1 and "--ip '300.1.1.1' is not an IPv4 or IPv6 address" in r.stderr


def test_rotation_under_a_live_stream_drops_nothing(workdir, cleanup):
    ca_dir, files = make_pki(workdir)
    pair = echo_pair(workdir, files, cleanup)
    old_server = lab.presented_serial(pair.tls_port, files["ca"], *files["client"])
    stream = lab.Stream(pair.local_port)
    r = cli("certs", "rotate", "--peer", pair.server.config_path, "--ca", ca_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "confirmed: the daemon on 127.0.0.1:" in r.stdout
    new_server = lab.presented_serial(pair.tls_port, files["ca"], *files["client"])
    assert new_server != old_server and new_server in r.stdout
    assert os.path.exists(files["server"][0] + ".prev") and os.path.exists(files["server"][1] + ".prev")
    assert oct(os.stat(files["server"][1]).st_mode & 0o777) == "0o600"
    r = cli("certs", "rotate", "--peer", pair.client.config_path, "--ca", ca_dir)
    assert r.returncode == 0 and "no inbound listener to confirm against" in r.stdout, r.stdout + r.stderr
    pair.client.wait_log(r"reload \(files changed\): TLS material replaced")
    time.sleep(0.5)  # keep the stream flowing across the reloads for a moment
    with pair.connect() as fresh:  # new connections use the new certificates on both ends
        fresh.sendall(b"after rotation")
        assert fresh.recv(100) == b"after rotation"
    assert stream.finish(), f"stream broken: {stream.error}, {stream.count_sent} sent, {stream.count_received} back"
    assert stream.count_sent > 0
    # One relayed connection from before the rotation, still the same one at the end.
    pair.server.wait_log(r"inbound close .*reason=finished", count=2)
    # Only the direct serial checks (no bytes) end otherwise: Python closes without close_notify.
    for t in (pair.server, pair.client):
        assert all(" rx=0 tx=0 " in line for line in t.log_lines(r"reason=(?!finished)")), t.read_log()


def test_csr_and_install_keep_the_key_on_the_node(workdir, cleanup):
    ca_dir, files = make_pki(workdir)
    pair = echo_pair(workdir, files, cleanup)
    csr = os.path.join(workdir, "server-1.csr")
    r = cli("certs", "csr", "--peer", pair.server.config_path, "--out", csr)
    assert r.returncode == 0, r.stderr
    assert oct(os.stat(files["server"][1] + ".next").st_mode & 0o777) == "0o600"
    signed = os.path.join(workdir, "signed")
    r = cli("certs", "issue", "--ca", ca_dir, "--csr", csr, "--name", "server-1", "--ip", "127.0.0.1",
            "--out", signed)
    assert r.returncode == 0, r.stderr
    assert "SANs: DNS:server-1, IP:127.0.0.1" in r.stdout, r.stdout
    assert not os.path.exists(os.path.join(signed, "server-1.key"))  # the CA never saw a key
    r = cli("certs", "install", "--peer", pair.server.config_path, "--cert", os.path.join(signed, "server-1.crt"))
    assert r.returncode == 0 and "confirmed" in r.stdout, r.stdout + r.stderr
    assert not os.path.exists(files["server"][1] + ".next")
    # A certificate not made for that CSR is refused, nothing installed.
    cli("certs", "csr", "--peer", pair.server.config_path, "--out", csr)
    r = cli("certs", "install", "--peer", pair.server.config_path, "--cert", files["client"][0])
    assert r.returncode == 1 and "was not issued for the key in" in r.stderr


@pytest.mark.parametrize("case", ["key_mismatch", "unknown_ca", "expired", "two_step_write"])
def test_invalid_new_material_is_refused_and_old_keeps_serving(workdir, cleanup, case):
    ca_dir, files = make_pki(workdir)
    pair = echo_pair(workdir, files, cleanup)
    cert, key = files["server"]
    old = lab.presented_serial(pair.tls_port, files["ca"], *files["client"])
    live = lab.Stream(pair.local_port)
    other = lab.CA(os.path.join(workdir, "other"))
    past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    if case == "key_mismatch":
        shutil.copy(files["client"][0], cert)  # a certificate for another key
        expected = "does not belong"
    elif case == "unknown_ca":
        c, k, _ = other.issue("server-1", os.path.join(workdir, "o"))
        shutil.copy(k, key)
        shutil.copy(c, cert)
        expected = "does not verify against"
    elif case == "expired":
        c, k, _ = other.issue("server-1", os.path.join(workdir, "o"), not_before=past,
                              not_after=past + datetime.timedelta(days=1))
        shutil.copy(k, key)
        shutil.copy(c, cert)
        expected = "does not verify against|has expired"
    if case != "two_step_write":
        pair.server.wait_log(rf"reload \(files changed\) failed, still serving cert serial {old}: .*({expected})")
        assert lab.presented_serial(pair.tls_port, files["ca"], *files["client"]) == old
    else:
        # A new certificate for the same key, written in two steps 300 ms apart.
        r = cli("certs", "csr", "--peer", pair.server.config_path, "--out", os.path.join(workdir, "c.csr"))
        assert r.returncode == 0
        shutil.copy(files["server"][1] + ".next", key)  # (the key alone would not match the old cert)
        os.remove(files["server"][1] + ".next")
        r = cli("certs", "issue", "--ca", ca_dir, "--csr", os.path.join(workdir, "c.csr"),
                "--name", "server-1", "--ip", "127.0.0.1", "--out", os.path.join(workdir, "new"))
        data = open(os.path.join(workdir, "new", "server-1.crt")).read()
        with open(cert, "w") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            # The watcher has seen the half-written file (the settle path, not a timing guess) ...
            pair.server.wait_log(r"TLS files changed; reloading once they stop changing", timeout=15)
            f.write(data[len(data) // 2:])
        # ... and the new certificate is served in the end (a poll may have caught the half file
        # twice in a row: then that reload was refused and the old material kept serving meanwhile).
        pair.server.wait_log(r"reload \(files changed\): TLS material replaced", timeout=15)
        assert lab.presented_serial(pair.tls_port, files["ca"], *files["client"]) != old
    with pair.connect() as c:
        c.sendall(b"served")
        assert c.recv(10) == b"served"
    assert live.finish(), live.error


def test_ca_rollover_with_traffic_flowing_and_no_refused_handshake(workdir, cleanup):
    old_ca = lab.CA(os.path.join(workdir, "ca-old"), name="old CA")
    new_ca = lab.CA(os.path.join(workdir, "ca-new"), name="new CA")
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, ca=old_ca)
    cleanup.append(pair.stop)
    bundles = [os.path.join(workdir, n, "ca.crt") for n in ("server", "client")]
    for b in bundles:
        shutil.copy(old_ca.cert_path, b)
    for t in (pair.server, pair.client):
        text = open(t.config_path).read().replace(old_ca.cert_path, os.path.join(
            workdir, "server" if t is pair.server else "client", "ca.crt"))
        open(t.config_path, "w").write(text)
    pair.server.stop(), pair.client.stop()
    pair.server.start(), pair.client.start()

    stream = lab.Stream(pair.local_port)
    stop = threading.Event()
    failures, successes = [], [0]

    def new_connections():
        while not stop.is_set():
            try:
                with pair.connect(timeout=5) as c:
                    c.sendall(b"ping")
                    if c.recv(4) != b"ping":
                        failures.append("bad echo")
                successes[0] += 1
            except OSError as e:
                failures.append(repr(e))
            time.sleep(0.02)

    loop = threading.Thread(target=new_connections)
    loop.start()

    def reloads(count):
        for t in (pair.server, pair.client):
            t.wait_log(r"reload \(files changed\): TLS material replaced", count=count, timeout=15)

    # 1. Every node trusts both CAs.
    both = open(old_ca.cert_path).read() + open(new_ca.cert_path).read()
    for b in bundles:
        with open(b + ".tmp", "w") as f:
            f.write(both)
        os.rename(b + ".tmp", b)
    reloads(1)
    # 2. Reissue every node certificate from the new CA (certs rotate, confirmed live).
    for t in (pair.server, pair.client):
        r = cli("certs", "rotate", "--peer", t.config_path, "--ca", new_ca.dir)
        assert r.returncode == 0, r.stdout + r.stderr
    reloads(2)
    # 3. Drop the old CA.
    for b in bundles:
        shutil.copy(new_ca.cert_path, b + ".tmp")
        os.rename(b + ".tmp", b)
    reloads(3)
    time.sleep(0.5)
    stop.set()
    loop.join()
    assert failures == [], failures[:5]
    assert successes[0] > 20
    assert stream.finish(), stream.error
    for t in (pair.server, pair.client):
        assert not t.log_lines(r"handshake failed|peer_rejected"), t.log_lines(r"handshake failed|peer_rejected")
    assert "issuer    CN = new CA" in cli("certs", "show", pair.server_cert[0]).stdout


def test_expiry_is_warned_about(workdir, cleanup):
    ca_dir, files = make_pki(workdir)
    r = cli("certs", "issue", "--ca", ca_dir, "--name", "server-1", "--days", "5",
            "--out", os.path.join(workdir, "server-1"), "--ip", "127.0.0.1")
    assert r.returncode == 0
    pair = echo_pair(workdir, files, cleanup)
    pair.server.wait_log(r"warn.* certificate .*server-1.crt \(serial [0-9A-F]+\) expires in 4 day\(s\): rotate it")
    assert not pair.client.log_lines("expires in")
