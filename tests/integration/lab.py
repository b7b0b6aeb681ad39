"""Test lab for tunneld: certificates, tunneld processes, backends, network
namespaces and PostgreSQL clusters. Used by the integration tests and by the
demo (scripts/demo.py). Everything made here is cleaned up by its owner; processes
are stopped by PID, namespaces by the names this module generated."""

import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TUNNELD = os.environ.get("TUNNELD_BIN", os.path.join(ROOT, "build", "tunneld"))


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    """Polls predicate() until it returns a truthy value; raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def serial_hex(n):
    """A certificate serial as tunneld logs it (OpenSSL BN_bn2hex: whole bytes, upper case)."""
    text = format(n, "X")
    return "0" + text if len(text) % 2 else text


def free_port(host="127.0.0.1"):
    """A port to listen on, free now, chosen below the kernel's ephemeral range
    (ip_local_port_range starts at 32768): a port the kernel hands out itself could
    be taken by an outgoing connection before the daemon binds it. A port is never
    handed out twice by one test run: two that are chosen before either daemon
    binds would otherwise collide."""
    import random
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        port = random.randint(20000, 32000)
        if port in _HANDED_OUT:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port


_HANDED_OUT = set()


# --------------------------------------------------------------------------- certs


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


# --------------------------------------------------------------------------- tunneld


def yaml_list(items):
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def node_config(node, ca, cert, key, inbound=None, peers=(), extra=""):
    """Builds a config text. inbound = dict(listen=..., backend=..., allow=[...])."""
    lines = [f"node: {node}", "tls:", f"  ca: {ca}", f"  cert: {cert}", f"  key: {key}"]
    if inbound:
        listen = inbound["listen"]
        listen = yaml_list(listen) if isinstance(listen, (list, tuple)) else f'"{listen}"'
        lines += ["inbound:", f"  listen: {listen}", f'  backend: "{inbound["backend"]}"',
                  f"  allow: {yaml_list(inbound['allow'])}"]
    if peers:
        lines.append("peers:")
        for p in peers:
            lines += [f"  - name: {p['name']}", f'    connect: "{p["connect"]}"', f'    local: "{p["local"]}"']
    if "health:" not in extra:
        # Every daemon gets its own health port: 127.0.0.1:8080 (the default) is shared
        # by every test daemon in the host namespace.
        lines += ["health:", f'  listen: "127.0.0.1:{free_port()}"', "  probe_interval: 500ms"]
    return "\n".join(lines) + "\n" + extra


class Tunneld:
    """One tunneld process with its config file and log file."""

    def __init__(self, workdir, name, config_text, netns=None, wrapper=()):
        """wrapper: a command the daemon runs under (e.g. unshare --pid --fork)."""
        self.name = name
        self.wrapper = list(wrapper)
        self.config_path = os.path.join(workdir, f"{name}.yaml")
        self.log_path = os.path.join(workdir, f"{name}.log")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.netns = netns
        self.proc = None

    def start(self, wait_ready=True, env=None):
        """Starts the process; with wait_ready, waits for its sd_notify READY=1
        (on a NOTIFY_SOCKET this object owns) and fails if it exits first."""
        cmd = self.wrapper + [TUNNELD, "--peer", self.config_path]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        notify_path = self.config_path + ".notify"
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        self.notify.settimeout(0.2)
        self.notifications = []
        # Drained continuously, as systemd does: the kernel queues only
        # net.unix.max_dgram_qlen (10) datagrams, and sd_notify blocks beyond that.
        threading.Thread(target=self._drain_notifications, args=(self.notify,), daemon=True).start()
        extra_env = env
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, **(env or {}))
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        if wait_ready:
            wait_for(lambda: self.proc.poll() is not None or "READY=1" in self.poll_notifications(),
                     timeout=15, what=f"{self.name} READY=1")
            if self.proc.poll() is not None:
                log = self.read_log()
                m = re.search(r"health\.listen: cannot listen on 127\.0\.0\.1:(\d+): Address already in use", log)
                if m and not getattr(self, "_retried_port", False):
                    # Another process took the port free_port() chose: choose again, once.
                    self._retried_port = True
                    # Only in the health block: the same number may be a peer's address.
                    text = re.sub(r"(health:\n(?:[ \t].*\n)*?[ \t]+listen: \"?)127\.0\.0\.1:" + m.group(1),
                                  lambda h: h.group(1) + f"127.0.0.1:{free_port()}",
                                  open(self.config_path).read(), count=1)
                    with open(self.config_path, "w") as f:
                        f.write(text)
                    self.log.close()
                    self.notify.close()
                    return self.start(wait_ready, extra_env)
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{log}")
        return self

    def _drain_notifications(self, sock):
        while True:
            try:
                self.notifications.append(sock.recv(4096).decode())
            except socket.timeout:
                continue
            except OSError:
                return  # closed by stop()

    def poll_notifications(self):
        """All sd_notify datagrams received so far, joined by newlines."""
        return "\n".join(list(self.notifications))

    def read_log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=10.0, count=1):
        """Waits until regex `pattern` matches at least `count` log lines; returns the matches."""
        rx = re.compile(pattern)

        def found():
            hits = [line for line in self.read_log().splitlines() if rx.search(line)]
            return hits if len(hits) >= count else None

        return wait_for(found, timeout=timeout, what=f"{self.name} log /{pattern}/ x{count}")

    def log_lines(self, pattern):
        rx = re.compile(pattern)
        return [line for line in self.read_log().splitlines() if rx.search(line)]

    def signal(self, sig):
        self.proc.send_signal(sig)

    @property
    def health_address(self):
        """host:port of this daemon's health endpoint, from its config."""
        m = re.search(r'^health:\n(?:  .*\n)*?  listen: "?([^"\n]+)"?', open(self.config_path).read(), re.M)
        return m.group(1) if m else "127.0.0.1:8080"

    def http(self, path, method="GET", timeout=10):
        """(status, headers dict, body text) of one request to the health endpoint,
        made from inside this daemon's namespace."""
        return http_request(self.health_address, path, method=method, netns=self.netns, timeout=timeout)

    def status(self):
        return json.loads(self.http("/status")[2])

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
            self.notify.close()
            print(f"----- {self.name} log ({self.log_path}) -----\n{self.read_log()}")
            # Under a sanitizer build (scripts/sanitize.sh) a report in the daemon's log fails the test.
            report = re.search(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error: |"
                               r"WARNING: ThreadSanitizer", self.read_log())
            if report:
                raise AssertionError(f"{self.name}: sanitizer report in {self.log_path}")
        return self.proc.returncode if self.proc else None


_HTTP_SNIPPET = r"""
import http.client, json, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=float(sys.argv[4]))
c.request(sys.argv[2], sys.argv[3])
r = c.getresponse()
print(json.dumps([r.status, dict(r.getheaders()), r.read().decode(errors="replace")]))
"""


def http_request(address, path, method="GET", netns=None, timeout=10):
    """(status, headers, body) of an HTTP request to address (host:port), made inside
    `netns` (a name) when given, so tests never reach beyond their own namespaces."""
    cmd = ["/usr/bin/python3", "-c", _HTTP_SNIPPET, address, method, path, str(timeout)]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)
    if r.returncode != 0:
        raise ConnectionError(f"{method} http://{address}{path}: {r.stderr.strip().splitlines()[-1:]}")
    status, headers, body = json.loads(r.stdout)
    return status, headers, body


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


# --------------------------------------------------------------------------- namespaces


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


class Netns:
    """A network namespace made for a test; deleted (with its veths) by delete()."""

    def __init__(self, label):
        self.name = f"td-{label}-{uuid.uuid4().hex[:6]}"
        run(["ip", "netns", "add", self.name])
        self.exec(["ip", "link", "set", "lo", "up"])

    def exec(self, cmd, check=True, **kw):
        return run(["ip", "netns", "exec", self.name] + cmd, check=check, **kw)

    def popen(self, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + cmd, **kw)

    def delete(self):
        run(["ip", "netns", "delete", self.name], check=False)


def veth(ns_a, addr_a, ns_b, addr_b, prefix=24):
    """Joins two namespaces with a veth pair and addresses both ends."""
    tag = uuid.uuid4().hex[:5]
    a, b = f"va{tag}", f"vb{tag}"
    run(["ip", "link", "add", a, "netns", ns_a.name, "type", "veth", "peer", "name", b, "netns", ns_b.name])
    for ns, dev, addr in ((ns_a, a, addr_a), (ns_b, b, addr_b)):
        ns.exec(["ip", "addr", "add", f"{addr}/{prefix}", "dev", dev])
        ns.exec(["ip", "link", "set", dev, "up"])
    return a, b


def partition(ns, table="tdpart"):
    """Drops every non-loopback packet in and out of `ns` (nftables inside the namespace)."""
    rules = (f"table inet {table} {{\n"
             "  chain in { type filter hook input priority -300; policy accept; iif lo accept; drop; }\n"
             "  chain out { type filter hook output priority -300; policy accept; oif lo accept; drop; }\n"
             "}\n")
    ns.exec(["nft", "-f", "-"], input=rules)


def heal(ns, table="tdpart"):
    ns.exec(["nft", "delete", "table", "inet", table])


# --------------------------------------------------------------------------- postgres

PG_BIN = "/usr/lib/postgresql/15/bin"


def as_postgres(cmd, netns=None, check=True, **kw):
    full = ["runuser", "-u", "postgres", "--"] + cmd
    if netns:
        full = ["ip", "netns", "exec", netns.name] + full
    return run(full, check=check, cwd="/", **kw)


class Postgres:
    """A PostgreSQL 15 cluster in its own data directory, run as the postgres user,
    listening on 127.0.0.1:port (inside `netns` if given) and a socket in `dir`."""

    def __init__(self, directory, port, netns=None):
        self.dir = directory
        self.data = os.path.join(directory, "data")
        self.port = port
        self.netns = netns
        os.makedirs(directory, exist_ok=True)
        shutil.chown(directory, "postgres", "postgres")
        os.chmod(directory, 0o755)

    def initdb(self):
        as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"])
        self._configure()
        # ssl = on with a self-signed certificate, as Debian's clusters have it: libpq
        # clients (pg_basebackup, walreceivers) then speak SSL inside the tunnel, and
        # end their sessions the way SSL sessions end (close_notify left unread).
        key, crt = os.path.join(self.data, "server.key"), os.path.join(self.data, "server.crt")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-days", "2", "-subj", "/CN=postgres", "-keyout", key, "-out", crt])
        os.chmod(key, 0o600)
        shutil.chown(key, "postgres", "postgres")
        shutil.chown(crt, "postgres", "postgres")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("ssl = on\n")

    def _configure(self):
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n"
                "wal_receiver_timeout = 60s\nwal_retrieve_retry_interval = 1s\n"
                "fsync = off\nsynchronous_commit = on\nshared_buffers = 32MB\n"
                "log_connections = on\nlog_disconnections = on\n")
        # Replication (and everything else) only from loopback: only the tunnel gets in.
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\nlocal replication all trust\n"
                    "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n")

    def basebackup_from(self, host, port):
        """Makes this cluster a standby of host:port via pg_basebackup -R."""
        as_postgres([f"{PG_BIN}/pg_basebackup", "-h", host, "-p", str(port), "-U", "postgres",
                     "-D", self.data, "-R", "-X", "stream", "-c", "fast"], netns=self.netns)
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {self.port}\nunix_socket_directories = '{self.dir}'\n")

    def start(self):
        as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "pg.log"),
                     "-w", "-t", "60", "start"], netns=self.netns)

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                        netns=self.netns, check=False)

    def sql(self, query, db="postgres", check=True):
        r = as_postgres(["psql", "-h", self.dir, "-p", str(self.port), "-U", "postgres", "-d", db,
                         "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query], netns=self.netns, check=check)
        return r.stdout.strip()

    def pgbench(self, *args):
        return as_postgres(["pgbench", "-h", self.dir, "-p", str(self.port), "-U", "postgres"] + list(args),
                           netns=self.netns)


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


def tunneld_cli(*args, netns=None, check=False, timeout=60):
    """Runs a tunneld command (not the daemon); returns the CompletedProcess."""
    cmd = [TUNNELD, *map(str, args)]
    if netns:
        cmd = ["ip", "netns", "exec", netns.name] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def check_example_configs(workdir, files):
    """Runs `tunneld check` on example configs ({node name: path}) with their
    /etc/tunneld paths pointed at real certificates issued for those names, each
    in a namespace of its own (so the ports are free; the example hosts do not
    resolve here: warnings, not failures). Asserts each passes; returns
    {name: output}."""
    ca_dir = os.path.join(workdir, "pki")
    tunneld_cli("certs", "init-ca", "--out", ca_dir, "--name", "example CA", check=True)
    etc = os.path.join(workdir, "etc")
    os.makedirs(etc, exist_ok=True)
    for name in files:
        tunneld_cli("certs", "issue", "--ca", ca_dir, "--name", name, "--out", etc, check=True)
    os.rename(os.path.join(ca_dir, "ca.crt"), os.path.join(etc, "ca.crt"))
    outputs = {}
    for name, source in files.items():
        path = os.path.join(workdir, name + ".yaml")
        with open(path, "w") as f:
            f.write(open(source).read().replace("/etc/tunneld/", etc + "/"))
        ns = Netns("check")
        try:
            r = tunneld_cli("check", "--peer", path, netns=ns)
        finally:
            ns.delete()
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "FAIL" not in out, out
        outputs[name] = out
    return outputs


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


def is_root():
    return os.geteuid() == 0


def tmpdir(prefix="tunneld-"):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


# --------------------------------------------------------------------------- replication lab

PRIMARY_ADDR = "10.77.0.1"
STANDBY_ADDR = "10.77.0.2"
OUTSIDER_ADDR = "10.77.9.2"  # not allowed anywhere: the demo's "internet"
APP_PRIMARY_NET = "10.77.3"  # app host <-> primary
APP_STANDBY_NET = "10.77.4"  # app host <-> standby
TLS_PORT = 8765
LOCAL_PORT = 6432


class ReplicationLab:
    """Two "hosts" (network namespaces joined by a veth): a PostgreSQL 15 primary
    behind tunneld's inbound listener, and a standby whose primary_conninfo points
    at its local tunneld, which carries the stream over mutual TLS.

        standby ns: postgres :5433 -> 127.0.0.1:6432 tunneld ==TLS==> 10.77.0.1:8765
        primary ns:                       tunneld inbound -> 127.0.0.1:5432 postgres
    """

    def __init__(self, workdir, keepalive="{idle: 2s, interval: 1s, count: 3, user_timeout: 6s}",
                 timeouts="{connect: 3s, handshake: 5s, shutdown: 5s}", firewall=False, health=False):
        self.workdir = workdir
        # health: both tunnels configured alike (each an inbound in front of its own
        # postgres and an outbound to the other, as after any failover), health
        # endpoints on 0.0.0.0:8080 with health.postgres set, and a third host
        # "app" (APP_ADDR) with a route to both, where a failover router can run.
        self.health = health
        self.app_ns = None
        self.keepalive = keepalive
        self.timeouts = timeouts
        self.firewall = firewall  # the primary's tunneld guards 8765 (standby only) and 5432 (loopback only)
        self.primary_ns = self.standby_ns = self.outsider_ns = None
        self.tunnels = []
        self.clusters = []

    def setup(self, log=print):
        log("creating two hosts: network namespaces 'primary' and 'standby' joined by a veth")
        self.primary_ns = Netns("primary")
        self.standby_ns = Netns("standby")
        veth(self.primary_ns, PRIMARY_ADDR, self.standby_ns, STANDBY_ADDR)
        if self.firewall:
            log(f"a third host, 'outsider' ({OUTSIDER_ADDR}), with a route to the primary")
            self.outsider_ns = Netns("outsider")
            veth(self.primary_ns, "10.77.9.1", self.outsider_ns, OUTSIDER_ADDR)
            self.outsider_ns.exec(["ip", "route", "add", "default", "via", "10.77.9.1"])

        if self.health:
            log(f"a third host, 'app', on {APP_PRIMARY_NET}.2 -> primary and {APP_STANDBY_NET}.2 -> standby")
            self.app_ns = Netns("app")
            veth(self.primary_ns, f"{APP_PRIMARY_NET}.1", self.app_ns, f"{APP_PRIMARY_NET}.2")
            veth(self.standby_ns, f"{APP_STANDBY_NET}.1", self.app_ns, f"{APP_STANDBY_NET}.2")

        log("tunneld certs: a private CA and one certificate per node (primary-1, standby-1)")
        self.ca_dir = os.path.join(self.workdir, "pki")
        tunneld_cli("certs", "init-ca", "--out", self.ca_dir, "--name", "demo CA", check=True)
        for node, folder in (("primary-1", "primary-tls"), ("standby-1", "standby-tls")):
            tunneld_cli("certs", "issue", "--ca", self.ca_dir, "--name", node,
                        "--out", os.path.join(self.workdir, folder), check=True)
        ca_path = os.path.join(self.ca_dir, "ca.crt")
        p_cert, p_key = (os.path.join(self.workdir, "primary-tls", "primary-1" + ext) for ext in (".crt", ".key"))
        s_cert, s_key = (os.path.join(self.workdir, "standby-tls", "standby-1" + ext) for ext in (".crt", ".key"))
        common = f"keepalive: {self.keepalive}\ntimeouts: {self.timeouts}\n"

        log("starting PostgreSQL 15 primary (replication allowed from 127.0.0.1 only)")
        self.primary = Postgres(os.path.join(self.workdir, "pg-primary"), 5432, self.primary_ns)
        self.clusters.append(self.primary)
        self.primary.initdb()
        with open(os.path.join(self.primary.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '*'\n")  # reachable on the veth, but pg_hba refuses it
        if self.health:
            with open(os.path.join(self.primary.data, "pg_hba.conf"), "a") as f:
                f.write("host all all 10.77.0.0/16 trust\n")  # queries (not replication) from the app host
        self.primary.start()

        guard = ""
        if self.firewall:
            guard = (f"firewall:\n  protect:\n    - port: {TLS_PORT}\n      allow: [{STANDBY_ADDR}]\n"
                     f"    - port: 5432\n      allow: [{APP_PRIMARY_NET + '.2' if self.health else ''}]\n")
            if self.health:  # health.public: the other lab hosts ask it (HAProxy, the demo)
                guard += "    - port: 8080\n      allow: [10.77.0.0/16]\n"
        log("starting tunneld on both hosts" + (" (the primary's with its firewall guard)" if guard else ""))
        def health_block(cluster_dir, port):
            return ("health:\n  listen: \"0.0.0.0:8080\"\n  public: true\n  probe_interval: 500ms\n"
                    f"  postgres: \"host={cluster_dir} port={port} user=postgres dbname=postgres\"\n")

        standby_pg_dir = os.path.join(self.workdir, "pg-standby")
        self.primary_tunnel = Tunneld(self.workdir, "tunneld-primary", node_config(
            "primary-1", ca_path, p_cert, p_key,
            inbound={"listen": f"{PRIMARY_ADDR}:{TLS_PORT}", "backend": "127.0.0.1:5432",
                     "allow": ["standby-1"]},
            peers=[{"name": "standby-1", "connect": f"{STANDBY_ADDR}:{TLS_PORT}",
                    "local": f"127.0.0.1:{LOCAL_PORT}"}] if self.health else (),
            extra=common + guard + (health_block(self.primary.dir, 5432) if self.health else "")),
            netns=self.primary_ns.name)
        self.standby_tunnel = Tunneld(self.workdir, "tunneld-standby", node_config(
            "standby-1", ca_path, s_cert, s_key,
            inbound={"listen": f"{STANDBY_ADDR}:{TLS_PORT}", "backend": "127.0.0.1:5433",
                     "allow": ["primary-1"]} if self.health else None,
            peers=[{"name": "primary-1", "connect": f"{PRIMARY_ADDR}:{TLS_PORT}",
                    "local": f"127.0.0.1:{LOCAL_PORT}"}],
            extra=common + (health_block(standby_pg_dir, 5433) if self.health else "")),
            netns=self.standby_ns.name)
        self.tunnels += [self.primary_tunnel, self.standby_tunnel]
        self.primary_tunnel.start()
        self.standby_tunnel.start()

        log("pg_basebackup of the primary through the tunnel (standby -> 127.0.0.1:6432)")
        self.standby = Postgres(standby_pg_dir, 5433, self.standby_ns)
        self.clusters.append(self.standby)
        self.standby.basebackup_from("127.0.0.1", LOCAL_PORT)
        self.standby.start()
        wait_for(self.streaming, timeout=30, what="standby streaming")

    def streaming(self):
        """Rows of pg_stat_replication on the primary: (client_addr, state)."""
        out = self.primary.sql("SELECT client_addr, state FROM pg_stat_replication", check=False)
        return [tuple(line.split("|")) for line in out.splitlines() if "streaming" in line]

    def load(self, seconds=10, scale=5, clients=4):
        self.primary.pgbench("-i", "-q", "-s", str(scale), "postgres")
        return self.primary.pgbench("-T", str(seconds), "-c", str(clients), "-n", "postgres")

    def caught_up(self):
        target = self.primary.sql("SELECT pg_current_wal_lsn()")
        return self.standby.sql(
            f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn", check=False) == "t"

    def fingerprint(self, cluster):
        return cluster.sql(
            "SELECT (SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a)"
            " || ' ' || (SELECT count(*) FROM pgbench_history)"
            " || ' ' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")

    def direct_replication_attempt(self):
        """From the standby host, straight to the primary's postgres over the veth."""
        return self.standby_ns.exec(
            ["runuser", "-u", "postgres", "--", "psql", f"host={PRIMARY_ADDR} port=5432 user=postgres "
             "replication=true dbname=postgres connect_timeout=5", "-c", "IDENTIFY_SYSTEM"],
            check=False, cwd="/")

    def outsider_attempt(self, port, timeout=3):
        """A TCP connect from the outsider host to the primary; 'connected' or the error's name."""
        code = ("import socket\n"
                f"s=socket.socket(); s.settimeout({timeout})\n"
                f"try:\n s.connect(('{PRIMARY_ADDR}', {port})); print('connected')\n"
                "except Exception as e: print(type(e).__name__)\n")
        return self.outsider_ns.exec(["/usr/bin/python3", "-c", code], check=False).stdout.strip()

    def firewall_show(self):
        return tunneld_cli("firewall", "show", "--peer", self.primary_tunnel.config_path,
                           netns=self.primary_ns).stdout

    def teardown(self):
        for t in self.tunnels:
            t.stop()
        for c in reversed(self.clusters):
            c.stop()
        for ns in (self.app_ns, self.outsider_ns, self.standby_ns, self.primary_ns):
            if ns:
                ns.delete()
