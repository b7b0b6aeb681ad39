"""A PostgreSQL cluster of three nodes and an application host, each in its own
network namespace on one switch (a bridge in a fifth namespace), each node with
its own tunneld. Replication and the application use routes (routes[]), so
after a promotion nothing is edited:

    node namespaces 10.88.1.1-3:  postgres :5432 <- tunneld inbound :8765
                                  route 127.0.0.1:6432 -> the primary (primary_conninfo)
    app namespace 10.88.1.10:     route 127.0.0.1:6432 -> the primary, :6442 -> a replica
"""
import os
import signal
import subprocess
import time

import lab

NET = "10.88.1"
TLS_PORT = 8765
PRIMARY_ROUTE = 6432
REPLICA_ROUTE = 6442
CASCADE_ROUTE = 6452
INGRESS = f"{NET}.100"
NODES = ("primary-1", "standby-1", "standby-2")
ECHO_PORT = 9000
ECHO_LOCAL = 19000

# An echo server on 127.0.0.1:<argv[1]> (a thread per connection).
ECHO_SERVER = """
import socket, sys, threading
def serve(c):
    with c:
        while True:
            b = c.recv(4096)
            if not b:
                return
            c.sendall(b)
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def address(i):
    return f"{NET}.{i + 1}"


class ClusterLab:
    def __init__(self, workdir, probe_interval="300ms", replica_max_lag="1MB", cascade=False,
                 sync=None, ingress=False, app_peers=False, second_app=False, nodes=NODES,
                 witness=None, own_service=False):
        """cascade: standby-2 follows standby-1 through a fixed-peer route.
        sync: synchronous_standby_names on the primary ("ANY 1 (standby1, standby2)").
        ingress: every peer connection goes through one HAProxy routing by SNI
        (INGRESS:443), and each node's firewall guard admits only the ingress.
        app_peers: the app host also reaches each node N (1-3) directly, as
        README.md's HAProxy section has it: postgres on 127.0.0.1:600N and the
        node's health endpoint (an inbound service, "health") on 127.0.0.1:1800N.
        second_app: a second application host, app2 (NET.11), configured like app,
        so that a partition can leave an application on each side.
        nodes: the database nodes (a prefix of NODES: two for a pair).
        witness: a host named as every node's cluster.witnesses ("app").
        own_service: every node runs an echo server on 127.0.0.1:ECHO_PORT, an
        inbound service ("echo") with its own local listener on
        127.0.0.1:ECHO_LOCAL and local_quorum: majority (as a node's own etcd
        member is reached in the README's Patroni section)."""
        self.nodes = tuple(nodes)
        self.witness = witness
        self.own_service = own_service
        self.echoes = []
        self.workdir = workdir
        self.probe_interval = probe_interval
        self.replica_max_lag = replica_max_lag
        self.cascade = cascade
        self.sync = sync
        self.ingress = ingress
        self.app_peers = app_peers
        self.apps = ["app", "app2"] if second_app else ["app"]
        self.ports = {}  # host -> its veth's name in the switch namespace
        self.haproxy = None
        self.ns = {}
        self.pg = {}
        self.tunnels = {}
        self.switch = None

    # ------------------------------------------------------------------ setup
    def setup(self, log=print):
        log("a switch (bridge) and four hosts: primary-1, standby-1, standby-2, app")
        self.switch = lab.Netns("switch")
        self.switch.exec(["ip", "link", "add", "br0", "type", "bridge"])
        self.switch.exec(["ip", "link", "set", "br0", "up"])
        hosts = list(self.nodes) + self.apps
        for i, h in enumerate(hosts):
            ns = lab.Netns(h.replace("-", ""))
            self.ns[h] = ns
            a, b = lab.veth(ns, self.address_of(h), self.switch, f"{NET}.{200 + i}")
            self.ports[h] = b
            self.switch.exec(["ip", "addr", "flush", "dev", b])
            self.switch.exec(["ip", "link", "set", b, "master", "br0"])

        if self.ingress:
            log(f"an SNI-routing ingress (HAProxy, TCP mode, no TLS termination) on {INGRESS}:443")
            ns = lab.Netns("ingress")
            self.ns["ingress"] = ns
            a, b = lab.veth(ns, INGRESS, self.switch, f"{NET}.250")
            self.switch.exec(["ip", "addr", "flush", "dev", b])
            self.switch.exec(["ip", "link", "set", b, "master", "br0"])
            cfg = os.path.join(self.workdir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_config())
            self.haproxy_log = open(os.path.join(self.workdir, "haproxy.log"), "ab")
            self.haproxy = ns.popen(["haproxy", "-db", "-f", cfg], stdout=self.haproxy_log,
                                    stderr=subprocess.STDOUT)
            lab.wait_for(lambda: ns.exec(["ss", "-Htln", f"sport = :443"]).stdout.strip(), timeout=10,
                         what="haproxy listening")

        log("a private CA and one certificate per host")
        self.ca_dir = os.path.join(self.workdir, "pki")
        lab.tunneld_cli("certs", "init-ca", "--out", self.ca_dir, "--name", "cluster CA", check=True)
        self.ca = os.path.join(self.ca_dir, "ca.crt")
        for h in hosts:
            lab.tunneld_cli("certs", "issue", "--ca", self.ca_dir, "--name", h,
                            "--out", os.path.join(self.workdir, h + "-tls"), check=True)

        log("primary-1: PostgreSQL 15 primary")
        for h in self.nodes:
            self.pg[h] = lab.Postgres(os.path.join(self.workdir, "pg-" + h), 5432, self.ns[h])
        self.pg["primary-1"].initdb()
        self.pg["primary-1"].start()
        self.pg["primary-1"].sql("CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")

        if self.own_service:
            for h in self.nodes:
                self.echoes.append(self.ns[h].popen(["python3", "-c", ECHO_SERVER, str(ECHO_PORT)]))
            for h in self.nodes:
                lab.wait_for(lambda h=h: self.ns[h].exec(["ss", "-Htln", f"sport = :{ECHO_PORT}"]).stdout.strip(),
                             timeout=10, what=f"the echo server on {h}")

        log("tunneld on every host (routes, no per-peer ports)")
        for h in hosts:
            self.tunnels[h] = lab.Tunneld(self.workdir, "tunneld-" + h, self.config(h),
                                          netns=self.ns[h].name)
            self.tunnels[h].start()

        for h in self.nodes[1:]:
            port = CASCADE_ROUTE if self.cascade and h == "standby-2" else PRIMARY_ROUTE
            log(f"{h}: pg_basebackup through its route (127.0.0.1:{port})")
            pg = self.pg[h]
            pg.basebackup_from("127.0.0.1", port)
            with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
                f.write(f"cluster_name = '{h.replace('-', '')}'\n")
            pg.start()
            if self.cascade and h == "standby-1":
                lab.wait_for(lambda: self.streaming_from("primary-1") == ["standby1"], timeout=60,
                             what="standby-1 streaming (it feeds standby-2)")
        if self.cascade:
            lab.wait_for(lambda: self.streaming_from("standby-1") == ["standby2"], timeout=60,
                         what="standby-2 streaming from standby-1")
        else:
            lab.wait_for(lambda: len(self.streaming_from("primary-1")) == len(self.nodes) - 1, timeout=60,
                         what="every standby streaming from primary-1")
        if self.sync:  # only now: before the standbys stream, every commit would wait
            log(f"quorum commit on the primary: synchronous_standby_names = '{self.sync}'")
            self.pg["primary-1"].sql(f"ALTER SYSTEM SET synchronous_standby_names = '{self.sync}'")
            self.pg["primary-1"].sql("SELECT pg_reload_conf()")

    def config(self, host):
        d = os.path.join(self.workdir, host + "-tls")
        lines = [f"node: {host}", "tls:", f"  ca: {self.ca}", f"  cert: {d}/{host}.crt",
                 f"  key: {d}/{host}.key"]
        if host in self.nodes:
            i = NODES.index(host)
            allow = [h for h in self.nodes if h != host] + self.apps
            lines += ["inbound:", f'  listen: "{address(i)}:{TLS_PORT}"', '  backend: "127.0.0.1:5432"',
                      f"  allow: {lab.yaml_list(allow)}"]
            services = []
            if self.app_peers:
                services.append('    health: {backend: "127.0.0.1:8080", allow: [app]}')
            if self.own_service:
                services.append(f'    echo: {{backend: "127.0.0.1:{ECHO_PORT}", allow: {lab.yaml_list(allow)}, '
                                f'local: "127.0.0.1:{ECHO_LOCAL}", local_quorum: majority}}')
            if services:
                lines += ["  services:"] + services
        lines.append("peers:")
        for j, h in enumerate(NODES):
            if h != host and h in self.nodes:
                where = f"{INGRESS}:443" if self.ingress else f"{address(j)}:{TLS_PORT}"
                lines += [f"  - name: {h}", f'    connect: "{where}"']
                if self.app_peers and host == "app":
                    lines += [f'    local: "127.0.0.1:{6001 + j}"',
                              f'    services: {{health: "127.0.0.1:{18001 + j}"}}']
        lines += ["routes:", f'  - {{local: "127.0.0.1:{PRIMARY_ROUTE}", to: primary}}']
        if host == "standby-2":  # cascading: a fixed upstream
            lines.append(f'  - {{local: "127.0.0.1:{CASCADE_ROUTE}", to: standby-1}}')
        if self.ingress and host in NODES:
            # The inbound port admits the peers' addresses, which all resolve to
            # the ingress now; postgres stays loopback-only.
            lines += ["firewall:", "  protect:", "    - port: 5432", "      allow: []"]
        if host in self.apps:
            lines.append(f'  - {{local: "127.0.0.1:{REPLICA_ROUTE}", to: replica, '
                         f'max_lag: {self.replica_max_lag}}}')
            if self.app_peers:  # its plaintext listeners kept loopback-only by the guard
                lines += ["firewall:", "  enabled: true"]
        lines += ["keepalive: {idle: 2s, interval: 1s, count: 3, user_timeout: 6s}",
                  "timeouts: {connect: 2s, handshake: 3s, shutdown: 3s}",
                  "health:", f'  listen: "127.0.0.1:8080"', f"  probe_interval: {self.probe_interval}"]
        if host in self.nodes:
            pgdir = os.path.join(self.workdir, "pg-" + host)
            lines.append(f'  postgres: "host={pgdir} port=5432 user=postgres dbname=postgres"')
        if self.witness:
            lines.append(f"cluster: {{witnesses: [{self.witness}]}}")
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ facts
    def streaming_from(self, node):
        """application_names streaming from `node`'s postgres."""
        out = self.pg[node].sql("SELECT application_name, state FROM pg_stat_replication", check=False)
        return sorted(l.split("|")[0] for l in out.splitlines() if l.endswith("|streaming"))

    def status(self, host):
        return lab.http_request("127.0.0.1:8080", "/status", netns=self.ns[host].name)

    def route(self, host, local_port=PRIMARY_ROUTE):
        import json
        body = json.loads(self.status(host)[2])
        for r in body["routes"]:
            if r["local"].endswith(f":{local_port}"):
                return r
        raise KeyError(local_port)

    def app_sql(self, query, port=PRIMARY_ROUTE, timeout=5, host="app"):
        """psql from `host` (the app host by default) through one of its routes;
        (returncode, output)."""
        r = self.ns[host].exec(
            ["runuser", "-u", "postgres", "--", "psql",
             f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout={timeout}",
             "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query], check=False, cwd="/")
        return r.returncode, (r.stdout + r.stderr).strip()

    def address_of(self, host):
        if host in NODES:
            return address(NODES.index(host))
        return f"{NET}.{10 + ['app', 'app2'].index(host)}"

    def split(self, side_a, side_b, table="tdsplit"):
        """A partition between two groups of hosts: each host drops every packet
        to or from the other side's addresses (nftables in its own namespace),
        while hosts on one side still reach each other."""
        for mine, theirs in ((side_a, side_b), (side_b, side_a)):
            others = ", ".join(self.address_of(h) for h in theirs)
            rules = (f"table inet {table} {{\n"
                     f"  chain in {{ type filter hook input priority -300; policy accept; ip saddr {{ {others} }} drop; }}\n"
                     f"  chain out {{ type filter hook output priority -300; policy accept; ip daddr {{ {others} }} drop; }}\n"
                     "}\n")
            for h in mine:
                self.ns[h].exec(["nft", "-f", "-"], input=rules)
        self.split_hosts = list(side_a) + list(side_b)

    def unsplit(self, table="tdsplit"):
        for h in getattr(self, "split_hosts", []):
            self.ns[h].exec(["nft", "delete", "table", "inet", table], check=False)
        self.split_hosts = []

    def cut(self, host):
        lab.partition(self.ns[host])

    def heal(self, host):
        lab.heal(self.ns[host])

    def teardown(self):
        """Stops everything this lab started, each step on its own, so one
        failure cannot leave postgres or a namespace behind."""
        errors = []

        def attempt(what, fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - reported below, after the rest is stopped
                errors.append(f"{what}: {e!r}")

        for name, t in self.tunnels.items():
            attempt(f"tunneld {name}", t.stop)
        for e in self.echoes:
            attempt("an echo server", lambda e=e: lab.terminate(e))
        if self.haproxy:
            self.haproxy.terminate()
            attempt("haproxy", lambda: self.haproxy.wait(timeout=10))
        for name, pg in self.pg.items():
            attempt(f"postgres {name}", lambda pg=pg: stop_postgres(pg))
        for ns in list(self.ns.values()) + [self.switch]:
            if ns:
                ns.delete()
        if errors:
            raise AssertionError("teardown: " + "; ".join(errors))


def stop_postgres(pg):
    """pg_ctl stop -m fast, then (a walsender or a sync-rep wait can hold a
    fast shutdown) SIGQUIT and SIGKILL to the postmaster's PID."""
    pidfile = os.path.join(pg.data, "postmaster.pid")
    if not os.path.exists(pidfile):
        return
    pid = int(open(pidfile).readline())
    lab.as_postgres([lab.PG_BIN + "/pg_ctl", "-D", pg.data, "-m", "fast", "-t", "15", "-w", "stop"],
                    netns=pg.netns, check=False)
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        os.kill(pid, sig)
        time.sleep(1)

def haproxy_config():
    """TCP mode, routing on the TLS ClientHello's SNI (req.ssl_sni) without
    terminating TLS: what OpenShift routes, Traefik TCP routers and this
    HAProxy config do. A name it does not know gets no backend: closed."""
    lines = ["global", "  log stdout format raw local0", "defaults", "  mode tcp", "  log global",
             "  timeout connect 3s", "  timeout client 1h", "  timeout server 1h",
             "frontend ingress", f"  bind {INGRESS}:443", "  tcp-request inspect-delay 5s",
             "  tcp-request content accept if { req_ssl_hello_type 1 }"]
    for n in NODES:
        lines.append(f"  use_backend {n} if {{ req_ssl_sni -i {n} }}")
    for i, n in enumerate(NODES):
        lines += [f"backend {n}", f"  server {n} {address(i)}:{TLS_PORT}"]
    return "\n".join(lines) + "\n"
