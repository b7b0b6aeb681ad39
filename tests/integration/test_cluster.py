"""Clusters through routes[]: three PostgreSQL 15 nodes and an application host,
each with its own tunneld, in network namespaces on one switch. A promotion is
followed with no edit to tunneld or PostgreSQL; a split brain is never routed."""
import json
import re
import threading
import time

import pytest

import lab
from cluster_lab import PRIMARY_ROUTE, REPLICA_ROUTE, ClusterLab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and the postgres user")


@pytest.fixture
def cluster(workdir):
    c = ClusterLab(workdir)
    try:
        c.setup(log=lambda *_: None)
        yield c
    finally:
        c.teardown()


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
    # standby-2 is never connected to the old primary; its safe stream stays.
    time.sleep(3)
    assert "standby2" not in c.streaming_from("primary-1")
    assert c.streaming_from("standby-1") == ["standby2"]

    # The old primary stops: routing resumes to standby-1 by itself.
    c.pg["primary-1"].stop()
    lab.wait_for(lambda: c.route("app")["target"] == "standby-1", timeout=30, what="routing resumed")
    assert c.app_sql("INSERT INTO ticks DEFAULT VALUES RETURNING 1") == (0, "1")
