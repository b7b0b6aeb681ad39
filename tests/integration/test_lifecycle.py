"""Reload, drain and connection limits, with real processes. Start-up refusals
and `tunneld check` are in test_startup_and_check.py."""

import os
import re
import shutil
import signal
import socket
import time

import lab
from lab import echo_once


def test_sighup_reload_switches_certificate_and_keeps_live_connection(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    ca = pair.ca
    old_serial = pair.server_cert[2]
    live = pair.connect()
    assert echo_once(live, b"before") == b"before"

    # New key and cert for the same node, written over the configured files.
    new_cert, new_key, new_serial = ca.issue("server-1", os.path.join(workdir, "next"))
    shutil.copy(new_cert, pair.server_cert[0])
    shutil.copy(new_key, pair.server_cert[1])
    pair.server.signal(signal.SIGHUP)
    pair.server.wait_log(rf"reload \(SIGHUP\): TLS material replaced \(cert serial {old_serial} -> {new_serial}")

    assert echo_once(live, b"after reload") == b"after reload"  # untouched
    assert lab.presented_serial(pair.tls_port, ca.cert_path, *pair.client_cert[:2]) == new_serial
    with pair.connect() as fresh:
        assert echo_once(fresh, b"new connection") == b"new connection"
    live.close()


def test_invalid_reload_keeps_old_material(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    old_serial = pair.server_cert[2]
    # A certificate whose key we do not install: key and cert no longer match.
    other_cert, _, _ = pair.ca.issue("server-1", os.path.join(workdir, "other"))
    shutil.copy(other_cert, pair.server_cert[0])
    pair.server.signal(signal.SIGHUP)
    pair.server.wait_log(rf"reload \(SIGHUP\) failed, still serving cert serial {old_serial}: .*does not belong")
    # Truncated certificate file: refused too.
    with open(pair.server_cert[0], "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIB")
    pair.server.signal(signal.SIGHUP)
    pair.server.wait_log(rf"reload \(SIGHUP\) failed, still serving cert serial {old_serial}: .*no PEM certificate")
    with pair.connect() as c:
        assert echo_once(c, b"still served") == b"still served"
    assert lab.presented_serial(pair.tls_port, pair.ca.cert_path, *pair.client_cert[:2]) == old_serial


def test_reload_command_waits_for_the_daemon_and_fails_with_its_reason(workdir, cleanup):
    """`tunneld reload` (the unit's ExecReload): SIGHUP, then the daemon's own
    answer through its health endpoint, after its RELOADING=1 / READY=1."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False)
    cleanup.append(pair.stop)
    pair.server.start()
    serial = pair.server_cert[2]
    r = lab.tunneld_cli("reload", "--peer", pair.server.config_path)
    assert r.returncode == 0 and r.stdout == f"reloaded: serving cert serial {serial}\n", r.stdout + r.stderr
    notes = pair.server.poll_notifications()
    assert notes.rindex("RELOADING=1") < notes.rindex("READY=1"), notes  # the round trip ended first
    pair.server.wait_log(r"reload \(SIGHUP\): TLS material replaced")

    # A bad file: exit 1 with the daemon's reason; the old material keeps serving.
    with open(pair.server_cert[0], "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIB")
    r = lab.tunneld_cli("reload", "--peer", pair.server.config_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("tunneld reload: reload failed: ") and "no PEM certificate" in r.stderr, r.stderr
    assert f"still serving cert serial {serial}" in r.stderr, r.stderr
    pair.client.start()
    with pair.connect() as c:
        assert echo_once(c, b"still served") == b"still served"

    # The daemon gone: said so, exit 1.
    pair.server.stop()
    r = lab.tunneld_cli("reload", "--peer", pair.server.config_path)
    assert r.returncode == 1 and "is tunneld running with --peer" in r.stderr, r.stderr
    # No health endpoint to confirm with: refused, not a silent success.
    cfg = os.path.join(workdir, "nohealth.yaml")
    with open(pair.server.config_path) as f:
        text = f.read()
    with open(cfg, "w") as f:
        f.write(re.sub(r"health:\n(  .*\n)*", "", text))
    r = lab.tunneld_cli("reload", "--peer", cfg)
    assert r.returncode == 1 and "has no health.listen" in r.stderr and "cannot confirm" in r.stderr, r.stderr


def test_sigterm_stops_accepting_and_drains_live_connection(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    live = pair.connect()
    assert echo_once(live, b"x") == b"x"
    pair.server.signal(signal.SIGTERM)
    pair.server.wait_log(r"stopping: no new connections; draining 1 live")
    # Listener is closed: a new TCP connection to the TLS port is refused.
    lab.wait_for(lambda: _refused(pair.tls_port), what="inbound listener closed")
    # The live connection keeps working during the drain.
    assert echo_once(live, b"during drain") == b"during drain"
    assert pair.server.proc.poll() is None
    live.close()
    assert pair.server.proc.wait(timeout=10) == 0
    assert pair.server.log_lines(r"inbound close .*reason=finished")


def test_drain_timeout_closes_what_is_left(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, extra_server="timeouts: {shutdown: 1s}\n")
    cleanup.append(pair.stop)
    live = pair.connect()
    assert echo_once(live, b"x") == b"x"
    started = time.monotonic()
    pair.server.signal(signal.SIGTERM)
    assert pair.server.proc.wait(timeout=10) == 0
    assert 0.9 < time.monotonic() - started < 5
    assert pair.server.log_lines(r"closing 1 connection\(s\) still open after 1s")
    assert pair.server.log_lines(r"inbound close .*reason=shutdown")
    live.settimeout(5)
    assert live.recv(10) == b""  # the client side learns at once, via the client tunneld
    live.close()


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def test_connection_limit_refuses_extra_connections_and_logs_it(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, extra_server="limits: {max_connections: 2}\n")
    cleanup.append(pair.stop)
    held = [pair.connect(), pair.connect()]
    for c in held:
        assert echo_once(c, b"held") == b"held"
    with pair.connect() as third:
        third.settimeout(5)
        assert third.recv(10) == b""
    pair.server.wait_log(r"inbound: refused 1 connection\(s\) from peer client-1: limits.max_connections=2 reached")
    assert backend.accepted == 2
    for c in held:
        c.close()


def test_idle_strangers_from_one_address_cannot_lock_out_the_real_peer(workdir, cleanup):
    """14 idle TCP sockets from one address against max_connections 12 used to take
    every slot (and write a warning per attempt): now they spend only their own
    address's handshake budget, the peer always finds room, and the refusals are
    one summary line."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address,
                    extra_server="limits: {max_connections: 12, max_handshakes_per_source: 2}\n"
                                 "timeouts: {handshake: 10s}\n")
    cleanup.append(pair.stop)
    idle = []
    for _ in range(14):
        s = socket.socket()
        s.bind(("127.0.0.2", 0))  # the stranger's own address (the peer comes from 127.0.0.1)
        s.connect(("127.0.0.1", pair.tls_port))
        idle.append(s)
    pair.server.wait_log(r"inbound: refused 1 connection\(s\) from 127\.0\.0\.2 at accept: "
                         r"limits.max_handshakes_per_source=2")
    # 12 of the 14 were refused at once: the server closed them.
    closed = 0
    for s in idle:
        s.settimeout(2)
        try:
            closed += s.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            pass
    assert closed == 12, f"{closed} of 14 idle connections closed at accept (12 expected)"
    for i in range(5):
        with pair.connect() as c:
            assert echo_once(c, b"peer %d" % i) == b"peer %d" % i
    assert not pair.server.log_lines(r"reason=limit"), "the real peer was refused"
    lines = pair.server.log_lines(r"inbound: refused")
    assert len(lines) == 1, lines
    for s in idle:
        s.close()


def test_too_many_unauthenticated_in_total_are_refused_at_once(workdir, cleanup, ca):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address,
                    extra_server="limits: {max_handshakes: 3, max_handshakes_per_source: 100}\n"
                                 "timeouts: {handshake: 10s}\n")
    cleanup.append(pair.stop)
    idle = []
    for n in range(3):
        s = socket.socket()
        s.bind((f"127.0.0.{10 + n}", 0))
        s.connect(("127.0.0.1", pair.tls_port))
        idle.append(s)
    # Once the three strangers hold the whole budget (the daemon takes them in
    # asynchronously), the next newcomer is closed at once, holding nothing.
    def refused_at_once(n=[20]):
        n[0] += 1
        s = socket.socket()
        s.bind((f"127.0.0.{n[0]}", 0))
        s.connect(("127.0.0.1", pair.tls_port))
        idle.append(s)
        s.settimeout(0.5)
        try:
            return s.recv(1) == b""
        except socket.timeout:
            return False  # got in: the budget was not full yet; it holds a slot now, so try again

    lab.wait_for(refused_at_once, timeout=10, interval=0, what="a newcomer refused at accept")
    pair.server.wait_log(r"refused 1 connection\(s\) from 127\.0\.0\.\d+ at accept: limits.max_handshakes=3")
    # Once the strangers go, the peer gets through again.
    for c in idle:
        c.close()
    with pair.connect() as c:
        assert echo_once(c, b"after") == b"after"


def test_ipv6_listener_and_peer(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False)
    port = lab.free_port("::1")
    for t in (pair.server, pair.client):
        text = open(t.config_path).read().replace(f"127.0.0.1:{pair.tls_port}", f"[::1]:{port}")
        open(t.config_path, "w").write(text)
    pair.server.start()
    pair.client.start()
    cleanup.append(pair.stop)
    with pair.connect() as c:
        assert echo_once(c, b"v6") == b"v6"
    pair.server.wait_log(r"inbound open peer=client-1 remote=\[::1\]:")


def test_two_instances_with_default_health_settings_both_start(workdir, cleanup, ca):
    """tunneld@a and tunneld@b on one host: no default TCP port to collide on."""
    daemons = []
    for name in ("a", "b"):
        cert, key, _ = ca.issue(name, os.path.join(workdir, name))
        text = lab.node_config(name, ca.cert_path, cert, key,
                               peers=[{"name": "peer-" + name, "connect": "127.0.0.1:9",
                                       "local": f"127.0.0.1:{lab.free_port()}"}],
                               extra="health:\n  probe_interval: 500ms\n")
        assert "listen" not in text.split("health:")[1]
        t = lab.Tunneld(workdir, name, text).start()
        cleanup.append(t.stop)
        daemons.append(t)
    for t in daemons:
        assert t.proc.poll() is None, t.read_log()
        assert not t.log_lines("health: listening"), "a TCP health listener without health.listen"
