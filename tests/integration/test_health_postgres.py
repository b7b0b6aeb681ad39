"""The health endpoint with real PostgreSQL 15 on both nodes of a replication
lab: roles, lag, a peer or postgres stopped or hung, a missing role, and
HAProxy routing by /primary across a failover."""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import lab
from health_lab import PROBE_INTERVAL, code, problems


needs_root = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and the postgres user")


@pytest.fixture(scope="module")
def pg():
    workdir = lab.tmpdir()
    rl = lab.ReplicationLab(workdir, firewall=True, health=True)
    try:
        rl.setup(log=lambda *_: None)
        yield rl
    finally:
        rl.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


def role_codes(t):
    return {p: code(t, p) for p in ("/primary", "/replica", "/health", "/readiness")}


@needs_root
def test_pg_all_up_roles_and_status(pg):
    up = {"/health": 200, "/readiness": 200}
    lab.wait_for(lambda: role_codes(pg.primary_tunnel) == {**up, "/primary": 200, "/replica": 503},
                 timeout=10, what="primary's endpoints")
    lab.wait_for(lambda: role_codes(pg.standby_tunnel) == {**up, "/primary": 503, "/replica": 200},
                 timeout=10, what="standby's endpoints")
    s = pg.standby_tunnel.status()
    assert s["postgres"]["role"] == "replica" and s["postgres"]["receiver_status"] == "streaming"
    assert s["peers"][0]["backend"]["postgres"]["in_recovery"] is False  # the pong says the peer is primary
    p = pg.primary_tunnel.status()
    assert p["postgres"]["role"] == "primary" and p["firewall"]["applied"] is True
    assert p["inbound"]["peers"]["standby-1"]["active"] >= 1  # the walreceiver's connection
    text = pg.primary_tunnel.http("/metrics")[2]
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "tunneld_firewall_dropped_packets_total" in text and "tunneld_postgres_in_recovery 0" in text
    # `tunneld check` asks postgres the same way.
    r = lab.tunneld_cli("check", "--peer", pg.standby_tunnel.config_path, netns=pg.standby_ns)
    assert "ok    health.postgres answers: postgres is a standby (WAL receiver streaming)" in r.stdout, r.stdout
    assert "ok    health endpoint on http://0.0.0.0:8080/" in r.stdout


@needs_root
def test_pg_replica_lag_under_load_with_replay_paused(pg):
    pg.primary.pgbench("-i", "-q", "-s", "2", "postgres")
    lab.wait_for(pg.caught_up, timeout=30, what="standby caught up")
    lab.wait_for(lambda: code(pg.standby_tunnel, "/replica?lag=1MB") == 200, timeout=10, what="lag small")
    pg.standby.sql("SELECT pg_wal_replay_pause()")
    try:
        pg.primary.pgbench("-T", "5", "-c", "4", "-n", "postgres")
        lab.wait_for(lambda: code(pg.standby_tunnel, "/replica?lag=1MB") == 503, timeout=10, what="lag > 1MB")
        s = pg.standby_tunnel.status()["postgres"]
        assert s["replay_paused"] is True and s["lag_bytes"] > 1 << 20
        assert code(pg.standby_tunnel, "/replica?lag=1GB") == 200
        assert code(pg.standby_tunnel, "/replica") == 200  # no lag given: streaming is enough
        assert "replication lag" in problems(pg.standby_tunnel, "/replica?lag=1MB")[0]
        print(f"replay paused: lag {s['lag_bytes']} bytes, /replica?lag=1MB 503, ?lag=1GB 200")
    finally:
        pg.standby.sql("SELECT pg_wal_replay_resume()")
    lab.wait_for(lambda: code(pg.standby_tunnel, "/replica?lag=1MB") == 200, timeout=30, what="lag small again")


@needs_root
def test_pg_peer_tunneld_killed_and_back(pg):
    pg.primary_tunnel.proc.kill()
    pg.primary_tunnel.proc.wait()
    lab.wait_for(lambda: code(pg.standby_tunnel, "/readiness") == 503, timeout=5, interval=0.05,
                 what="standby readiness 503")
    assert pg.standby_tunnel.status()["peers"][0]["state"] == "unreachable"
    pg.primary_tunnel.start()
    lab.wait_for(lambda: code(pg.standby_tunnel, "/readiness") == 200, timeout=10, what="standby ready again")
    lab.wait_for(lambda: pg.streaming(), timeout=30, what="streaming again")


@needs_root
def test_pg_peer_postgres_stopped_and_local_postgres_stopped(pg):
    pg.primary.stop()
    try:
        # On the standby: the peer is reachable, its postgres is down.
        lab.wait_for(lambda: pg.standby_tunnel.status()["peers"][0]["backend_state"] == "down", timeout=10,
                     what="peer backend down")
        peer = pg.standby_tunnel.status()["peers"][0]
        assert peer["state"] == "up" and peer["summary"].startswith("reachable, its backend down")
        assert code(pg.standby_tunnel, "/readiness") == 200
        # On the primary: its own postgres is down.
        lab.wait_for(lambda: code(pg.primary_tunnel, "/health") == 503, timeout=10, what="primary /health 503")
        assert code(pg.primary_tunnel, "/readiness") == 200
        assert code(pg.primary_tunnel, "/primary") == 503
        assert pg.primary_tunnel.status()["postgres"]["role"] == "down"
    finally:
        pg.primary.start()
    lab.wait_for(lambda: code(pg.primary_tunnel, "/health") == 200, timeout=10, what="primary healthy again")
    lab.wait_for(lambda: pg.streaming(), timeout=30, what="streaming again")


def postgres_processes(cluster):
    """The postmaster of `cluster` (lab.Postgres) and every process under it."""
    with open(os.path.join(cluster.data, "postmaster.pid")) as f:
        top = int(f.readline())
    out, todo = [], [top]
    while todo:
        pid = todo.pop()
        out.append(pid)
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                todo += [int(c) for c in f.read().split()]
    return out


@needs_root
def test_pg_a_hung_postgres_shows_as_timed_out_and_the_endpoint_never_waits_for_it(pg):
    """The real postmaster and its backends stopped (SIGSTOP: accepts, but never
    answers): every health request is still answered at once, and within
    check_timeout (3 s) /health says `timed out after 3s`. Until now this was
    shown only with injected snapshots."""
    t = pg.primary_tunnel
    lab.wait_for(lambda: code(t, "/health") == 200, timeout=10, what="primary healthy")
    procs = postgres_processes(pg.primary)
    for p in procs:
        os.kill(p, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        slowest = 0.0

        def timed_out():
            nonlocal slowest
            started = time.monotonic()
            status, _, body = t.http("/health", timeout=5)
            slowest = max(slowest, time.monotonic() - started)
            return status == 503 and "timed out after 3s" in body

        lab.wait_for(timed_out, timeout=15, interval=0.1, what="/health: timed out after 3s")
        assert time.monotonic() - stopped_at < 3 + 2 * PROBE_INTERVAL + 2
        assert slowest < 1.5, f"a health request waited {slowest:.2f} s for postgres"
        started = time.monotonic()
        assert code(t, "/liveness") == 200 and code(t, "/readiness") == 200
        assert time.monotonic() - started < 1.5
    finally:
        for p in procs:
            os.kill(p, signal.SIGCONT)
    lab.wait_for(lambda: code(t, "/health") == 200, timeout=15, what="healthy once postgres runs again")


@needs_root
def test_pg_missing_health_role_is_named_and_the_backend_counts_as_up(pg):
    """health.postgres with a role that does not exist yet (the README's order
    once put CREATE ROLE tunneld last): the endpoint names the role and the fix,
    the backend is up (postgres answered), and `tunneld check` says the same."""
    role = "tunneld_health"
    pg.primary.sql(f"DROP ROLE IF EXISTS {role}")
    ca_path = os.path.join(pg.ca_dir, "ca.crt")
    cert, key = (os.path.join(pg.workdir, "primary-tls", "primary-1" + ext) for ext in (".crt", ".key"))
    t = lab.Tunneld(pg.workdir, "tunneld-norole", lab.node_config(
        "primary-1", ca_path, cert, key,
        inbound={"listen": f"127.0.0.1:{lab.free_port()}", "backend": "127.0.0.1:5432", "allow": ["standby-1"]},
        extra=f'health:\n  listen: "127.0.0.1:{lab.free_port()}"\n  probe_interval: 500ms\n'
              f'  postgres: "host={pg.primary.dir} port=5432 user={role} dbname=postgres"\n'),
        netns=pg.primary_ns.name)
    t.start()
    try:
        want = (f"health.postgres: role {role} does not exist: on the primary run "
                f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor")
        lab.wait_for(lambda: t.status()["backend"]["checked"], what="first backend check")
        s = t.status()
        assert s["backend"]["reachable"] is True, s["backend"]  # postgres is up; only the role is missing
        assert s["postgres"]["role"] == "unknown" and s["postgres"]["error"].startswith(want), s["postgres"]
        assert problems(t, "/health")[0].startswith(want)
        assert problems(t, "/primary")[0].startswith(want)
        t.wait_log(r"warning " + re.escape(want))
        assert not t.log_lines(r"backend does not accept connections")
        r = lab.tunneld_cli("check", "--peer", t.config_path, netns=pg.primary_ns)
        assert r.returncode == 0 and f"warn  {want}" in r.stdout, r.stdout  # tunneld runs; /primary says why
        # The fix the message gives works without touching tunneld.
        pg.primary.sql(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor")
        lab.wait_for(lambda: code(t, "/primary") == 200, timeout=10, what="/primary 200 once the role exists")
        t.wait_log(r"info health: postgres is the primary")
    finally:
        t.stop()
        pg.primary.sql(f"DROP ROLE IF EXISTS {role}")


@needs_root
def test_pg_haproxy_routes_to_the_primary_across_a_failover(pg):
    cfg = os.path.join(pg.workdir, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
listen postgres_primary
    bind 127.0.0.1:5000
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 2 rise 1 on-marked-down shutdown-sessions
    server node1 {lab.APP_PRIMARY_NET}.1:5432 check port 8080
    server node2 {lab.APP_STANDBY_NET}.1:5433 check port 8080
""")
    haproxy = pg.app_ns.popen(["haproxy", "-db", "-f", cfg], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def routed():
            r = pg.app_ns.exec(["psql", "host=127.0.0.1 port=5000 user=postgres dbname=postgres connect_timeout=2",
                                "-XAtc", "SELECT inet_server_addr(), pg_is_in_recovery()"], check=False)
            return r.stdout.strip() if r.returncode == 0 else None

        assert lab.wait_for(routed, timeout=10, what="haproxy routes") == f"{lab.APP_PRIMARY_NET}.1|f"
        # Failover: the old primary stops, the standby is promoted.
        pg.primary.stop()
        lab.as_postgres([f"{lab.PG_BIN}/pg_ctl", "-D", pg.standby.data, "promote", "-w"], netns=pg.standby_ns)
        started = time.monotonic()
        lab.wait_for(lambda: routed() == f"{lab.APP_STANDBY_NET}.1|f", timeout=15, interval=0.1,
                     what="haproxy routes to the new primary")
        took = time.monotonic() - started
        assert took < 5, took  # a few check intervals (500 ms each)
        print(f"haproxy routed psql to the promoted standby {took:.2f}s after promotion")
        assert role_codes(pg.standby_tunnel)["/primary"] == 200
        assert role_codes(pg.standby_tunnel)["/replica"] == 503
        assert pg.standby_tunnel.status()["postgres"]["role"] == "primary"
    finally:
        lab.terminate(haproxy)
