"""The health endpoint with real processes: every path in each state (peer up,
peer tunneld killed, peer's backend down, local backend down), sd_notify as
systemd sees it, hostile HTTP, `tunneld health`, Prometheus' own checker, and
(as root, in namespaces) a real PostgreSQL pair: role endpoints flipping on
promotion, /replica?lag= under load with replay paused, and HAProxy routing a
psql client to the primary across a failover."""

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

import lab

PROBE_INTERVAL = 0.5  # lab.node_config's health.probe_interval


@pytest.fixture
def echo_pair(workdir, cleanup):
    backend = lab.Backend()
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend_address(backend))
    cleanup.append(pair.stop)
    return pair, backend


def backend_address(backend):
    return f"127.0.0.1:{backend.port}"


def code(tunnel, path, method="GET"):
    return tunnel.http(path, method=method)[0]


def problems(tunnel, path):
    return json.loads(tunnel.http(path)[2])["problems"]


def test_every_path_answers_as_documented_when_all_is_up(echo_pair):
    pair, _ = echo_pair
    for t in (pair.server, pair.client):
        for path in ("/liveness", "/readiness", "/health"):
            status, headers, body = t.http(path)
            assert status == 200, (t.name, path, body)
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["ok"] is True
        # No health.postgres: the role is unknown, so no router may pick this node.
        for path in ("/primary", "/replica", "/replica?lag=16MB", "/read-only", "/"):
            assert code(t, path) == 503, (t.name, path)
        assert "health.postgres is not set" in problems(t, "/primary")[0]
        assert code(t, "/nope") == 404
        assert code(t, "/replica?lag=sixteen") == 400
        status, headers, body = t.http("/readiness", method="HEAD")
        assert (status, body) == (200, "") and int(headers["Content-Length"]) > 0
        for method in ("POST", "PUT", "DELETE", "OPTIONS"):
            status, headers, _ = t.http("/readiness", method=method)
            assert status == 405 and headers["Allow"] == "GET, HEAD", method

    status = pair.client.status()
    assert status["node"] == "client-1" and status["ready"] is True
    peer = status["peers"][0]
    assert (peer["name"], peer["state"], peer["backend_state"]) == ("server-1", "up", "up")
    assert peer["rtt_ms"]["smoothed"] > 0 and peer["rtt_ms"]["min"] <= peer["rtt_ms"]["last"] * 10
    assert peer["last_handshake"] > 0 and peer["probe"]["pongs"] >= 1
    assert status["tls"]["days_left"] in (29, 30)

    # Bytes and connections are counted while a connection is live, not only at its close.
    conn = pair.connect()
    conn.sendall(b"x" * 100_000)
    got = 0
    while got < 100_000:
        got += len(conn.recv(65536))
    s = pair.client.status()["peers"][0]["connections"]
    assert s["active"] == 1 and s["bytes_sent"] == 100_000 and s["bytes_received"] == 100_000
    inbound = pair.server.status()["inbound"]
    assert inbound["active_connections"] == 1 and inbound["peers"]["client-1"]["bytes_received"] == 100_000
    assert inbound["handshakes"]["ok"] >= 2  # the probe's and the data connection's
    conn.close()
    lab.wait_for(lambda: pair.client.status()["peers"][0]["connections"]["active"] == 0, what="connection closed")


def test_peer_tunneld_killed_is_reported_unreachable_within_the_probe_bound(workdir, cleanup):
    backend = lab.Backend()
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend_address(backend))
    cleanup.append(pair.stop)
    assert code(pair.client, "/readiness") == 200
    pair.server.proc.kill()  # no goodbye: the probe must notice by itself
    pair.server.proc.wait()
    killed = time.monotonic()
    lab.wait_for(lambda: code(pair.client, "/readiness") == 503, timeout=10, interval=0.05, what="readiness 503")
    took = time.monotonic() - killed
    # The connection's EOF is seen at the next ping at the latest: one interval, plus slack.
    assert took < 2 * PROBE_INTERVAL + 1.5, took
    peer = pair.client.status()["peers"][0]
    assert peer["state"] == "unreachable"
    assert peer["last_error"], peer
    assert code(pair.client, "/liveness") == 200  # this daemon is fine
    (p,) = problems(pair.client, "/readiness")
    assert p.startswith("peer server-1 unreachable for ")
    print(f"readiness went 503 {took:.2f}s after the peer was killed: {p}")

    # Back: the probe reconnects by itself.
    pair.server.start()
    lab.wait_for(lambda: code(pair.client, "/readiness") == 200, timeout=10, what="readiness 200 again")
    assert pair.client.status()["peers"][0]["probe"]["failures"] >= 1
    pair.client.wait_log(r"probe: peer server-1 is down: ")
    pair.client.wait_log(r"probe: peer server-1 is up", count=2)


def test_peer_reachable_but_its_backend_down_is_told_apart(echo_pair):
    pair, backend = echo_pair
    backend.close()
    lab.wait_for(lambda: pair.client.status()["peers"][0]["backend_state"] == "down", timeout=10,
                 what="peer backend reported down")
    peer = pair.client.status()["peers"][0]
    assert peer["state"] == "up"
    assert peer["summary"].startswith("reachable, its backend down: 127.0.0.1:")
    assert "refused" in peer["summary"]
    assert code(pair.client, "/readiness") == 200  # the tunnel is fine; the database behind it is not
    # The server's own /health says so; its readiness does not.
    assert code(pair.server, "/readiness") == 200
    assert code(pair.server, "/health") == 503
    assert problems(pair.server, "/health")[0].startswith("backend does not accept connections: 127.0.0.1:")


def test_sd_notify_ready_status_watchdog_reloading_stopping(echo_pair):
    pair, _ = echo_pair
    c = pair.client
    c.stop()
    c.start(env={"WATCHDOG_USEC": "400000"})  # WatchdogSec=0.4s: pings every 0.2 s
    lab.wait_for(lambda: c.poll_notifications().count("WATCHDOG=1") >= 3, timeout=5, what="WATCHDOG=1 x3")
    msgs = c.poll_notifications()
    ready = [m for m in c.notifications if "READY=1" in m][0]
    assert "STATUS=client-1: healthy; peers 1/1 up" in ready
    c.signal(signal.SIGHUP)
    lab.wait_for(lambda: "RELOADING=1" in c.poll_notifications(), what="RELOADING=1")
    lab.wait_for(lambda: c.poll_notifications().count("READY=1") >= 2, what="READY=1 after reload")
    pair.server.stop()
    lab.wait_for(lambda: "STATUS=client-1: peer server-1 unreachable" in c.poll_notifications(), timeout=10,
                 what="STATUS= follows the peer going down")
    c.stop()
    assert "STOPPING=1" in c.poll_notifications()
    assert msgs.index("READY=1") < msgs.index("WATCHDOG=1")


def test_ready_waits_for_the_first_probe_up_to_its_timeout(workdir, ca, cleanup):
    # A peer address that accepts TCP and never answers TLS: the first probe
    # can only time out (timeouts.handshake: 2s), and READY=1 waits for that.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    cleanup.append(silent.close)
    cert = ca.issue("client-1", os.path.join(workdir, "client"))
    t = lab.Tunneld(workdir, "client", lab.node_config(
        "client-1", ca.cert_path, cert[0], cert[1],
        peers=[{"name": "server-1", "connect": f"127.0.0.1:{silent.getsockname()[1]}",
                "local": f"127.0.0.1:{lab.free_port()}"}],
        extra="timeouts: {connect: 2s, handshake: 2s}\n"))
    cleanup.append(t.stop)
    started = time.monotonic()
    t.start()
    waited = time.monotonic() - started
    assert waited >= 1.8, waited
    ready = [m for m in t.notifications if "READY=1" in m][0]
    assert "STATUS=client-1: peer server-1 unreachable" in ready and "handshake" in ready, ready
    assert code(t, "/readiness") == 503


def test_hostile_http_never_blocks_the_server_or_the_relay(echo_pair):
    pair, _ = echo_pair
    host, port = pair.server.health_address.rsplit(":", 1)
    address = (host, int(port))
    fds_before = pair.server.fd_count()

    def exchange(raw, timeout=5):
        with socket.create_connection(address, timeout=timeout) as s:
            s.sendall(raw)
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except (ConnectionResetError, socket.timeout):
                pass
            return data

    assert exchange(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(b"GET /readiness HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431")
    assert exchange(b"POST /readiness HTTP/1.1\r\nContent-Length: 100000\r\n\r\n" + b"a" * 100000).startswith(
        b"HTTP/1.1 413")
    assert exchange(b"GET /readiness HTTP/1.1\r\nContent-Length: -5\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert exchange(b"BREW /readiness HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 4")

    # A slow client (half a request, then silence) and 200 idle connections at once.
    slow = socket.create_connection(address)
    slow.sendall(b"GET /readi")
    flood = [socket.create_connection(address, timeout=2) for _ in range(200)]  # all 200, or the test fails
    # Loopback is one source with 8 sessions, and the slow client holds one: 7
    # of the flood are kept (none has had its 5 s yet, so none is evicted) and
    # exactly 193 are closed at accept. Wait for those closes, then count.
    closed = set()

    def count_closed():
        readable, _, _ = select.select([s for s in flood if s not in closed], [], [], 0.2)
        for s in readable:
            try:
                if s.recv(1) == b"":
                    closed.add(s)
            except ConnectionResetError:
                closed.add(s)
        return len(closed) >= 193

    lab.wait_for(count_closed, timeout=4, what="193 flood connections closed at accept")
    assert len(closed) == 193, len(closed)
    # Meanwhile the relay is untouched.
    conn = pair.connect()
    conn.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    conn.close()
    # Once the flood goes (or times out after 5 s), the endpoint answers again.
    for s in flood:
        s.close()
    lab.wait_for(lambda: code(pair.server, "/liveness") == 200, timeout=10, what="health answers after the flood")
    started = time.monotonic()
    slow.settimeout(10)
    assert slow.recv(100) == b""  # the slow client was cut after 5 s
    slow.close()
    assert time.monotonic() - started < 7
    assert pair.server.proc.poll() is None
    lab.wait_for(lambda: pair.server.fd_count() <= fds_before + 2, timeout=10, what="no fd leaked")


def test_parked_keep_alive_sockets_never_hold_monitors_out(echo_pair):
    """64 keep-alive sessions parked by one client used to fill every slot, so
    HAProxy's checks were refused and the node marked down. Now a source has at
    most 8 and displaces its own idlest: monitors from any address get answers."""
    pair, _ = echo_pair
    host, port = pair.server.health_address.rsplit(":", 1)
    parked = []
    for _ in range(64):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.connect((host, int(port)))
        s.sendall(b"GET /liveness HTTP/1.1\r\nHost: x\r\n\r\n")  # answered, then kept alive and idle
        parked.append(s)
    for who in ("127.0.0.3", "127.0.0.2", "127.0.0.1"):  # another host, the hog itself, loopback
        for _ in range(5):
            c = http.client.HTTPConnection(host, int(port), timeout=3, source_address=(who, 0))
            c.request("GET", "/liveness")
            assert c.getresponse().status == 200, who
            c.close()
    # The hog kept at most 8 of its sockets; the rest were closed.
    still_open = 0
    for s in parked:
        s.setblocking(False)
        closed = False
        try:
            while True:  # the buffered answer, then EOF if the server closed it
                if s.recv(65536) == b"":
                    closed = True
                    break
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed = True
        still_open += not closed
    assert still_open <= 8, still_open
    for s in parked:
        s.close()


def test_a_flood_from_many_loopback_addresses_never_cuts_a_monitors_check(echo_pair):
    """A local user has all of 127/8: 64 connections from 64 loopback addresses
    filled the old server's 64 sessions, and the 64th evicted the oldest idle
    one, a monitor that had connected and was about to send its check (EOF).
    Now loopback is one source (8 sessions), and a session that has not had its
    first request's deadline yet is never evicted."""
    pair, _ = echo_pair
    host, port = pair.server.health_address.rsplit(":", 1)
    monitor = socket.create_connection((host, int(port)), timeout=5)
    flood = []
    for i in range(64):
        s = socket.socket()
        s.bind((f"127.0.1.{10 + i}", 0))
        s.connect((host, int(port)))
        flood.append(s)
    for s in flood:
        s.setblocking(False)

    def refused():
        n = 0
        for s in flood:
            try:
                n += s.recv(1) == b""
            except BlockingIOError:
                pass
            except ConnectionResetError:
                n += 1
        return n

    seen = 0
    deadline = time.monotonic() + 3
    while seen < 64 - 8 and time.monotonic() < deadline:  # all but loopback's 8 places refused
        seen += refused()
        time.sleep(0.05)
    monitor.sendall(b"GET /liveness HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := monitor.recv(65536):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    monitor.close()
    for s in flood:
        s.close()


class ThreadStop:
    """Stops one thread of another process (PTRACE_SEIZE + PTRACE_INTERRUPT act on
    that thread alone; SIGSTOP would stop them all) until resume()."""
    SEIZE, INTERRUPT, DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000

    def __init__(self, tid):
        import ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        self.tid = tid
        for op in (self.SEIZE, self.INTERRUPT):
            if self.libc.ptrace(op, tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace {op:#x} on thread {tid}")
        os.waitpid(tid, self.WALL)  # the thread is in its ptrace stop now

    def resume(self):
        self.libc.ptrace(self.DETACH, self.tid, None, None)


def thread_named(pid, name):
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/comm") as f:
            if f.read().strip() == name:
                return int(tid)
    raise LookupError(f"no thread {name} in {pid}")


def test_one_wedged_io_thread_fails_liveness_and_stops_the_watchdog(echo_pair):
    """Only one I/O thread stuck (not the whole process, whose other threads still
    answer HTTP): /liveness says so within the 5 s heartbeat bound, WATCHDOG=1
    stops (so systemd's watchdog restarts the unit), and both come back when the
    thread runs again."""
    pair, _ = echo_pair
    c = pair.client
    c.stop()
    c.start(env={"WATCHDOG_USEC": "1000000"})  # WatchdogSec=1s: WATCHDOG=1 every 0.5 s
    lab.wait_for(lambda: c.poll_notifications().count("WATCHDOG=1") >= 2, timeout=5, what="WATCHDOG=1")
    assert code(c, "/liveness") == 200
    stopped = ThreadStop(thread_named(c.proc.pid, "td-io-0"))
    try:
        wedged_at = time.monotonic()
        lab.wait_for(lambda: code(c, "/liveness") == 503, timeout=10, what="/liveness 503")
        assert time.monotonic() - wedged_at < 8
        assert "an I/O thread did not answer its heartbeat" in c.http("/liveness")[2] + c.http("/readiness")[2]
        # STATUS= says it too; from then on no WATCHDOG=1 for four of its periods
        # (a negative: an observation window is the only way to see it).
        lab.wait_for(lambda: "STATUS=client-1: an I/O thread did not answer its heartbeat" in c.poll_notifications(),
                     timeout=5, what="STATUS= naming the wedged thread")
        watchdogs = c.poll_notifications().count("WATCHDOG=1")
        time.sleep(2)
        assert c.poll_notifications().count("WATCHDOG=1") == watchdogs, "WATCHDOG=1 went on with a wedged thread"
    finally:
        stopped.resume()
    lab.wait_for(lambda: code(c, "/liveness") == 200, timeout=5, what="/liveness 200 again")
    lab.wait_for(lambda: c.poll_notifications().count("WATCHDOG=1") > watchdogs, timeout=5, what="WATCHDOG=1 again")


def test_health_command_exit_codes_and_output(echo_pair):
    pair, backend = echo_pair
    r = lab.tunneld_cli("health", "--peer", pair.client.config_path)
    assert r.returncode == 0 and r.stdout.strip() == "readiness: ok", r
    r = lab.tunneld_cli("health", "--peer", pair.client.config_path, "--path", "/status")
    assert r.returncode == 0 and json.loads(r.stdout)["node"] == "client-1"
    r = lab.tunneld_cli("health", "--peer", pair.client.config_path, "--path", "/primary")
    assert r.returncode == 1
    assert r.stdout.startswith("primary: FAILED (503):\n  - health.postgres is not set"), r.stdout
    backend.close()
    lab.wait_for(lambda: lab.tunneld_cli("health", "--peer", pair.server.config_path, "--path", "/health").returncode == 1,
                 what="health command fails with the backend down")
    pair.client.stop()
    r = lab.tunneld_cli("health", "--peer", pair.client.config_path)
    assert r.returncode == 1
    assert "Connection refused (is tunneld running with --peer" in r.stderr, r.stderr
    # --wait keeps asking until 200: the daemon starting meanwhile is waited for.
    starter = threading.Timer(1.5, pair.client.start)
    starter.start()
    try:
        r = lab.tunneld_cli("health", "--peer", pair.client.config_path, "--wait", "30")
    finally:
        starter.join()
    assert r.returncode == 0 and r.stdout.strip() == "readiness: ok", r
    t0 = time.monotonic()
    r = lab.tunneld_cli("health", "--peer", pair.client.config_path, "--path", "/primary", "--wait", "2")
    assert r.returncode == 1 and 1.4 < time.monotonic() - t0 < 10, r  # never 200: the last answer, after ~2 s
    # A config without health.listen: said so (this used to read past an empty list).
    cfg = pair.client.config_path + ".nohealth.yaml"
    with open(pair.client.config_path) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(re.sub(r"health:\n(  .*\n)*", "", text))
    r = lab.tunneld_cli("health", "--peer", cfg)
    assert r.returncode == 1 and "has no health.listen; set one" in r.stderr, r


def test_metrics_pass_promtool_and_count_what_happened(echo_pair):
    pair, _ = echo_pair
    conn = pair.connect()
    conn.sendall(b"abc")
    assert conn.recv(3) == b"abc"
    conn.close()
    lab.wait_for(lambda: 'tunneld_connections_total{peer="client-1",direction="inbound",service="postgresql"} 1' in
                 pair.server.http("/metrics")[2], what="inbound connection counted")
    for t in (pair.server, pair.client):
        status, headers, text = t.http("/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    text = pair.server.http("/metrics")[2]
    assert 'tunneld_received_bytes_total{peer="client-1",direction="inbound",service="postgresql"} 3' in text
    assert 'tunneld_handshakes_total{direction="inbound",reason="ok"}' in text
    assert 'tunneld_connection_closes_total{direction="inbound",reason="finished"} 1' in text
    assert 'tunneld_peer_up{peer="server-1"} 1' in pair.client.http("/metrics")[2]


# --------------------------------------------------------------------------- PostgreSQL

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
        haproxy.send_signal(signal.SIGTERM)
        try:
            haproxy.wait(timeout=5)
        except subprocess.TimeoutExpired:
            haproxy.kill()
            haproxy.wait()
