"""A PostgreSQL cluster of three nodes and an application host, each in its own
network namespace on one switch (a bridge in a fifth namespace), each node with
its own tunneld. Replication and the application use routes (routes[]), so
after a promotion nothing is edited:

    node namespaces 10.88.1.1-3:  postgres :5432 <- tunneld inbound :8765
                                  route 127.0.0.1:6432 -> the primary (primary_conninfo)
    app namespace 10.88.1.10:     route 127.0.0.1:6432 -> the primary, :6442 -> a replica
"""
import os
import time

import lab

NET = "10.88.1"
TLS_PORT = 8765
PRIMARY_ROUTE = 6432
REPLICA_ROUTE = 6442
NODES = ("primary-1", "standby-1", "standby-2")


def address(i):
    return f"{NET}.{i + 1}"


class ClusterLab:
    def __init__(self, workdir, probe_interval="300ms", replica_max_lag="1MB"):
        self.workdir = workdir
        self.probe_interval = probe_interval
        self.replica_max_lag = replica_max_lag
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
        hosts = list(NODES) + ["app"]
        for i, h in enumerate(hosts):
            ns = lab.Netns(h.replace("-", ""))
            self.ns[h] = ns
            ip = address(i) if h != "app" else f"{NET}.10"
            a, b = lab.veth(ns, ip, self.switch, f"{NET}.{200 + i}")
            self.switch.exec(["ip", "addr", "flush", "dev", b])
            self.switch.exec(["ip", "link", "set", b, "master", "br0"])

        log("a private CA and one certificate per host")
        self.ca_dir = os.path.join(self.workdir, "pki")
        lab.tunneld_cli("certs", "init-ca", "--out", self.ca_dir, "--name", "cluster CA", check=True)
        self.ca = os.path.join(self.ca_dir, "ca.crt")
        for h in hosts:
            lab.tunneld_cli("certs", "issue", "--ca", self.ca_dir, "--name", h,
                            "--out", os.path.join(self.workdir, h + "-tls"), check=True)

        log("primary-1: PostgreSQL 15 primary")
        for h in NODES:
            self.pg[h] = lab.Postgres(os.path.join(self.workdir, "pg-" + h), 5432, self.ns[h])
        self.pg["primary-1"].initdb()
        self.pg["primary-1"].start()
        self.pg["primary-1"].sql("CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")

        log("tunneld on every host (routes, no per-peer ports)")
        for h in hosts:
            self.tunnels[h] = lab.Tunneld(self.workdir, "tunneld-" + h, self.config(h),
                                          netns=self.ns[h].name)
            self.tunnels[h].start()

        for h in ("standby-1", "standby-2"):
            log(f"{h}: pg_basebackup through its route to the primary (127.0.0.1:{PRIMARY_ROUTE})")
            pg = self.pg[h]
            pg.basebackup_from("127.0.0.1", PRIMARY_ROUTE)
            with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
                f.write(f"cluster_name = '{h.replace('-', '')}'\n")
            pg.start()
        lab.wait_for(lambda: len(self.streaming_from("primary-1")) == 2, timeout=60,
                     what="both standbys streaming from primary-1")

    def config(self, host):
        d = os.path.join(self.workdir, host + "-tls")
        lines = [f"node: {host}", "tls:", f"  ca: {self.ca}", f"  cert: {d}/{host}.crt",
                 f"  key: {d}/{host}.key"]
        if host in NODES:
            i = NODES.index(host)
            allow = [h for h in NODES if h != host] + ["app"]
            lines += ["inbound:", f'  listen: "{address(i)}:{TLS_PORT}"', '  backend: "127.0.0.1:5432"',
                      f"  allow: {lab.yaml_list(allow)}"]
        lines.append("peers:")
        for j, h in enumerate(NODES):
            if h != host:
                lines += [f"  - name: {h}", f'    connect: "{address(j)}:{TLS_PORT}"']
        lines += ["routes:", f'  - {{local: "127.0.0.1:{PRIMARY_ROUTE}", to: primary}}']
        if host == "app":
            lines.append(f'  - {{local: "127.0.0.1:{REPLICA_ROUTE}", to: replica, '
                         f'max_lag: {self.replica_max_lag}}}')
        lines += ["keepalive: {idle: 2s, interval: 1s, count: 3, user_timeout: 6s}",
                  "timeouts: {connect: 2s, handshake: 3s, shutdown: 3s}",
                  "health:", f'  listen: "127.0.0.1:8080"', f"  probe_interval: {self.probe_interval}"]
        if host in NODES:
            pgdir = os.path.join(self.workdir, "pg-" + host)
            lines.append(f'  postgres: "host={pgdir} port=5432 user=postgres dbname=postgres"')
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

    def app_sql(self, query, port=PRIMARY_ROUTE, timeout=5):
        """psql from the app host through one of its routes; (returncode, output)."""
        r = self.ns["app"].exec(
            ["runuser", "-u", "postgres", "--", "psql",
             f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout={timeout}",
             "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query], check=False, cwd="/")
        return r.returncode, (r.stdout + r.stderr).strip()

    def cut(self, host):
        lab.partition(self.ns[host])

    def heal(self, host):
        lab.heal(self.ns[host])

    def teardown(self):
        for t in self.tunnels.values():
            t.stop()
        for pg in self.pg.values():
            pg.stop()
        for ns in list(self.ns.values()) + [self.switch]:
            if ns:
                ns.delete()
