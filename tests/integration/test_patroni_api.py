"""Patroni REST API parity with real clients: a PostgreSQL 15 primary and two
standbys under synchronous_standby_names = 'FIRST 1 (standby1, standby2)', each
with its own tunneld (cluster_lab.py), an application host whose tunneld
reaches every node, and the README's HAProxy configuration run verbatim on it.

The tests share one cluster and run in order: the seed case (/sync moves when
the sync standby's tunnel is killed), every path with every method in every
state, who is who in pg_stat_replication (and inbound.source with pg_hba.conf),
a real Prometheus with the shipped rules, then HAProxy across a promotion."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import lab
from cluster_lab import ClusterLab, stop_postgres
from monitoring_lab import MONITORING, exposition_labels, prometheus_api, used_by_monitoring

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and the postgres user")

SYNC = "FIRST 1 (standby1, standby2)"
HEALTH = "127.0.0.1:8080"

# Patroni 3.0.2's codes (api.py do_GET) for a node in each state: the leader,
# a running replica that is (sync) or is not (async) the synchronous standby,
# and a node whose postgres is stopped. /health, /liveness and /readiness are
# tunneld's own (README: the parity table) and left out of this comparison.
PATRONI_CODES = {
    #                              primary sync async stopped
    "/":                           (200, 503, 503, 503),
    "/primary":                    (200, 503, 503, 503),
    "/master":                     (200, 503, 503, 503),
    "/leader":                     (200, 503, 503, 503),
    "/read-write":                 (200, 503, 503, 503),
    "/standby-leader":             (503, 503, 503, 503),
    "/replica":                    (503, 200, 200, 503),
    "/replica?lag=64MB":           (503, 200, 200, 503),
    "/replica?replication_state=streaming": (503, 200, 200, 503),
    "/read-only":                  (200, 200, 200, 503),
    "/synchronous":                (503, 200, 503, 503),
    "/sync":                       (503, 200, 503, 503),
    "/sync?lag=64MB":              (503, 200, 503, 503),
    "/asynchronous":               (503, 503, 200, 503),
    "/async":                      (503, 503, 200, 503),
    "/async?lag=64MB":             (503, 503, 200, 503),
    "/read-only-sync":             (200, 200, 503, 503),
    "/read-only-synchronous":      (200, 200, 503, 503),
    "/patroni":                    (200, 200, 200, 200),
}
STATES = ("primary", "sync", "async", "stopped")

# Many requests in one process inside a namespace: [(method, path)] -> [[status, body]].
_MANY = r"""
import http.client, json, sys
host, port = sys.argv[1].rsplit(":", 1)
out = []
for method, path in json.loads(sys.argv[2]):
    c = http.client.HTTPConnection(host, int(port), timeout=5)
    c.request(method, path)
    r = c.getresponse()
    out.append([r.status, r.read().decode(errors="replace")])
    c.close()
print(json.dumps(out))
"""


def requests(c, host, pairs):
    r = c.ns[host].exec(["/usr/bin/python3", "-c", _MANY, HEALTH, json.dumps(pairs)])
    return json.loads(r.stdout)


def code(c, host, path, method="GET"):
    return requests(c, host, [[method, path]])[0][0]


def body(c, host, path):
    return json.loads(requests(c, host, [["GET", path]])[0][1])


@pytest.fixture(scope="module")
def cluster():
    workdir = lab.tmpdir()
    c = ClusterLab(workdir, sync=SYNC, app_peers=True)
    try:
        c.setup(log=lambda *_: None)
        p = c.pg["primary-1"]
        lab.wait_for(lambda: p.sql("SELECT string_agg(application_name || ':' || sync_state, ',' "
                                   "ORDER BY application_name) FROM pg_stat_replication")
                     == "standby1:sync,standby2:potential", timeout=30, what="standby1 sync, standby2 potential")
        yield c
    finally:
        c.teardown()
        shutil.rmtree(workdir, ignore_errors=True)


def sync_codes(c):
    return {h: (code(c, h, "/sync"), code(c, h, "/async")) for h in ("standby-1", "standby-2")}


def test_sync_is_200_on_exactly_one_standby_and_moves_when_its_tunnel_is_killed(cluster):
    c = cluster
    lab.wait_for(lambda: sync_codes(c) == {"standby-1": (200, 503), "standby-2": (503, 200)}, timeout=15,
                 what="/sync on standby-1 only")
    b = body(c, "standby-2", "/async")
    assert b["role"] == "replica" and b["state"] == "running" and "sync_standby" not in b, b
    assert b["tunneld"]["sync_state"] == "potential", b
    assert body(c, "standby-1", "/sync")["sync_standby"] is True

    # standby-1's tunnel dies (its tunneld is killed): its walreceiver's
    # connection goes with it and postgres makes standby2 the sync standby.
    t = c.tunnels["standby-1"]
    killed = time.monotonic()
    t.signal(signal.SIGKILL)
    t.proc.wait()
    lab.wait_for(lambda: code(c, "standby-2", "/sync") == 200, timeout=30, interval=0.1,
                 what="/sync moves to standby-2")
    moved = time.monotonic() - killed
    assert code(c, "standby-2", "/async") == 503
    assert c.pg["primary-1"].sql("SELECT sync_state FROM pg_stat_replication "
                                 "WHERE application_name = 'standby2'") == "sync"
    print(f"MEASURED standby-1's tunnel killed -> /sync 200 on standby-2: {moved:.2f} s")

    # Back: standby1 has priority under FIRST 1 and takes the place again.
    t.log.close()
    t.notify.close()
    t.start()
    lab.wait_for(lambda: sync_codes(c) == {"standby-1": (200, 503), "standby-2": (503, 200)}, timeout=30,
                 what="/sync back on standby-1")


def test_every_path_and_method_answers_patronis_code_in_every_state(cluster):
    c = cluster
    hosts = {"primary": "primary-1", "sync": "standby-1", "async": "standby-2"}
    pairs = [[m, p] for p in PATRONI_CODES for m in ("GET", "HEAD", "OPTIONS")]

    def observed(host):
        return {(m, p): status for (m, p), (status, _) in zip(map(tuple, pairs), requests(c, host, pairs))}

    def expected(state):
        return {(m, p): PATRONI_CODES[p][STATES.index(state)] for m, p in pairs}

    for state, host in hosts.items():
        lab.wait_for(lambda: observed(host) == expected(state), timeout=10,
                     what=f"{host} ({state}) answers Patroni's codes")
    # HEAD has no body, OPTIONS has GET's; a method Patroni has no health check for is 405.
    head, options, get = requests(c, "primary-1", [["HEAD", "/primary"], ["OPTIONS", "/primary"],
                                                   ["GET", "/primary"]])
    assert head == [200, ""] and json.loads(options[1])["role"] == json.loads(get[1])["role"] == "master"
    assert requests(c, "primary-1", [["DELETE", "/primary"]])[0][0] == 405

    # A stopped postgres (standby-2's): every path 503 but /patroni, state "stopped".
    pg = c.pg["standby-2"]
    stop_postgres(pg)
    try:
        lab.wait_for(lambda: observed("standby-2") == expected("stopped"), timeout=10,
                     what="standby-2 (postgres stopped) answers Patroni's codes")
        doc = body(c, "standby-2", "/patroni")
        assert doc["state"] == "stopped" and doc["role"] == "unknown", doc
    finally:
        pg.start()
    lab.wait_for(lambda: observed("standby-2") == expected("async"), timeout=30, what="standby-2 async again")

    # Patroni's document: the shape monitoring made for Patroni reads. (A
    # standby that has just reconnected is async until it has caught up.)
    lab.wait_for(lambda: sorted((r["application_name"], r["sync_state"])
                                for r in body(c, "primary-1", "/patroni").get("replication", [])) ==
                 [("standby1", "sync"), ("standby2", "potential")], timeout=30, what="standby2 potential again")
    doc = body(c, "primary-1", "/patroni")
    assert doc["role"] == "master" and doc["state"] == "running", doc
    assert doc["server_version"] >= 150000 and doc["timeline"] == 1, doc
    assert isinstance(doc["xlog"]["location"], int) and doc["database_system_identifier"].isdigit(), doc
    sysid = c.pg["primary-1"].sql("SELECT system_identifier FROM pg_control_system()")
    assert doc["database_system_identifier"] == sysid
    doc = body(c, "standby-2", "/patroni")
    assert doc["role"] == "replica" and doc["xlog"]["replayed_location"] <= doc["xlog"]["received_location"], doc
    assert doc["xlog"]["paused"] is False and doc["database_system_identifier"] == sysid, doc


def test_status_and_metrics_name_each_walsenders_peer_and_inbound_source_tells_them_apart_in_pg_hba(cluster):
    c = cluster
    p = c.pg["primary-1"]

    def rows():
        return {r["peer"]: r for r in json.loads(c.status("primary-1")[2])["postgres"]["replication"]
                if r["state"] == "streaming"}

    lab.wait_for(lambda: set(rows()) == {"standby-1", "standby-2"}, timeout=10, what="walsenders by peer")
    r = rows()
    assert r["standby-1"]["application_name"] == "standby1" and r["standby-1"]["sync_state"] == "sync", r
    assert r["standby-2"]["application_name"] == "standby2" and r["standby-1"]["client_addr"] == "127.0.0.1"
    # The port postgres reports is that of the primary tunneld's backend socket.
    ports = p.sql("SELECT string_agg(application_name || ':' || client_port, ',' ORDER BY application_name) "
                  "FROM pg_stat_replication WHERE state = 'streaming'")
    assert ports == f"standby1:{r['standby-1']['client_port']},standby2:{r['standby-2']['client_port']}"
    assert r["standby-2"]["lag_bytes"]["replay"] is not None
    text = lab.http_request(HEALTH, "/metrics", netns=c.ns["primary-1"].name)[2]
    for peer, app in (("standby-1", "standby1"), ("standby-2", "standby2")):
        assert re.search(rf'^tunneld_replication_lag_bytes\{{peer="{peer}",application_name="{app}",'
                         rf'kind="replay"\}} \d+$', text, re.M), text
    assert 'tunneld_replication_walsender{peer="standby-1",application_name="standby1",state="streaming",' \
           'sync_state="sync"} 1' in text
    standby_metrics = lab.http_request(HEALTH, "/metrics", netns=c.ns["standby-1"].name)[2]
    assert 'tunneld_postgres_sync_standby{sync_state="sync"} 1' in standby_metrics

    # inbound.source: each standby's tunnel reaches postgres from its own
    # loopback address, and pg_hba.conf admits one standby's replication only.
    t = c.tunnels["primary-1"]
    text = open(t.config_path).read()
    with open(t.config_path, "w") as f:
        f.write(text.replace("  allow: [", "  source: {standby-1: 127.0.1.2, standby-2: 127.0.1.3, "
                                           "app: 127.0.1.10}\n  allow: [", 1))
    hba = os.path.join(p.data, "pg_hba.conf")
    original = open(hba).read()
    with open(hba, "w") as f:
        f.write("host replication all 127.0.1.2/32 trust\nhost replication all 127.0.1.3/32 reject\n"
                "host all all 127.0.1.0/24 trust\n" + original)
    p.sql("SELECT pg_reload_conf()")
    try:
        t.stop()
        t.start()
        seen = []

        def streaming():
            seen.append(p.sql("SELECT string_agg(application_name || '@' || host(client_addr), ',') "
                              "FROM pg_stat_replication WHERE state = 'streaming'"))
            return seen[-1] == "standby1@127.0.1.2"

        try:
            lab.wait_for(streaming, timeout=30, what="standby1 streaming from 127.0.1.2, standby2 refused")
        finally:
            print("pg_stat_replication seen:", seen[-3:])
        log = open(os.path.join(p.dir, "pg.log")).read()
        assert re.search(r'pg_hba.conf rejects replication connection for host "127\.0\.1\.3"', log), log[-3000:]
        lab.wait_for(lambda: rows().get("standby-1", {}).get("client_addr") == "127.0.1.2", timeout=10,
                     what="/status: standby-1 from 127.0.1.2")
        assert "standby-2" not in rows()
    finally:
        with open(hba, "w") as f:
            f.write("host all all 127.0.1.0/24 trust\nhost replication all 127.0.1.0/24 trust\n" + original)
        p.sql("SELECT pg_reload_conf()")
    lab.wait_for(lambda: set(rows()) == {"standby-1", "standby-2"}, timeout=30, what="standby-2 streaming again")
    assert rows()["standby-2"]["client_addr"] == "127.0.1.3"


# ---------------------------------------------------------------- monitoring

def test_prometheus_scrapes_every_node_with_the_shipped_rules_and_a_stopped_peer_goes_pending(cluster):
    from urllib.parse import quote
    c = cluster
    # Every metric and label the rules and the dashboard use is in a live /metrics.
    scraped = {}

    def lag_measured():
        # postgres shows write/flush/replay_lag only while WAL flows (NULL once
        # idle): keep writing until the primary's tunneld reports them.
        c.pg["primary-1"].sql("INSERT INTO ticks DEFAULT VALUES")
        primary_text[0] = lab.http_request("127.0.0.1:18001", "/metrics", netns=c.ns["app"].name)[2]
        return primary_text[0].count("tunneld_replication_lag_seconds{") >= 2
    primary_text = [""]
    lab.wait_for(lag_measured, timeout=30, interval=0.1, what="lag seconds of the walsenders measured")
    for port in (8080, 18001, 18002, 18003):
        text = primary_text[0] if port == 18001 else \
            lab.http_request(f"127.0.0.1:{port}", "/metrics", netns=c.ns["app"].name)[2]
        for family, labels in exposition_labels(text).items():
            scraped.setdefault(family, set()).update(labels)
    uses = used_by_monitoring()
    assert len(uses) >= 28, uses
    for where, expr, labels in uses:
        metrics = set(re.findall(r"\b(tunneld_[a-z_]+|up)\b", expr)) - {"up"}
        for m in metrics:
            assert m in scraped, f"{where}: {m} is in no live /metrics"
        if metrics:
            have = set().union(*(scraped[m] for m in metrics))
            assert labels <= have, f"{where}: {expr} uses labels {labels - have} that {metrics} do not have"

    # A real Prometheus with the shipped scrape configuration (faster) and rules.
    config = open(os.path.join(MONITORING, "prometheus.yml")).read()
    config = config.replace("/usr/share/tunneld/monitoring/tunneld-rules.yml",
                            os.path.join(MONITORING, "tunneld-rules.yml"))
    config = re.sub(r"(scrape|evaluation)_interval: 15s", r"\1_interval: 1s", config)
    cfg = os.path.join(c.workdir, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write(config)
    check = subprocess.run(["promtool", "check", "config", cfg], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(os.path.join(c.workdir, "prometheus.log"), "ab")
    prom = c.ns["app"].popen(["prometheus", f"--config.file={cfg}",
                              f"--storage.tsdb.path={os.path.join(c.workdir, 'prometheus-data')}",
                              "--web.listen-address=127.0.0.1:9090"], stdout=log, stderr=subprocess.STDOUT)
    t = c.tunnels["standby-2"]
    try:
        def up():
            try:
                return sorted((r["metric"]["node"], r["value"][1])
                              for r in prometheus_api(c, "/api/v1/query?query=" + quote('up{job="tunneld"}'))["result"])
            except (ConnectionError, AssertionError):
                return None
        want = [(n, "1") for n in ("app", "primary-1", "standby-1", "standby-2")]
        lab.wait_for(lambda: up() == want, timeout=60, interval=0.5, what="Prometheus scraping all four tunnelds")
        for where, expr, _ in uses:  # every query of the dashboard and the rules runs
            assert isinstance(prometheus_api(c, "/api/v1/query?query=" + quote(expr))["result"], list), where
        peers = prometheus_api(c, "/api/v1/query?query=" + quote('tunneld_replication_lag_bytes{kind="replay"}'))
        assert {r["metric"]["peer"] for r in peers["result"]} == {"standby-1", "standby-2"}, peers

        # standby-2's tunneld stops: its peers report it down and the alert is pending.
        t.stop()

        def pending():
            alerts = prometheus_api(c, "/api/v1/alerts")["alerts"]
            return sorted((a["labels"]["node"], a["state"]) for a in alerts
                          if a["labels"]["alertname"] == "TunneldPeerDown"
                          and a["labels"].get("peer") == "standby-2")
        lab.wait_for(lambda: pending() == [("app", "pending"), ("primary-1", "pending"), ("standby-1", "pending")],
                     timeout=30, interval=0.5, what="TunneldPeerDown pending for standby-2 on every other node")
        lab.wait_for(lambda: [(a["labels"]["node"], a["state"]) for a in prometheus_api(c, "/api/v1/alerts")["alerts"]
                              if a["labels"]["alertname"] == "TunneldDown"] == [("standby-2", "pending")],
                     timeout=30, interval=0.5, what="TunneldDown pending for standby-2 (its /metrics unreachable)")
    finally:
        lab.terminate(prom, timeout=10)
        log.close()
        if t.proc.poll() is not None:
            t.start()
    lab.wait_for(lambda: set(c.streaming_from("primary-1")) == {"standby1", "standby2"}, timeout=30,
                 what="standby-2 streaming again")


def readme_haproxy_config():
    text = open(os.path.join(lab.ROOT, "README.md")).read()
    m = re.search(r"<!-- test: haproxy\.cfg -->\s*\n```\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- test: haproxy.cfg --> block"
    return m.group(1)


def test_readme_haproxy_routes_primary_replicas_sync_and_read_only_across_a_promotion(cluster):
    c = cluster
    cfg = os.path.join(c.workdir, "haproxy-readme.cfg")
    with open(cfg, "w") as f:
        f.write(readme_haproxy_config())
    check = c.ns["app"].exec(["haproxy", "-c", "-f", cfg], check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    log = open(os.path.join(c.workdir, "haproxy-readme.log"), "ab")
    haproxy = c.ns["app"].popen(["haproxy", "-db", "-f", cfg], stdout=log, stderr=subprocess.STDOUT)

    def node_at(port):
        """Which node psql reaches through HAProxy's `port`: its cluster_name ('' on primary-1)."""
        rc, out = c.app_sql("SELECT coalesce(nullif(current_setting('cluster_name'), ''), 'primary1') "
                            "|| ':' || pg_is_in_recovery()", port=port, timeout=3)
        return out if rc == 0 else None

    def reached(port, tries=6):
        return {node_at(port) for _ in range(tries)}

    try:
        want = {5000: {"primary1:false"}, 5001: {"standby1:true", "standby2:true"},
                5002: {"standby1:true"}, 5003: {"primary1:false", "standby1:true", "standby2:true"}}
        for port, nodes in want.items():
            lab.wait_for(lambda: reached(port) == nodes, timeout=20, interval=0.5,
                         what=f"HAProxy port {port} -> {nodes}")

        # Failover: primary-1's postgres stops, standby-1 is promoted and gets
        # standby2 as its synchronous standby.
        stop_postgres(c.pg["primary-1"])
        promoted = time.monotonic()
        c.pg["standby-1"].sql("SELECT pg_promote(wait => true)")
        c.pg["standby-1"].sql("ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (standby2)'")
        c.pg["standby-1"].sql("SELECT pg_reload_conf()")
        lab.wait_for(lambda: node_at(5000) == "standby1:false", timeout=30, interval=0.2,
                     what="HAProxy 5000 -> the promoted standby-1")
        writes = time.monotonic() - promoted
        want = {5000: {"standby1:false"}, 5001: {"standby2:true"}, 5002: {"standby2:true"},
                5003: {"standby1:false", "standby2:true"}}
        for port, nodes in want.items():
            lab.wait_for(lambda: reached(port) == nodes, timeout=30, interval=0.5,
                         what=f"after the promotion: HAProxy port {port} -> {nodes}")
        print(f"MEASURED promote -> HAProxy's primary port reaches standby-1: {writes:.2f} s")
    finally:
        lab.terminate(haproxy)
        log.close()
