"""Clusters through routes[]: three PostgreSQL 15 nodes and an application host,
each with its own tunneld, in network namespaces on one switch. A promotion is
followed with no edit to tunneld or PostgreSQL; a split brain is never routed."""
import json
import re
import subprocess
import threading
import time

import pytest

import lab
from cluster_lab import CASCADE_ROUTE, PRIMARY_ROUTE, REPLICA_ROUTE, ClusterLab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and the postgres user")


def running(workdir, **options):
    """A ClusterLab set up with `options`, torn down after the test."""
    c = ClusterLab(workdir, **options)
    try:
        c.setup(log=lambda *_: None)
        yield c
    finally:
        c.teardown()


@pytest.fixture
def cluster(workdir):
    yield from running(workdir)


class Writer:
    """An application writing one row at a time through the app host's route to
    the primary; records when writes fail and succeed."""

    def __init__(self, cluster):
        self.c = cluster
        self.ok_times, self.fail_times = [], []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            rc, _ = self.c.app_sql("INSERT INTO ticks DEFAULT VALUES", timeout=2)
            (self.ok_times if rc == 0 else self.fail_times).append(time.monotonic())
            time.sleep(0.05)

    def first_ok_after(self, t):
        return next((x for x in self.ok_times if x > t), None)

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=30)


def test_promotion_is_followed_and_split_brain_is_never_routed(cluster):
    c = cluster
    assert c.streaming_from("primary-1") == ["standby1", "standby2"]
    roles = lambda: {x["name"]: x["role"] for x in c.route("standby-2")["candidates"]}
    lab.wait_for(lambda: roles() == {"primary-1": "primary", "standby-1": "replica", "standby-2": "replica"},
                 timeout=10, what="standby-2's route seeing every role")
    route = c.route("standby-2")
    assert route["target"] == "primary-1" and not route["split_brain"]
    assert c.app_sql("SELECT count(*) >= 0 FROM ticks") == (0, "t")
    # On the primary's own host the route goes straight to its backend (no TLS, no peer).
    assert c.app_sql("SELECT pg_is_in_recovery()", host="primary-1") == (0, "f")
    c.tunnels["primary-1"].wait_log(r"outbound open peer=primary-1 remote=127\.0\.0\.1:5432 "
                                    r"local=127\.0\.0\.1:\d+ route=127\.0\.0\.1:6432")
    c.tunnels["primary-1"].wait_log(r"outbound close peer=primary-1 .* route=127\.0\.0\.1:6432 .*reason=finished")

    # Under load: the primary host dies (postgres killed, its link cut), standby-1 is promoted.
    writer = Writer(c)
    lab.wait_for(lambda: len(writer.ok_times) >= 10, timeout=30, what="the application writing")
    c.cut("primary-1")
    lab.as_postgres([lab.PG_BIN + "/pg_ctl", "-D", c.pg["primary-1"].data, "-m", "immediate", "stop"],
                    netns=c.ns["primary-1"], check=False)
    promoted_at = time.monotonic()
    c.pg["standby-1"].sql("SELECT pg_promote(wait => true)")
    lab.wait_for(lambda: c.streaming_from("standby-1") == ["standby2"], timeout=60,
                 what="standby-2 streaming from the new primary standby-1")
    standby2_streaming = time.monotonic() - promoted_at
    lab.wait_for(lambda: writer.first_ok_after(promoted_at), timeout=60,
                 what="the application writing to the new primary")
    app_writes = writer.first_ok_after(promoted_at) - promoted_at
    writer.finish()
    print(f"MEASURED promote -> standby-2 streaming: {standby2_streaming:.2f} s; "
          f"promote -> application write ok: {app_writes:.2f} s")

    # Nothing was edited: standby-2 still points at its own route.
    conninfo = c.pg["standby-2"].sql("SHOW primary_conninfo")
    assert f"port={PRIMARY_ROUTE}" in conninfo and "host=127.0.0.1" in conninfo, conninfo
    t = c.tunnels["standby-2"]
    t.wait_log(r"route 127\.0\.0\.1:6432 \(to primary\): switched primary-1 -> standby-1 "
               r"\(standby-1 reports primary; primary-1 unreachable: .*\); closed \d+ connection")
    r = c.route("standby-2")
    assert r["target"] == "standby-1" and r["last_switch"]["from"] == "primary-1", r
    # standby-1's own route now ends at its own backend.
    assert c.app_sql("SELECT pg_is_in_recovery()", host="standby-1") == (0, "f")
    # The walreceiver's old connection was closed by the switch, or had died with the link.
    closes = t.log_lines(r"outbound close peer=primary-1 .*route=127\.0\.0\.1:6432")
    assert closes, t.read_log()[-3000:]
    # Every committed write is on the new primary and replicated to standby-2.
    lab.wait_for(lambda: c.pg["standby-2"].sql("SELECT count(*) FROM ticks") ==
                 c.pg["standby-1"].sql("SELECT count(*) FROM ticks"), timeout=30, what="standby-2 caught up")

    # Split brain: the old primary comes back as a primary, without a rewind.
    c.pg["primary-1"].start()
    c.heal("primary-1")
    lab.wait_for(lambda: c.route("app")["split_brain"], timeout=30, what="the app's route seeing a split brain")
    r = c.route("app")
    assert r["target"] is None and r["refusal"] == "no_primary", r
    assert r["detail"] == "split brain: primary-1 and standby-1 both report primary", r
    rc, out = c.app_sql("INSERT INTO ticks DEFAULT VALUES", timeout=3)
    assert rc != 0, out
    c.tunnels["app"].wait_log(r'reason=no_primary detail="split brain: primary-1 and standby-1 both report primary"')
    status, _, body = lab.http_request("127.0.0.1:8080", "/health", netns=c.ns["app"].name)
    assert status == 503 and "split brain" in body, body
    _, _, metrics = lab.http_request("127.0.0.1:8080", "/metrics", netns=c.ns["app"].name)
    assert re.search(r'tunneld_route_split_brain\{route="127\.0\.0\.1:6432"\} 1', metrics), metrics
    assert re.search(r'tunneld_route_candidates\{route="127\.0\.0\.1:6432",role="primary"\} 2', metrics)
    # standby-2 is never connected to the old primary; its safe stream stays. Once
    # standby-2's own route has seen the split brain (the decision that would have
    # sent it to primary-1 is made), it has not gone there and no longer can.
    lab.wait_for(lambda: c.route("standby-2")["split_brain"], timeout=30, what="standby-2's route seeing it")
    r2 = c.route("standby-2")
    assert r2["target"] is None and (r2["last_switch"] or {}).get("to") != "primary-1", r2
    assert "standby2" not in c.streaming_from("primary-1")
    assert c.streaming_from("standby-1") == ["standby2"]

    # The old primary stops: routing resumes to standby-1 by itself.
    c.pg["primary-1"].stop()
    lab.wait_for(lambda: c.route("app")["target"] == "standby-1", timeout=30, what="routing resumed")
    assert c.app_sql("INSERT INTO ticks DEFAULT VALUES RETURNING 1") == (0, "1")


def cluster_names_through(c, port, n, hold=4):
    """Opens `n` concurrent sessions from the app host through route `port`; the
    cluster_name each landed on (sessions stay open `hold` s, so the route sees
    them all live)."""
    procs = [c.ns["app"].popen(
        ["runuser", "-u", "postgres", "--", "psql",
         f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5", "-XAtq",
         "-c", f"SELECT current_setting('cluster_name'), pg_sleep({hold})"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/") for _ in range(n)]
    out = [p.communicate(timeout=60)[0].strip() for p in procs]
    return [o.split("|")[0] if "|" in o else o for o in out]


def test_reads_spread_over_replicas_and_leave_out_one_that_lags(cluster):
    c = cluster
    lab.wait_for(lambda: {x["name"] for x in c.route("app", REPLICA_ROUTE)["candidates"] if x["eligible"]}
                 == {"standby-1", "standby-2"}, timeout=20, what="both standbys eligible for reads")
    names = cluster_names_through(c, REPLICA_ROUTE, 20)
    assert sorted(set(names)) == ["standby1", "standby2"], names
    assert abs(names.count("standby1") - names.count("standby2")) <= 2, names  # fewest connections first

    # Replay paused on standby-2 while the primary writes 8 MB of WAL: its lag passes 1 MB.
    c.pg["standby-2"].sql("SELECT pg_wal_replay_pause()")
    c.pg["primary-1"].sql("CREATE TABLE bulk AS SELECT g, md5(g::text) AS v FROM generate_series(1, 120000) g")
    written = c.pg["primary-1"].sql("SELECT pg_current_wal_lsn()")
    def reads():
        return {x["name"]: x for x in c.route("app", REPLICA_ROUTE)["candidates"]}

    # standby-1 lags too while it replays the 8 MB, and is left out meanwhile; the
    # route may see it caught up on samples from before the write, and then really
    # lagging on its next one: wait for standby-1's replay itself first. (A primary
    # sample newer than standby-1's is not held against it: route_choice.hpp.)
    lab.wait_for(lambda: c.pg["standby-1"].sql(f"SELECT pg_last_wal_replay_lsn() >= '{written}'") == "t",
                 timeout=30, interval=0.2, what="standby-1 replaying past the bulk write")
    lab.wait_for(lambda: "lag" in reads()["standby-2"]["why_not"] and reads()["standby-1"]["eligible"],
                 timeout=30, what="standby-2 left out for its lag, standby-1 caught up")
    lagging = next(x for x in c.route("app", REPLICA_ROUTE)["candidates"] if x["name"] == "standby-2")
    assert lagging["lag_bytes"] > 1 << 20 and not lagging["eligible"], lagging
    assert set(cluster_names_through(c, REPLICA_ROUTE, 10, hold=1)) == {"standby1"}
    c.tunnels["app"].wait_log(r"route 127\.0\.0\.1:6442 \(to replica\): candidates standby-1; "
                              r"left out: .*standby-2 lag [\d.]+ MB > 1 MB")

    # Replay resumes: it catches up and is a candidate again.
    c.pg["standby-2"].sql("SELECT pg_wal_replay_resume()")
    lab.wait_for(lambda: all(x["eligible"] for x in c.route("app", REPLICA_ROUTE)["candidates"]
                             if x["name"] != "primary-1"), timeout=30, what="standby-2 back")
    # The primary is never a read target.
    assert "primary1" not in cluster_names_through(c, REPLICA_ROUTE, 6, hold=1)


@pytest.fixture
def cascade(workdir):
    yield from running(workdir, cascade=True)


def test_cascading_standby_follows_its_fixed_upstream_and_heals_after_a_partition(cascade):
    c = cascade
    assert c.streaming_from("primary-1") == ["standby1"]
    assert c.streaming_from("standby-1") == ["standby2"]
    r = c.route("standby-2", CASCADE_ROUTE)
    assert r["to"] == "standby-1" and r["target"] == "standby-1", r
    c.pg["primary-1"].sql("CREATE TABLE dr AS SELECT g FROM generate_series(1, 50000) g")
    lab.wait_for(lambda: c.pg["standby-2"].sql("SELECT count(*) FROM dr", check=False) == "50000",
                 timeout=30, what="the rows reaching standby-2 through standby-1")
    # Lag is visible on each node's /replica.
    for host in ("standby-1", "standby-2"):
        status, _, body = lab.http_request("127.0.0.1:8080", "/replica?lag=16MB", netns=c.ns[host].name)
        assert status == 200 and json.loads(body)["tunneld"]["lag_bytes"] is not None, (host, body)

    # A partition between standby-1 and standby-2 only (both still reach the primary).
    upstream = c.address_of("standby-1")
    cut = ("table inet tdcut {\n"
           f"  chain in {{ type filter hook input priority -300; ip saddr {upstream} drop; }}\n"
           f"  chain out {{ type filter hook output priority -300; ip daddr {upstream} drop; }}\n"
           "}\n")
    c.ns["standby-2"].exec(["nft", "-f", "-"], input=cut)
    c.pg["primary-1"].sql("INSERT INTO dr SELECT g FROM generate_series(50001, 60000) g")
    lab.wait_for(lambda: c.streaming_from("standby-1") == [], timeout=30,
                 what="standby-1 noticing standby-2 gone (keepalive)")
    c.ns["standby-2"].exec(["nft", "delete", "table", "inet", "tdcut"])
    lab.wait_for(lambda: c.streaming_from("standby-1") == ["standby2"], timeout=30,
                 what="standby-2 streaming again by itself")
    lab.wait_for(lambda: c.pg["standby-2"].sql("SELECT count(*) FROM dr", check=False) == "60000",
                 timeout=30, what="standby-2 caught up after the partition")
    assert "standby2" not in c.streaming_from("primary-1")  # it never went around its upstream


@pytest.fixture
def quorum(workdir):
    yield from running(workdir, sync="ANY 1 (standby1, standby2)")


def test_quorum_commit_survives_a_killed_tunnel_and_a_partitioned_standby(quorum):
    c = quorum
    p = c.pg["primary-1"]
    assert p.sql("SHOW synchronous_standby_names") == "ANY 1 (standby1, standby2)"
    lab.wait_for(lambda: p.sql("SELECT string_agg(application_name || ':' || sync_state, ',' "
                               "ORDER BY application_name) FROM pg_stat_replication")
                 == "standby1:quorum,standby2:quorum", timeout=20, what="both standbys in the quorum")
    p.pgbench("-i", "-q", "-s", "2", "postgres")
    load = subprocess.Popen(["ip", "netns", "exec", c.ns["primary-1"].name, "runuser", "-u", "postgres", "--",
                             "pgbench", "-h", p.dir, "-p", "5432", "-U", "postgres", "-T", "10", "-c", "4",
                             "-n", "postgres"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
    time.sleep(2)
    # kill -9 standby-1's tunneld mid-load: the kernel resets its connections.
    c.tunnels["standby-1"].proc.kill()
    c.tunnels["standby-1"].proc.wait()
    out = load.communicate(timeout=60)[0]
    assert "number of failed transactions: 0" in out, out
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    assert tps > 0, out
    # Restarted, the killed path resumes by itself (the walreceiver retries).
    c.tunnels["standby-1"].start()
    lab.wait_for(lambda: c.streaming_from("primary-1") == ["standby1", "standby2"], timeout=30,
                 what="standby-1 streaming again")
    target = p.sql("SELECT pg_current_wal_lsn()")
    for h in ("standby-1", "standby-2"):
        lab.wait_for(lambda: c.pg[h].sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'", check=False) == "t",
                     timeout=30, what=f"{h} caught up")
    fp = "SELECT md5(string_agg(abalance::text, ',' ORDER BY aid)) || count(*) FROM pgbench_accounts"
    assert p.sql(fp) == c.pg["standby-1"].sql(fp) == c.pg["standby-2"].sql(fp)

    # FIRST 1 (standby1, standby2) with standby-1's host partitioned: commits go on via standby-2.
    p.sql("ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (standby1, standby2)'")
    p.sql("SELECT pg_reload_conf()")
    lab.wait_for(lambda: p.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")
                 == "sync", timeout=20, what="standby1 the synchronous standby")
    c.cut("standby-1")
    started = time.monotonic()
    # Blocks until standby-2 takes over as the synchronous standby (bounded here, not by postgres).
    lab.as_postgres(["psql", "-h", p.dir, "-p", "5432", "-U", "postgres", "-XAtq", "-v", "ON_ERROR_STOP=1",
                     "-c", "CREATE TABLE after_cut (id int)",
                     "-c", "INSERT INTO after_cut SELECT generate_series(1, 20)"],
                    netns=c.ns["primary-1"], timeout=60)
    stall = time.monotonic() - started
    assert p.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby2'") == "sync"
    print(f"MEASURED FIRST 1 with standby-1 partitioned: first commit after {stall:.1f} s "
          "(keepalive 2s+1sx3, user_timeout 6s)")
    lab.wait_for(lambda: c.pg["standby-2"].sql("SELECT count(*) FROM after_cut", check=False) == "20",
                 timeout=10, what="standby-2 has the commits")
    c.heal("standby-1")


@pytest.fixture
def ingress(workdir):
    yield from running(workdir, ingress=True)


def test_behind_an_sni_routing_ingress(ingress):
    """One public address and port (HAProxy routing on req.ssl_sni, no TLS
    termination) in front of three nodes: what blocked PostgreSQL's own
    protocol (STARTTLS-like SSLRequest, no SNI) behind OpenShift routes."""
    c = ingress
    from cluster_lab import INGRESS
    assert len(c.streaming_from("primary-1")) == 2
    # Every probe goes through the ingress and is answered.
    for host in ("primary-1", "standby-1", "standby-2", "app"):
        body = json.loads(c.status(host)[2])
        assert all(p["state"] == "up" for p in body["peers"]), (host, body["peers"])
        assert all(p["connect"] == f"{INGRESS}:443" for p in body["peers"])
    assert c.app_sql("SELECT pg_is_in_recovery()") == (0, "f")
    # A name the ingress does not know gets nothing: closed before any certificate.
    r = c.ns["app"].exec(["openssl", "s_client", "-connect", f"{INGRESS}:443", "-servername", "standby-9",
                          "-tls1_3", "-brief"], input="", check=False, timeout=20)
    assert "CONNECTION ESTABLISHED" not in r.stdout + r.stderr, r.stdout + r.stderr
    # PostgreSQL's own protocol to the ingress: no ClientHello, no SNI, refused.
    r = c.ns["app"].exec(["runuser", "-u", "postgres", "--", "psql",
                          f"host={INGRESS} port=443 user=postgres dbname=postgres connect_timeout=5 sslmode=require",
                          "-c", "SELECT 1"], check=False, cwd="/")
    assert r.returncode != 0
    # The nodes' guards admit only the ingress on the tunnel port: the app host
    # going around it is dropped, the guard shows the ingress as the only peer address.
    code = ("import socket\ns=socket.socket(); s.settimeout(3)\n"
            f"try:\n s.connect(('{c.address_of('primary-1')}', 8765)); print('connected')\n"
            "except Exception as e: print(type(e).__name__)\n")
    assert c.ns["app"].exec(["/usr/bin/python3", "-c", code]).stdout.strip() in ("TimeoutError", "timeout")
    shown = lab.tunneld_cli("firewall", "show", "--peer", c.tunnels["primary-1"].config_path,
                            netns=c.ns["primary-1"]).stdout
    assert f"port 8765: loopback, {INGRESS}/32" in shown, shown


def test_three_node_example_configs_pass_check(workdir):
    """configs/three-node/*.yaml, with their /etc/tunneld paths pointed at real
    certificates, pass `tunneld check` (each in a namespace of its own, so the
    ports are free; the example hosts do not resolve here: warnings, not failures)."""
    import os
    root = os.path.join(lab.ROOT, "configs", "three-node")
    names = ("primary-1", "standby-1", "standby-2", "app")
    outputs = lab.check_example_configs(workdir, {n: os.path.join(root, n + ".yaml") for n in names})
    for out in outputs.values():
        assert re.search(r"ok    route 127\.0\.0\.1:6432 -> the primary among ", out), out
