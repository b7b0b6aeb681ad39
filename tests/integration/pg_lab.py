"""PostgreSQL 15 for the tests: a cluster in a data directory of its own run
as the postgres user (Postgres), and the two-node replication lab (a primary and
a standby in network namespaces, replicating through a tunneld pair with its
firewall and health endpoint) that the demo and the PostgreSQL tests use.
Imported by lab.py, which re-exports these names."""

import os
import shutil

from lab import Netns, Tunneld, node_config, run, tunneld_cli, veth, wait_for


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
