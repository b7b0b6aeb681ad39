"""PostgreSQL streaming replication through a tunneld pair between two network
namespaces: base backup, streaming under load, equal data, direct access refused,
and a 20 s partition that the tunnel detects and recovers from by itself, streaming
again within 2 s of the heal with PostgreSQL's default retry interval."""

import os
import re
import time

import pytest

import lab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and the postgres user")


@pytest.fixture
def replication(workdir):
    rl = lab.ReplicationLab(workdir)
    try:
        rl.setup(log=lambda *_: None)
        yield rl
    finally:
        rl.teardown()


def test_streaming_replication_through_tunnel_under_load(replication):
    rl = replication
    assert rl.streaming() == [("127.0.0.1", "streaming")]  # the walsender sees the tunnel's address
    result = rl.load(seconds=8)
    assert "number of failed transactions: 0" in result.stdout
    lab.wait_for(rl.caught_up, timeout=30, what="standby caught up")
    assert rl.fingerprint(rl.primary) == rl.fingerprint(rl.standby)
    assert rl.standby.sql("SELECT pg_is_in_recovery()") == "t"
    rl.standby_tunnel.wait_log(r"outbound open peer=primary-1 remote=10\.77\.0\.1:8765")
    rl.primary_tunnel.wait_log(r"inbound open peer=standby-1 remote=10\.77\.0\.2:")
    # pg_basebackup's two connections ended the way postgres ends them: finished, at info
    for t in (rl.primary_tunnel, rl.standby_tunnel):
        closes = t.log_lines(r" close peer=")
        assert len(closes) >= 2 and all(" info " in l and "reason=finished" in l for l in closes), closes


def test_direct_replication_over_the_network_is_refused(replication):
    r = replication.direct_replication_attempt()
    assert r.returncode != 0
    assert "no pg_hba.conf entry for replication connection from host \"10.77.0.2\"" in r.stderr


def test_replication_through_the_primarys_firewall_guard_while_outsiders_are_dropped(workdir):
    """The demo's setup: the primary's tunneld guards 8765 (standby only) and 5432
    (loopback only). Replication works through it; the outsider and a direct
    connection from the standby host are dropped before postgres sees them."""
    rl = lab.ReplicationLab(workdir, firewall=True)
    try:
        rl.setup(log=lambda *_: None)
        rl.load(seconds=3)
        lab.wait_for(rl.caught_up, timeout=30, what="standby caught up")
        assert rl.fingerprint(rl.primary) == rl.fingerprint(rl.standby)
        assert rl.outsider_attempt(lab.TLS_PORT, timeout=1) == "TimeoutError"
        assert rl.outsider_attempt(5432, timeout=1) == "TimeoutError"
        direct = rl.direct_replication_attempt()
        assert direct.returncode != 0 and "timeout expired" in direct.stderr, direct.stderr
        shown = rl.firewall_show()
        drops = {int(p): int(n) for p, n in re.findall(r"drops to (\d+): (\d+) packets", shown)}
        assert drops[5432] >= 2 and drops[lab.TLS_PORT] >= 1, shown
        assert not rl.primary_tunnel.log_lines(r"handshake failed"), "a dropped packet reached tunneld"
        with open(os.path.join(rl.primary.dir, "pg.log")) as f:  # log_connections = on
            pg_log = f.read()
        assert "connection received: host=10.77" not in pg_log, "a dropped connection reached postgres"
        assert "connection received: host=127.0.0.1" in pg_log
    finally:
        rl.teardown()


def test_partition_is_detected_and_replication_resumes_within_2s_of_the_heal(workdir):
    """PostgreSQL's defaults on the standby (wal_retrieve_retry_interval 5 s,
    wal_receiver_timeout 60 s) and tunneld's default timeouts.connect (10 s):
    while the probe finds the primary silent, the walreceiver's reconnect attempt
    is held (not reset, which would make it wait out its 5 s retry interval) and
    dialled the moment the link answers again."""
    rl = lab.ReplicationLab(workdir, timeouts="{connect: 10s, handshake: 10s, shutdown: 5s}")
    try:
        rl.setup(log=lambda *_: None)
        for setting in ("wal_retrieve_retry_interval", "wal_receiver_timeout"):
            rl.standby.sql(f"ALTER SYSTEM SET {setting} = DEFAULT")  # over postgresql.conf's lab values
        with open(os.path.join(rl.standby.data, "postgresql.conf"), "a") as f:
            f.write("wal_retrieve_retry_interval = 5s\nwal_receiver_timeout = 60s\n")
        rl.standby.sql("SELECT pg_reload_conf()")
        assert rl.standby.sql("SHOW wal_retrieve_retry_interval") == "5s"
        rl.load(seconds=3)
        lab.wait_for(rl.caught_up, timeout=30, what="standby caught up before partition")
        dead_path = r"outbound close .*reason=(peer_timeout|peer_error)"
        closes_before = len(rl.standby_tunnel.log_lines(dead_path))

        # 20 s partition: every packet on the standby host's veth is dropped, both ways.
        started = time.monotonic()
        lab.partition(rl.standby_ns)
        rl.primary.sql("CREATE TABLE during_partition AS SELECT g FROM generate_series(1, 10000) g")
        line = rl.standby_tunnel.wait_log(dead_path, timeout=20, count=closes_before + 1)[-1]
        detected = time.monotonic() - started
        # keepalive: idle 2s + 3 x 1s = 5 s; user_timeout 6 s for unacknowledged data.
        assert detected < 10, f"partition detected after {detected:.1f}s: {line}"
        # Both local sides are closed at once: the primary's walsender goes away and the
        # standby's walreceiver stops streaming, without waiting for wal_*_timeout (60 s).
        lab.wait_for(lambda: not rl.streaming(), timeout=12 - (time.monotonic() - started),
                     what="walsender gone on the primary")
        lab.wait_for(lambda: rl.standby.sql("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'")
                     == "0", timeout=5, what="walreceiver not streaming on the standby")
        time.sleep(max(0, 20 - (time.monotonic() - started)))
        lab.heal(rl.standby_ns)

        healed = time.monotonic()
        lab.wait_for(lambda: rl.streaming(), timeout=30, interval=0.05, what="streaming again after heal")
        resumed = time.monotonic() - healed
        lab.wait_for(rl.caught_up, timeout=30, what="standby caught up after heal")
        assert rl.standby.sql("SELECT count(*) FROM during_partition") == "10000"
        rl.load(seconds=3)
        lab.wait_for(rl.caught_up, timeout=30, what="caught up after more load")
        assert rl.fingerprint(rl.primary) == rl.fingerprint(rl.standby)
        print(f"MEASURED partition detected after {detected:.1f}s; streaming resumed {resumed:.2f}s after "
              "the heal (PostgreSQL defaults)")
        assert resumed <= 2.0, f"streaming resumed {resumed:.2f}s after the heal"
        # An attempt made during the partition waited timeouts.connect (10 s)
        # before it was refused, rather than being reset at once.
        for line in rl.standby_tunnel.log_lines(r"not dialled: the probe has had no answer"):
            secs = float(re.search(r"for (\d+\.\d) s", line).group(1))
            assert secs >= 9.5, line
    finally:
        rl.teardown()


def test_certificate_rotation_under_streaming_replication_keeps_the_stream(replication):
    rl = replication
    rl.load(seconds=2)
    lab.wait_for(rl.caught_up, timeout=30, what="caught up")
    opens_before = len(rl.standby_tunnel.log_lines(r"outbound open"))
    closes_before = len(rl.standby_tunnel.log_lines(r"outbound close"))
    load = lab.threading.Thread(target=rl.load, kwargs={"seconds": 6})
    load.start()
    r = lab.tunneld_cli("certs", "rotate", "--peer", rl.primary_tunnel.config_path, "--ca", rl.ca_dir,
                        netns=rl.primary_ns)
    assert r.returncode == 0 and "confirmed: the daemon on 10.77.0.1:8765" in r.stdout, r.stdout + r.stderr
    r = lab.tunneld_cli("certs", "rotate", "--peer", rl.standby_tunnel.config_path, "--ca", rl.ca_dir,
                        netns=rl.standby_ns)
    assert r.returncode == 0, r.stdout + r.stderr
    rl.standby_tunnel.wait_log(r"reload \(files changed\): TLS material replaced")
    load.join()
    lab.wait_for(rl.caught_up, timeout=30, what="caught up after rotation")
    assert rl.fingerprint(rl.primary) == rl.fingerprint(rl.standby)
    # The replication connection that was streaming before the rotation is the one streaming now.
    assert len(rl.standby_tunnel.log_lines(r"outbound open")) == opens_before
    assert len(rl.standby_tunnel.log_lines(r"outbound close")) == closes_before
    assert rl.streaming() == [("127.0.0.1", "streaming")]


@pytest.mark.parametrize("side", ["standby", "primary"])
def test_stop_with_live_replication_takes_seconds_and_loses_nothing(replication, side):
    """A walsender connection never ends by itself; a stop (systemctl stop or
    restart, a package upgrade) used to wait all of timeouts.shutdown (30 s) for
    it. Now the connection is ended gracefully after a second; the walreceiver
    reconnects when tunneld is back, and the data are equal."""
    import threading
    rl = replication
    tunnel = rl.standby_tunnel if side == "standby" else rl.primary_tunnel
    rl.primary.pgbench("-i", "-q", "-s", "5", "postgres")
    result = {}
    load = threading.Thread(target=lambda: result.update(
        out=rl.primary.pgbench("-T", "8", "-c", "4", "-n", "postgres")))
    load.start()
    try:
        lab.wait_for(lambda: rl.streaming(), timeout=10, what="streaming before the stop")
        started = time.monotonic()
        assert tunnel.stop(timeout=30) == 0
        stop_s = time.monotonic() - started
        tunnel.start()
        restarted = time.monotonic()
        lab.wait_for(lambda: rl.streaming(), timeout=30, interval=0.05, what="streaming again")
        resume_s = time.monotonic() - restarted
    finally:
        load.join()
    print(f"{side} tunneld: stop with live replication under pgbench {stop_s:.2f} s; "
          f"streaming again {resume_s:.2f} s after the restart")
    assert stop_s < 3, f"stop took {stop_s:.2f}s"
    assert resume_s < 5, f"streaming resumed {resume_s:.2f}s after the restart"
    assert "number of failed transactions: 0" in result["out"].stdout
    lab.wait_for(rl.caught_up, timeout=30, what="standby caught up")
    assert rl.fingerprint(rl.primary) == rl.fingerprint(rl.standby)
    assert tunnel.log_lines(r"stopping: ending 1 connection\(s\) gracefully")
    assert not tunnel.log_lines(r"still open after"), "the drain ran into timeouts.shutdown"
