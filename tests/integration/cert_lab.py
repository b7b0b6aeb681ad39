"""The tests' own certificate authority, made with the cryptography package
(not with tunneld, so tunneld's checks meet an independent issuer): a private
CA and the node certificates it issues (SANs, validity), and the serial a TLS
listener presents. Imported by lab.py as lab.CA and lab.presented_serial."""

import datetime
import os
import socket

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import lab
from lab import serial_hex


class CA:
    """A private CA that issues node certificates (EC P-256), written as PEM files."""

    def __init__(self, directory, name="tunneld test CA", days=30, not_before=None):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = os.path.join(directory, "ca.crt")
        with open(self.cert_path, "wb") as f:
            f.write(self.cert.public_bytes(serialization.Encoding.PEM))
        # The key too, so `tunneld certs rotate --ca DIR` can use this CA.
        fd = os.open(os.path.join(directory, "ca.key"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    def issue(self, name, directory=None, dns=None, uris=None, cn=None, days=30,
              not_before=None, not_after=None, file_stem=None):
        """Issues a node cert. dns=None means [name]; dns=[] means no SAN DNS.
        Returns (cert_path, key_path, serial)."""
        directory = directory or self.dir
        os.makedirs(directory, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
        end = not_after or start + datetime.timedelta(days=days)
        dns = [name] if dns is None else dns
        sans = [x509.DNSName(d) for d in dns] + [x509.UniformResourceIdentifier(u) for u in (uris or [])]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn or name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = file_stem or name
        cert_path = os.path.join(directory, stem + ".crt")
        key_path = os.path.join(directory, stem + ".key")
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return cert_path, key_path, serial_hex(cert.serial_number)


def presented_serial(port, ca_path, cert, key, host="127.0.0.1", server_name="server-1"):
    """Serial (as tunneld logs it) of the certificate a TLS listener presents now."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca_path)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["tunneld-probe"])  # a look at the certificate, not a data connection
    with socket.create_connection((host, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            der = s.getpeercert(binary_form=True)
    return serial_hex(x509.load_der_x509_certificate(der).serial_number)


# tunneld-made PKIs for the certificate tests (test_certs.py, test_revocation_and_csr.py).

def make_pki(workdir, key_type="ec-p256"):
    ca_dir = os.path.join(workdir, "pki-ca")
    r = lab.tunneld_cli("certs", "init-ca", "--out", ca_dir, "--name", "test CA", "--key-type", key_type)
    assert r.returncode == 0, r.stderr
    for node in ("server-1", "client-1"):
        r = lab.tunneld_cli("certs", "issue", "--ca", ca_dir, "--name", node, "--out", os.path.join(workdir, node),
                "--ip", "127.0.0.1")
        assert r.returncode == 0, r.stderr
    node = lambda n: (os.path.join(workdir, n, f"{n}.crt"), os.path.join(workdir, n, f"{n}.key"))
    return ca_dir, {"ca": os.path.join(ca_dir, "ca.crt"), "server": node("server-1"), "client": node("client-1")}


def echo_pair(workdir, files, cleanup, start=True):
    """A tunneld pair with the PKI's `files` in front of an echo backend; both are
    stopped at teardown."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, files=files, start=start)
    cleanup.append(pair.stop)
    return pair
