"""Test lab for tunneld: tunneld processes, network namespaces, the health
endpoint and the command line here; certificates (cert_lab.py), backends and
pairs (traffic_lab.py) and PostgreSQL clusters (pg_lab.py) re-exported.
Used by the integration tests and by the demo (scripts/demo.py). Everything
made here is cleaned up by its owner; processes are stopped by PID, namespaces
by the names this module generated."""

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
                # A stop that hangs is a bug: say where every thread is before the kill.
                print(f"----- {self.name} did not stop in {timeout}s; its threads -----\n"
                      f"{thread_dump(self.proc.pid)}")
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


def thread_dump(pid):
    """Every thread's stack of a live process (gdb, when it is installed)."""
    if not shutil.which("gdb"):
        return "(gdb is not installed)"
    r = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "thread apply all bt"],
                       capture_output=True, text=True, timeout=60)
    return r.stdout[-20000:] + r.stderr[-2000:]


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


# --------------------------------------------------------------------------- namespaces


def terminate(proc, timeout=5):
    """SIGTERM to a process this test started (by its Popen), SIGKILL if it
    has not exited within `timeout`; waits for it either way."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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


def is_root():
    return os.geteuid() == 0


def tmpdir(prefix="tunneld-"):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


# --------------------------------------------------------------------------- the other labs

# Certificates (cert_lab.py), backends, byte patterns, pairs and streams
# (traffic_lab.py), PostgreSQL clusters and the replication lab (pg_lab.py) are
# reached as lab.CA, lab.Pair, lab.ReplicationLab...: looked up on first use, so
# any of these modules may be imported first.
_SPLIT_OUT = ("cert_lab", "traffic_lab", "pg_lab")


def __getattr__(name):
    import importlib
    if name.startswith("_"):  # __path__, __spec__...: asked by the import system itself
        raise AttributeError(name)
    for module in _SPLIT_OUT:
        m = importlib.import_module(module)
        if name in vars(m):
            return vars(m)[name]
    raise AttributeError(f"module 'lab' has no attribute {name!r}")
