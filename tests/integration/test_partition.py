"""Partition safety (routes to: primary need a majority of the cluster's voters):
three PostgreSQL 15 nodes and an application host on each side of a partition,
every connection through tunneld, async replication. The minority side's route
refuses (no_quorum) and closes what it had open; the majority side follows the
promotion; after the heal two primaries are never routed. The same partition,
in the same run, through HAProxy with the README's /primary checks, for the
side-by-side count of writes the old primary acknowledges after it was replaced."""
import datetime
import os
import re
import subprocess
import threading
import time

import pytest

import lab
from cluster_lab import ECHO_LOCAL, PRIMARY_ROUTE, ClusterLab, stop_postgres
from test_patroni_api import readme_haproxy_config

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and the postgres user")

HAPROXY_PRIMARY = 5000  # README's `listen primary`


@pytest.fixture
def split_cluster(workdir):
    c = ClusterLab(workdir, probe_interval="300ms", app_peers=True, second_app=True)
    try:
        c.setup(log=lambda *_: None)
        yield c
    finally:
        c.teardown()


class Writer:
    """One application writing unique tags through `port` on `host`, one row a
    time; keeps (monotonic time, tag) of every acknowledged write."""

    def __init__(self, c, host, port, name):
        self.c, self.host, self.port, self.name = c, host, port, name
        self.acks, self.failures = [], 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            tag = f"{self.name}-{n}"
            rc, _ = self.c.app_sql(f"INSERT INTO acks VALUES ('{tag}')", port=self.port, timeout=2,
                                   host=self.host)
            if rc == 0:
                self.acks.append((time.monotonic(), tag))
            else:
                self.failures += 1
            time.sleep(0.05)

    def acked_since(self, t):
        return [tag for at, tag in self.acks if at > t]

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=30)


def log_time(line):
    """The wall-clock seconds of a tunneld log line ("2026-12-06T02:38:55.527 warning ...")."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}) ", line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def test_the_minority_side_never_writes_to_a_replaced_primary_tunneld_next_to_haproxy(split_cluster):
    c = split_cluster
    c.pg["primary-1"].sql("CREATE TABLE acks (tag text PRIMARY KEY)")
    for h in ("app", "app2"):
        lab.wait_for(lambda h=h: c.route(h)["target"] == "primary-1", timeout=20, what=f"{h}'s route to primary-1")
    q = c.route("app")["quorum"]
    assert q["voters"] == 3 and q["reached"] == 3 and q["met"], q
    cfg = os.path.join(c.workdir, "haproxy-readme.cfg")
    with open(cfg, "w") as f:
        f.write(readme_haproxy_config())
    hlog = open(os.path.join(c.workdir, "haproxy-readme.log"), "ab")
    haproxy = c.ns["app"].popen(["haproxy", "-db", "-f", cfg], stdout=hlog, stderr=subprocess.STDOUT)
    writers = []
    session = None
    try:
        lab.wait_for(lambda: c.app_sql("SELECT 1", port=HAPROXY_PRIMARY, timeout=2) == (0, "1"), timeout=20,
                     what="HAProxy routing to primary-1")
        # A session left open on the app's route before the cut (an idle pool
        # connection, a long transaction): it must not go on writing.
        session = c.ns["app"].popen(
            ["runuser", "-u", "postgres", "--", "psql", f"host=127.0.0.1 port={PRIMARY_ROUTE} user=postgres "
             "dbname=postgres", "-XAtq", "-c", "SELECT pg_sleep(600)"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
        lab.wait_for(lambda: c.route("app")["connections"] >= 1, timeout=10, what="the open session")
        writers = [Writer(c, "app", PRIMARY_ROUTE, "route-minority"),
                   Writer(c, "app", HAPROXY_PRIMARY, "haproxy-minority"),
                   Writer(c, "app2", PRIMARY_ROUTE, "route-majority")]
        lab.wait_for(lambda: all(len(w.acks) >= 5 for w in writers), timeout=30, what="every writer writing")

        # The cut: {primary-1, app} | {standby-1, standby-2, app2}.
        t_cut = time.monotonic()
        c.split(["primary-1", "app"], ["standby-1", "standby-2", "app2"])
        lab.wait_for(lambda: c.route("app")["refusal"] == "no_quorum", timeout=10, interval=0.02,
                     what="the minority app's route refusing (no_quorum)")
        window = time.monotonic() - t_cut
        r = c.route("app")
        assert r["target"] is None and r["quorum"]["reached"] == 1 and not r["quorum"]["met"], r
        assert r["detail"].startswith("no quorum: reaching 1 of 3 voters (primary-1), a majority needs 2; "
                                      "unreachable: standby-1 ("), r["detail"]
        # The open session was closed by the decision, with reason=no_quorum,
        # within one probe interval (300 ms) of it. The decision's own line is
        # written after the closes are posted, so a connection's close line may
        # come a few ms before it (CI saw -2 ms).
        t = c.tunnels["app"]
        decided = t.wait_log(r"route 127\.0\.0\.1:6432 \(to primary\): refusing new connections \(no_quorum\)")
        closed = t.wait_log(r"outbound close peer=primary-1 .*route=127\.0\.0\.1:6432 .*reason=no_quorum")
        decided_at = log_time(t.log_lines(r"refusing new connections \(no_quorum\)")[0])
        closed_at = log_time(t.log_lines(r"outbound close peer=primary-1 .*reason=no_quorum")[0])
        assert -0.05 <= closed_at - decided_at <= 0.3, (decided, closed)
        session.wait(timeout=10)
        assert session.returncode != 0, session.stdout.read()
        # /health and /metrics say so.
        status, _, body = lab.http_request("127.0.0.1:8080", "/health", netns=c.ns["app"].name)
        assert status == 503 and "no_quorum" in body, body
        _, _, metrics = lab.http_request("127.0.0.1:8080", "/metrics", netns=c.ns["app"].name)
        assert re.search(r'tunneld_route_quorum\{route="127\.0\.0\.1:6432"\} 0', metrics), metrics
        assert re.search(r'tunneld_route_voters\{route="127\.0\.0\.1:6432",state="reachable"\} 1', metrics)

        # A failover manager promotes standby-1 on the majority side 3 s after the
        # cut (Patroni's default: ttl 30 s); the majority app follows.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - t_cut)))
        t_promote = time.monotonic()
        c.pg["standby-1"].sql("SELECT pg_promote(wait => true)")
        lab.wait_for(lambda: c.route("app2")["target"] == "standby-1", timeout=30, what="app2's route to standby-1")
        lab.wait_for(lambda: writers[2].acked_since(time.monotonic() - 0.5), timeout=30,
                     what="the majority app writing to standby-1")
        time.sleep(3)
        assert c.route("app")["target"] is None

        # The heal: primary-1 still runs as a primary on timeline 1. Two primaries
        # are never routed until it is stopped (an operator rewinds it).
        c.unsplit()
        t_heal = time.monotonic()
        lab.wait_for(lambda: c.route("app")["refusal"] == "no_primary", timeout=15,
                     what="the app's route seeing both primaries")
        seen = set()
        while time.monotonic() - t_heal < 4:
            seen.add(c.route("app")["target"])
            seen.add(c.route("app2")["target"])
            time.sleep(0.1)
        assert "primary-1" not in seen, seen
        assert c.route("app")["split_brain"] or "timeline" in c.route("app")["detail"], c.route("app")
        c.pg["primary-1"].stop()
        for h in ("app", "app2"):
            lab.wait_for(lambda h=h: c.route(h)["target"] == "standby-1", timeout=30, what=f"{h}'s route to standby-1")
        lab.wait_for(lambda: writers[0].acked_since(time.monotonic() - 0.5), timeout=30,
                     what="the minority app writing again, to standby-1")
    finally:
        for w in writers:
            w.finish()
        if session and session.poll() is None:
            lab.terminate(session)
        lab.terminate(haproxy, timeout=10)
        hlog.close()

    # The majority side's data is whole: standby-2 has what standby-1 has.
    lab.wait_for(lambda: c.pg["standby-2"].sql("SELECT count(*) FROM acks") ==
                 c.pg["standby-1"].sql("SELECT count(*) FROM acks"), timeout=30, what="standby-2 caught up")
    kept = set(c.pg["standby-1"].sql("SELECT tag FROM acks").split())

    def lost(w, start, end=None):
        return [tag for at, tag in w.acks if at > start and (end is None or at <= end) and tag not in kept]

    route_min, haproxy_min, route_maj = writers
    report = {w.name: {"acked": len(w.acks),
                       "lost_in_the_window_before_the_promotion": len(lost(w, t_cut, t_promote)),
                       "lost_after_the_promotion": len(lost(w, t_promote))} for w in writers}
    print(f"MEASURED cut -> no_quorum refusal on the minority app: {window:.2f} s "
          f"(probe_interval 300ms); open session closed {closed_at - decided_at:.3f} s after the decision")
    for name, r in report.items():
        print(f"MEASURED {name}: {r}")
    # Never a write acknowledged by the replaced primary through a route.
    assert report["route-minority"]["lost_after_the_promotion"] == 0, report
    assert report["route-majority"]["lost_in_the_window_before_the_promotion"] == 0, report
    assert report["route-majority"]["lost_after_the_promotion"] == 0, report
    # The refusal came well before any sane promotion delay.
    assert window < 3.0, window
    # HAProxy with /primary checks: reported side by side above (its checks ask
    # each node about its own postgres, and the old primary's says "primary").


@pytest.fixture
def witnessed_pair(workdir):
    c = ClusterLab(workdir, probe_interval="300ms", nodes=("primary-1", "standby-1"), witness="app")
    try:
        c.setup(log=lambda *_: None)
        yield c
    finally:
        c.teardown()


def test_two_nodes_and_a_witness(witnessed_pair):
    """A primary, a standby and the application host as the witness (every
    node's cluster.witnesses: [app]; the app host has no inbound listener: it
    votes with its probe pings)."""
    c = witnessed_pair
    for h in ("app", "standby-1"):
        lab.wait_for(lambda h=h: c.route(h)["target"] == "primary-1" and c.route(h)["quorum"]["reached"] == 3,
                     timeout=20, what=f"{h}'s route to primary-1 with all three voters")
    q = c.route("standby-1")["quorum"]
    assert [(m["name"], m["self"], m["witness"], m["reachable"]) for m in q["members"]] == [
        ("primary-1", False, False, True), ("standby-1", True, False, True), ("app", False, True, True)], q
    assert c.app_sql("INSERT INTO ticks DEFAULT VALUES RETURNING 1") == (0, "1")

    # The witness is cut away: nothing changes for the pair (2 of 3).
    switches = c.route("standby-1")["switches"]
    c.cut("app")
    lab.wait_for(lambda: c.route("app")["refusal"] == "no_quorum", timeout=10, what="the cut witness refusing")
    lab.wait_for(lambda: not c.route("standby-1")["quorum"]["members"][2]["reachable"], timeout=10,
                 what="standby-1 missing the witness's pings")
    time.sleep(1)
    r = c.route("standby-1")
    assert r["target"] == "primary-1" and r["quorum"]["met"] and r["switches"] == switches, r
    assert c.streaming_from("primary-1") == ["standby1"]
    assert c.app_sql("SELECT 1", host="standby-1") == (0, "1")
    c.heal("app")
    lab.wait_for(lambda: c.route("app")["target"] == "primary-1", timeout=10, what="the witness back")

    # The primary and the witness cut together from the standby's side: the
    # standby's route (the isolated side) refuses; the app keeps writing to primary-1.
    c.split(["primary-1", "app"], ["standby-1"])
    lab.wait_for(lambda: c.route("standby-1")["refusal"] == "no_quorum", timeout=10,
                 what="the isolated standby's route refusing")
    rc, out = c.app_sql("INSERT INTO ticks DEFAULT VALUES", host="standby-1", timeout=3)
    assert rc != 0, out
    c.tunnels["standby-1"].wait_log(r"outbound .*route=127\.0\.0\.1:6432 .*reason=no_quorum detail=\"no quorum: "
                                    r"reaching 1 of 3 voters \(standby-1\)")
    assert c.route("app")["target"] == "primary-1"
    assert c.app_sql("INSERT INTO ticks DEFAULT VALUES RETURNING 1") == (0, "1")
    c.unsplit()
    lab.wait_for(lambda: c.streaming_from("primary-1") == ["standby1"], timeout=30, what="standby-1 streaming again")

    # The primary dies; the standby is promoted; the application's route follows.
    c.cut("primary-1")
    stop_postgres(c.pg["primary-1"])
    c.pg["standby-1"].sql("SELECT pg_promote(wait => true)")
    lab.wait_for(lambda: c.route("app")["target"] == "standby-1", timeout=30, what="the app's route to standby-1")
    r = c.route("app")
    assert r["quorum"]["reached"] == 2 and r["last_switch"]["from"] == "primary-1", r
    lab.wait_for(lambda: c.app_sql("INSERT INTO ticks DEFAULT VALUES RETURNING 1") == (0, "1"), timeout=15,
                 what="the application writing to standby-1")


# A client of a node's own service through its local_quorum listener: an echo
# every 0.2 s on one connection until it ends; prints "open" after the first.
HOLD = """
import socket, sys, time
n = 0
try:
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 5)
    c.settimeout(10)
    while True:
        c.sendall(b"ping")
        got = b""
        while len(got) < 4:
            b = c.recv(4 - len(got))
            if not b:
                raise EOFError("closed by tunneld")
            got += b
        n += 1
        if n == 1:
            print("open", flush=True)
        time.sleep(0.2)
except Exception as e:
    print(f"ended after {n} echoes: {e!r}", flush=True)
"""


def echo_once(c, host):
    r = c.ns[host].exec(["python3", "-c", "import socket;s=socket.create_connection(('127.0.0.1',%d),3);"
                         "s.settimeout(3);s.sendall(b'hi');print(s.recv(2).decode())" % ECHO_LOCAL],
                        check=False)
    return r.returncode == 0 and r.stdout.strip() == "hi"


@pytest.fixture
def own_service_cluster(workdir):
    c = ClusterLab(workdir, probe_interval="300ms", own_service=True)
    try:
        c.setup(log=lambda *_: None)
        yield c
    finally:
        c.teardown()


def test_a_local_quorum_listener_serves_only_with_a_settled_majority(own_service_cluster):
    """inbound.services.echo.local_quorum: majority on every node (as the
    README has a node's own etcd member): cut one node away and its own
    listener closes what it had open (reason=no_quorum) and resets new clients,
    while the majority side serves on; after the heal it serves again only once
    a majority has held for the settle time (max(2 x 300 ms, 1 s))."""
    c = own_service_cluster
    for h in c.nodes:
        lab.wait_for(lambda h=h: echo_once(c, h), timeout=20, what=f"{h}'s own echo through its local listener")
    held = {h: c.ns[h].popen(["python3", "-c", HOLD, str(ECHO_LOCAL)], stdout=subprocess.PIPE, text=True)
            for h in ("primary-1", "standby-1")}
    try:
        for h, p in held.items():
            assert p.stdout.readline().strip() == "open", h
        t_cut = time.monotonic()
        c.cut("primary-1")
        lab.wait_for(lambda: held["primary-1"].poll() is not None, timeout=10,
                     what="primary-1's open connection closed by its tunneld")
        closed_after = time.monotonic() - t_cut
        assert "closed by tunneld" in held["primary-1"].stdout.read()
        t = c.tunnels["primary-1"]
        t.wait_log(r"local_quorum: refusing the local_quorum listeners \(no_quorum\): reaching 1 of 3 "
                   r"voters \(primary-1\).*; closed 1 connection\(s\)")
        t.wait_log(r"outbound close .*local=127\.0\.0\.1:\d+ .*reason=no_quorum detail=this node's local_quorum "
                   r"service is not served without a majority")
        # New clients there are reset at once; the majority side serves on.
        assert not echo_once(c, "primary-1")
        t.wait_log(r"reason=no_quorum detail=this node's echo is not served without a majority: reaching 1 of 3")
        assert echo_once(c, "standby-1")
        time.sleep(1)
        assert held["standby-1"].poll() is None, held["standby-1"].stdout.read()

        c.heal("primary-1")
        t_heal = time.monotonic()
        lab.wait_for(lambda: echo_once(c, "primary-1"), timeout=15, interval=0.05,
                     what="primary-1's own echo again after the heal")
        back = time.monotonic() - t_heal
        t.wait_log(r"local_quorum: a majority has held for 1000 ms: serving the local_quorum listeners again")
        assert held["standby-1"].poll() is None
    finally:
        for p in held.values():
            lab.terminate(p)
    print(f"MEASURED local_quorum: cut -> open connection closed {closed_after:.2f} s (probe_interval 300ms); "
          f"heal -> served again {back:.2f} s (settle 1 s)")
    assert closed_after < 3.0, closed_after
    # Never before the majority has held for the settle time.
    assert 1.0 <= back < 5.0, back
