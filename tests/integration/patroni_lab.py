"""A Patroni cluster across three hosts whose every cross-host byte rides tunneld:
three network namespaces on one switch, each with etcd 3.4, Patroni 3.0 with
PostgreSQL 15, and tunneld on port 8765; plus an application host whose
tunneld route follows the leader. The files are configs/patroni/, with only
addresses, paths and timings replaced (every replacement must match).

    node-N (10.89.1.N)  postgres :5432, REST API :8008, etcd :2379/:2380, all
                        listening on 0.0.0.0 and guarded loopback-only;
                        tunneld :8765 carries all four (ALPN services)
    app (10.89.1.10)    route 127.0.0.1:6430 -> the leader
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import lab

NET = "10.89.1"
NODES = ("node-1", "node-2", "node-3")
APP_ROUTE = 6430
CONFIGS = os.path.join(lab.ROOT, "configs", "patroni")
# Backend port -> what the guard counters call it.
GUARDED = {5432: "postgres", 8008: "patroni", 2379: "etcd-client", 2380: "etcd-peer"}
TTL, LOOP_WAIT, RETRY_TIMEOUT = 20, 2, 5  # Patroni's minimum ttl is 20


# An application writing one row at a time: argv dsn, the file of acknowledged
# ids (one per committed INSERT), and a file whose existence stops it. Errors
# go to <acked>.errors. The acks table is the test's (id bigint PRIMARY KEY).
WRITER = r"""
import os, sys, time, psycopg2
dsn, stop = sys.argv[1], sys.argv[3]
acked = open(sys.argv[2], "a", buffering=1)
errors = open(sys.argv[2] + ".errors", "a", buffering=1)
n, conn = 0, None
while not os.path.exists(stop):
    try:
        if conn is None:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
        n += 1
        with conn.cursor() as c:
            c.execute("INSERT INTO acks (id) VALUES (%s)", (n,))
        acked.write(f"{n}\n")  # the commit returned: acknowledged
    except Exception as e:
        errors.write(f"{time.time():.3f} {n} {type(e).__name__}: {str(e).strip()[:200]}\n")
        try:
            conn.close()
        except Exception:
            pass
        conn = None
        time.sleep(0.1)
"""


def address(host):
    return f"{NET}.10" if host == "app" else f"{NET}.{NODES.index(host) + 1}"


def pg_local(host):
    """node-N's postgresql.connect_address port (the same on every host)."""
    return 6430 + NODES.index(host) + 1


def api_local(host):
    return 18000 + NODES.index(host) + 1


class PatroniLab:
    def __init__(self, workdir, probe_interval="500ms", all_members=False, direct=False):
        """all_members: etcd3.hosts lists all three members, this host's own too
        (as Patroni's guides write it), each node's own through its tunneld
        (inbound.services.etcd-client.local 127.0.0.1:1237N).
        direct: no tunneld between the nodes at all: etcd, Patroni and postgres
        advertise and use the nodes' own addresses (the baseline); the app host
        then writes with libpq's target_session_attrs=read-write over all three."""
        self.workdir = workdir
        self.probe_interval = probe_interval
        self.all_members = all_members or direct
        self.direct_mode = direct
        self.ns = {}
        self.tunnels = {}
        self.etcd = {}
        self.patroni = {}
        self.logs = []
        self.switch = None

    # ------------------------------------------------------------------ files
    def render(self, host, name):
        """configs/patroni/<host>/<name> with this lab's addresses, paths and timings."""
        text = open(os.path.join(CONFIGS, host, name)).read()
        d = self.dir(host)
        if name == "tunneld.yaml":
            replace = {"/etc/tunneld/": os.path.join(self.workdir, f"pki-{host}") + "/",
                       "probe_interval: 1s": f"probe_interval: {self.probe_interval}",
                       "keepalive: {idle: 10s, interval: 5s, count: 3, user_timeout: 30s}":
                           "keepalive: {idle: 2s, interval: 1s, count: 3, user_timeout: 6s}"}
            if host != "app":
                replace.update({"/var/run/postgresql": d,  # one socket directory per node here
                                "203.0.113.10/32": f"{address('app')}/32"})
                if self.all_members:
                    n = NODES.index(host) + 1
                    others = ", ".join(h for h in NODES if h != host)
                    replace[f'etcd-client: {{backend: "127.0.0.1:2379", allow: [{others}]}}'] = (
                        f'etcd-client: {{backend: "127.0.0.1:2379", allow: [{others}], local: "127.0.0.1:{12370 + n}", '
                        f'local_quorum: majority}}')
        elif name == "patroni.yml":
            replace = {"/var/lib/postgresql/15/patroni": os.path.join(d, "data"),
                       "/var/lib/postgresql/.pgpass_patroni": os.path.join(d, "pgpass"),
                       "/var/run/postgresql": d,
                       "ttl: 30": f"ttl: {TTL}", "loop_wait: 10": f"loop_wait: {LOOP_WAIT}",
                       "retry_timeout: 10": f"retry_timeout: {RETRY_TIMEOUT}",
                       # tunneld runs as root here, so its health check is no peer of postgres
                       "local all postgres peer": "local all all trust"}
            n = NODES.index(host) + 1
            mine = [f"127.0.0.1:{12370 + k + 1}" for k in range(3) if k + 1 != n]
            if self.all_members:
                replace[f"hosts: {','.join(mine)}"] = "hosts: " + ",".join(
                    f"127.0.0.1:{12370 + k + 1}" for k in range(3))
            if self.direct_mode:
                replace.pop(f"hosts: {','.join(mine)}")
                replace.update({
                    f"hosts: {','.join(mine)}": "hosts: " + ",".join(f"{address(h)}:2379" for h in NODES),
                    f"connect_address: 127.0.0.1:{18000 + n}": f"connect_address: {address(host)}:8008",
                    f"connect_address: 127.0.0.1:{6430 + n}": f"connect_address: {address(host)}:5432",
                    "    - host replication replicator 127.0.0.1/32 scram-sha-256":
                        "    - host replication replicator 127.0.0.1/32 scram-sha-256\n"
                        f"    - host all all {NET}.0/24 scram-sha-256\n"
                        f"    - host replication replicator {NET}.0/24 scram-sha-256"})
        else:
            replace = {"/var/lib/etcd/tunneld": os.path.join(d, "etcd")}
            if self.direct_mode:
                n = NODES.index(host) + 1
                replace.update({
                    f"initial-advertise-peer-urls: http://127.0.0.1:{12380 + n}":
                        f"initial-advertise-peer-urls: http://{address(host)}:2380",
                    f"advertise-client-urls: http://127.0.0.1:{12370 + n}":
                        f"advertise-client-urls: http://{address(host)}:2379",
                    "initial-cluster: node-1=http://127.0.0.1:12381,node-2=http://127.0.0.1:12382,"
                    "node-3=http://127.0.0.1:12383":
                        "initial-cluster: " + ",".join(f"{h}=http://{address(h)}:2380" for h in NODES)})
        for old, new in replace.items():
            if old not in text:
                raise AssertionError(f"configs/patroni/{host}/{name} no longer contains {old!r}")
            text = text.replace(old, new)
        for i, n in enumerate(NODES):
            text = text.replace(f"node{i + 1}.example.net", address(n))
        settings = "\n".join(line.split("#")[0] for line in text.splitlines())
        assert "example.net" not in settings and "203.0.113" not in settings, text
        path = os.path.join(self.dir(host), name)
        with open(path, "w") as f:
            f.write(text)
        shutil.chown(path, "postgres", "postgres")
        return path

    def dir(self, host):
        return os.path.join(self.workdir, host)

    # ------------------------------------------------------------------ setup
    def setup(self, log=print):
        log("a switch (bridge) and four hosts: node-1, node-2, node-3, app")
        self.switch = lab.Netns("pswitch")
        self.switch.exec(["ip", "link", "add", "br0", "type", "bridge"])
        self.switch.exec(["ip", "link", "set", "br0", "up"])
        for i, h in enumerate(NODES + ("app",)):
            self.ns[h] = lab.Netns("p" + h.replace("-", ""))
            _, b = lab.veth(self.ns[h], address(h), self.switch, f"{NET}.{200 + i}")
            self.switch.exec(["ip", "addr", "flush", "dev", b])
            self.switch.exec(["ip", "link", "set", b, "master", "br0"])
            os.makedirs(self.dir(h), exist_ok=True)
            shutil.chown(self.dir(h), "postgres", "postgres")
            os.chmod(self.dir(h), 0o700 if h != "app" else 0o755)

        log("a private CA and one certificate per host")
        ca_dir = os.path.join(self.workdir, "ca")
        lab.tunneld_cli("certs", "init-ca", "--out", ca_dir, "--name", "patroni lab CA", check=True)
        for h in NODES + ("app",):
            out = os.path.join(self.workdir, f"pki-{h}")
            lab.tunneld_cli("certs", "issue", "--ca", ca_dir, "--name", h, "--out", out, check=True)
            shutil.copy(os.path.join(ca_dir, "ca.crt"), out)

        log("tunneld on every host (the guard drops 5432, 8008, 2379, 2380 from outside)")
        for h in () if self.direct_mode else NODES + ("app",):
            self.tunnels[h] = lab.Tunneld(self.workdir, "tunneld-" + h, open(self.render(h, "tunneld.yaml")).read(),
                                          netns=self.ns[h].name)
            self.tunnels[h].start()

        log("etcd 3.4 on every node, peers and clients through tunneld")
        for h in NODES:
            self.etcd[h] = self.spawn(h, "etcd", ["etcd", "--config-file", self.render(h, "etcd.conf.yml")])
        lab.wait_for(lambda: self.etcd_healthy(NODES[0]) == 3, timeout=60, what="a three-member etcd cluster")

        log("Patroni 3.0 on every node (PostgreSQL 15; replicas cloned through the tunnel)")
        for h in NODES:
            # setpriv execs (runuser would fork and SIGKILL Patroni 2 s after a SIGTERM)
            self.patroni[h] = self.spawn(h, "patroni", ["setpriv", "--reuid=postgres", "--regid=postgres",
                                                       "--init-groups", "patroni", self.render(h, "patroni.yml")],
                                         env=dict(os.environ, HOME="/var/lib/postgresql"))

    def spawn(self, host, what, cmd, env=None):
        f = open(os.path.join(self.workdir, f"{what}-{host}.log"), "ab")
        self.logs.append(f)
        return self.ns[host].popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd="/", env=env)

    # ------------------------------------------------------------------ facts
    def members(self, host):
        """patronictl list -f json, run on `host` as postgres; [] when it fails."""
        r = self.ns[host].exec(["runuser", "-u", "postgres", "--", "patronictl", "-c",
                                os.path.join(self.dir(host), "patroni.yml"), "list", "-f", "json"],
                               check=False, cwd="/", timeout=30)
        try:
            return json.loads(r.stdout) if r.returncode == 0 else []
        except json.JSONDecodeError:
            return []

    def leader(self, host):
        for m in self.members(host):
            if m.get("Role") == "Leader" and m.get("State") == "running":
                return m["Member"]
        return None

    def formed(self, host):
        """`host`'s patronictl shows one running leader and two running replicas
        with lag 0, and the leader's postgres has both streaming (Patroni 3.0.2
        says "running", not yet "streaming", for a replica). The leader's name, or None."""
        ms = self.members(host)
        leaders = [m["Member"] for m in ms if m.get("Role") == "Leader" and m.get("State") == "running"]
        replicas = [m["Member"] for m in ms if m.get("Role") in ("Replica", "Sync Standby")
                    and m.get("State") in ("running", "streaming") and m.get("Lag in MB") == 0]
        if len(ms) != 3 or len(leaders) != 1 or len(replicas) != 2:
            return None
        return leaders[0] if self.streaming_from(leaders[0]) == sorted(replicas) else None

    def etcd_healthy(self, host):
        """How many members answer `etcdctl endpoint health` from `host`: its own
        on 2379, the others at their advertised URLs (tunneld ports)."""
        endpoints = ["http://127.0.0.1:2379"] + [
            f"http://{address(h)}:2379" if self.direct_mode else f"http://127.0.0.1:{12370 + NODES.index(h) + 1}"
            for h in NODES if h != host]
        r = self.ns[host].exec(["etcdctl", "--endpoints", ",".join(endpoints), "--dial-timeout", "2s",
                                "--command-timeout", "3s", "endpoint", "health"], check=False, timeout=30)
        return len(re.findall(r"is healthy", r.stdout + r.stderr))

    def sql(self, host, query, port=5432, check=True):
        """psql on `host` as postgres over its own socket (port 5432) or a tunneld local port."""
        target = (f"host={self.dir(host)} port=5432" if port == 5432
                  else f"host=127.0.0.1 port={port} password=change-me-superuser")
        r = self.ns[host].exec(["runuser", "-u", "postgres", "--", "psql",
                                f"{target} user=postgres dbname=postgres connect_timeout=3",
                                "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query], check=check, cwd="/")
        return r.stdout.strip() if r.returncode == 0 else None

    def streaming_from(self, host):
        out = self.sql(host, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'",
                       check=False)
        return sorted(out.split()) if out else []

    def in_recovery(self, host):
        return self.sql(host, "SELECT pg_is_in_recovery()", check=False)

    def http(self, host, port, path):
        """(status, body) of a GET to 127.0.0.1:port inside `host`; (None, error) on failure."""
        try:
            status, _, body = lab.http_request(f"127.0.0.1:{port}", path, netns=self.ns[host].name, timeout=3)
            return status, body
        except Exception as e:  # noqa: BLE001 - a refused or timed-out request is an answer here
            return None, str(e)

    def tunneld_status(self, host):
        return json.loads(self.http(host, 8766, "/status")[1])

    def drops(self, host):
        """Guard drop counters of `host`, by backend name."""
        d = self.tunneld_status(host)["firewall"]["drops"]
        return {GUARDED[int(p)]: v["packets"] for p, v in d.items() if int(p) in GUARDED}

    def direct(self, src, dst, port, timeout=2.0):
        """A TCP connect from `src` straight to `dst`'s backend port: 'dropped'
        (no answer in time), 'refused' or 'connected'."""
        code = ("import socket,sys\n"
                "s=socket.socket(); s.settimeout(%s)\n"
                "try:\n s.connect((%r,%d)); print('connected')\n"
                "except socket.timeout: print('dropped')\n"
                "except OSError as e: print('refused', e)\n") % (timeout, address(dst), port)
        r = self.ns[src].exec(["python3", "-c", code], check=False, timeout=timeout + 10)
        return r.stdout.split()[0] if r.stdout else r.stderr

    def service_targets(self, src, dst):
        """(name, host, port, kind) of every service of `dst` as `src` reaches it:
        through src's tunneld ports, or (direct) at dst's own address."""
        n = NODES.index(dst) + 1
        if self.direct_mode:
            a = address(dst)
            return [(f"{dst} postgres", a, 5432, "pg"), (f"{dst} etcd-client", a, 2379, "/health"),
                    (f"{dst} etcd-peer", a, 2380, "/version"), (f"{dst} patroni", a, 8008, "/liveness")]
        return [(f"{dst} postgres", "127.0.0.1", 6430 + n, "pg"),
                (f"{dst} etcd-client", "127.0.0.1", 12370 + n, "/health"),
                (f"{dst} etcd-peer", "127.0.0.1", 12380 + n, "/version"),
                (f"{dst} patroni", "127.0.0.1", 18000 + n, "/liveness")]

    def cut(self, host):
        lab.partition(self.ns[host])

    def heal(self, host):
        lab.heal(self.ns[host])

    def patroni_log(self, host):
        return open(os.path.join(self.workdir, f"patroni-{host}.log"), errors="replace").read()

    # ------------------------------------------------------------------ teardown
    def teardown(self):
        errors = []

        def attempt(what, fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - reported after the rest is stopped
                errors.append(f"{what}: {e!r}")

        for h, p in self.patroni.items():  # Patroni stops its postgres
            attempt(f"patroni {h}", lambda p=p: stop_process(p, 20))
        for h in NODES:  # and whatever postmaster is left
            attempt(f"postgres {h}", lambda h=h: kill_postmaster(os.path.join(self.dir(h), "data")))
        for h, p in self.etcd.items():
            attempt(f"etcd {h}", lambda p=p: stop_process(p, 10))
        for h, t in self.tunnels.items():
            attempt(f"tunneld {h}", t.stop)
        for f in self.logs:
            f.close()
        for ns in list(self.ns.values()) + [self.switch]:
            if ns:
                ns.delete()
        if errors:
            raise AssertionError("teardown: " + "; ".join(errors))


def stop_process(proc, timeout):
    """SIGTERM to the process group's leader (ip netns exec -> the command), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def kill_postmaster(data):
    pidfile = os.path.join(data, "postmaster.pid")
    if not os.path.exists(pidfile):
        return
    pid = int(open(pidfile).readline())
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(1)
