"""The health endpoint with real processes: every path in each state (peer up,
peer tunneld killed, peer's backend down, local backend down), sd_notify as
systemd sees it, hostile HTTP, `tunneld health`, Prometheus' own checker, and
(as root, in namespaces) a real PostgreSQL pair: role endpoints flipping on
promotion, /replica?lag= under load with replay paused, and HAProxy routing a
psql client to the primary across a failover."""


import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import lab
from health_lab import PROBE_INTERVAL, backend_address, code, problems


def test_every_path_answers_as_documented_when_all_is_up(echo_pair):
    pair, _ = echo_pair
    for t in (pair.server, pair.client):
        for path in ("/liveness", "/readiness", "/health"):
            status, headers, body = t.http(path)
            assert status == 200, (t.name, path, body)
            assert headers["Content-Type"] == "application/json"
            assert json.loads(body)["tunneld"]["ok"] is True
        # No health.postgres: the role is unknown, so no router may pick this node.
        for path in ("/primary", "/replica", "/replica?lag=16MB", "/read-only", "/"):
            assert code(t, path) == 503, (t.name, path)
        assert "health.postgres is not set" in problems(t, "/primary")[0]
        assert code(t, "/nope") == 404
        assert code(t, "/replica?lag=sixteen") == 400
        status, headers, body = t.http("/readiness", method="HEAD")
        assert (status, body) == (200, "") and int(headers["Content-Length"]) > 0
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            status, headers, _ = t.http("/readiness", method=method)
            assert status == 405 and headers["Allow"] == "GET, HEAD, OPTIONS", method
        status, _, body = t.http("/readiness", method="OPTIONS")  # as Patroni: like GET
        assert status == 200 and json.loads(body)["tunneld"]["check"] == "readiness"

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
