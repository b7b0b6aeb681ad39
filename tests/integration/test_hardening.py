"""Hardening round two (issue 23): what a local user or an authenticated but
hostile peer sends can neither make `tunneld reload` signal a stranger nor
forge sd_notify assignments or journal entries."""

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading

import pytest

import lab

FORGED = "down\nWATCHDOG=trigger\nSTATUS=forged\n<0>kernel: forged emergency"

# Runs inside `unshare --pid --fork --mount-proc` (pid 1 of a private PID
# namespace): whatever `tunneld reload` signals by mistake, even kill(-1), only
# reaches the processes started here, never the machine running the tests.
RELOAD_DRIVER = r'''
import json, os, signal, subprocess, sys, time
tunneld, config, port, workdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
hup_dir = os.path.join(workdir, "hups"); os.makedirs(hup_dir, exist_ok=True)
pid_file = os.path.join(workdir, "announced-pid")
# Processes that record any SIGHUP (by name) and otherwise wait.
recorder = ("import os,signal,sys,time\n"
            "def hup(*a): open(os.path.join(sys.argv[1], sys.argv[2]), 'w').close()\n"
            "signal.signal(signal.SIGHUP, hup)\n")
victim = subprocess.Popen([sys.executable, "-c", recorder + "print('up', flush=True)\nwhile True: time.sleep(1)\n",
                           hup_dir, "victim"], stdout=subprocess.PIPE, text=True)
assert victim.stdout.readline().strip() == "up"
sleeper = subprocess.Popen(["sleep", "300"])  # SIGHUP would kill it
# A fake daemon on health.listen: /status names whatever pid the test chose.
fake = subprocess.Popen([sys.executable, "-c", recorder + textwrap.dedent("""
    import http.server, json
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            pid = int(open(sys.argv[3]).read())
            body = json.dumps({"pid": pid, "tls": {"reloads": {"ok": 0, "failed": 0}}}).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a): pass
    s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[4])), H)
    print("up", flush=True)
    s.serve_forever()
    """), hup_dir, "fake-server", pid_file, str(port)], stdout=subprocess.PIPE, text=True)
assert fake.stdout.readline().strip() == "up"
cases = [("status", 4294967295), ("status", 2**32 + victim.pid), ("status", victim.pid),
         ("status", sleeper.pid), ("status", fake.pid), ("status", 1), ("status", -1),
         ("--pid", victim.pid), ("--pid", 4294967295), ("--pid", 1), ("MAINPID", victim.pid),
         ("MAINPID", "4294967295"), ("MAINPID", "12abc")]
results = []
for how, pid in cases:
    with open(pid_file, "w") as f:
        f.write(str(pid if how == "status" else victim.pid))
    cmd = [tunneld, "reload", "--peer", config, "--timeout", "2"]
    env = {k: v for k, v in os.environ.items() if k != "MAINPID"}
    if how == "--pid":
        cmd += ["--pid", str(pid)]
    elif how == "MAINPID":
        env["MAINPID"] = str(pid)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    results.append({"case": f"{how} {pid}", "rc": r.returncode, "stderr": r.stderr})
time.sleep(0.3)  # a signal sent is delivered by now
out = {"results": results, "hups": sorted(os.listdir(hup_dir)),
       "sleeper_alive": sleeper.poll() is None, "victim_alive": victim.poll() is None,
       "fake_alive": fake.poll() is None}
for p in (victim, sleeper, fake):
    p.kill()
print(json.dumps(out))
'''


@pytest.mark.skipif(not lab.is_root(), reason="needs root: a private PID namespace (unshare --pid)")
def test_reload_signals_no_pid_it_cannot_prove_is_this_configs_daemon(workdir, ca):
    """A /status answered by someone else (any local user can bind health.listen
    while the daemon is down), a wrapped pid (2^32-1 was kill(-1, SIGHUP)), a
    pid that is not tunneld, init, a bad $MAINPID: all refused, nothing signalled."""
    cert, key, _ = ca.issue("node-1", os.path.join(workdir, "node"))
    port = lab.free_port()
    config = os.path.join(workdir, "node.yaml")
    with open(config, "w") as f:
        f.write(lab.node_config("node-1", ca.cert_path, cert, key,
                                peers=[{"name": "p", "connect": "127.0.0.1:1", "local": f"127.0.0.1:{lab.free_port()}"}],
                                extra=f'health:\n  listen: "127.0.0.1:{port}"\n'))
    driver = os.path.join(workdir, "driver.py")
    with open(driver, "w") as f:
        f.write("import textwrap\n" + RELOAD_DRIVER)
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, driver, lab.TUNNELD,
                        config, str(port), workdir], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for res in out["results"]:
        assert res["rc"] == 1, res
        assert "tunneld reload: refusing to signal" in res["stderr"], res
        assert "sent SIGHUP" not in res["stderr"], res
    by_case = {res["case"].split(" ")[0] + " " + res["case"].split(" ")[1]: res["stderr"] for res in out["results"]}
    assert "does not hold the listening socket" in by_case["status 4294967295"]
    assert "is not a daemon's pid" in by_case["--pid 4294967295"]
    assert "is not a daemon's pid" in by_case["--pid 1"]
    assert "is not a daemon's pid" in by_case["MAINPID 4294967295"]
    assert "is not a daemon's pid" in by_case["MAINPID 12abc"]
    assert "not tunneld" in by_case["MAINPID " + by_case_pid(out, "--pid")]
    fake_case = [res for res in out["results"] if res["case"].startswith("status ")][4]
    assert re.search(r"is /usr/bin/python3[.0-9]*, not tunneld", fake_case["stderr"]), fake_case
    assert out["hups"] == [], out
    assert out["sleeper_alive"] and out["victim_alive"] and out["fake_alive"], out


def by_case_pid(out, how):
    """The pid of the first case given `how` (the victim's)."""
    return next(r["case"].split(" ")[1] for r in out["results"] if r["case"].startswith(how + " "))


def forging_peer(ca, workdir):
    """A peer with a valid certificate (server-1) that answers every probe ping
    with a pong whose postgres error is FORGED. Returns its listening socket
    (closing it ends the peer)."""
    cert, key, _ = ca.issue("server-1", os.path.join(workdir, "forger"))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca.cert_path)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["tunneld-probe"])
    srv = socket.create_server(("127.0.0.1", 0))

    def serve(conn):
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                buf = b""
                while data := tls.recv(4096):
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        seq = json.loads(line)["ping"]
                        backend = {"checked": True, "reachable": True, "error": FORGED,
                                   "postgres": {"up": False, "error": FORGED, "receiver_status": FORGED}}
                        tls.sendall(json.dumps({"pong": seq, "node": FORGED, "backend": backend}).encode() + b"\n")
        except (OSError, ValueError, KeyError):
            return

    def accept():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def test_a_peers_pong_cannot_forge_sd_notify_assignments_or_journal_entries(workdir, ca, cleanup):
    """Reproduced on the old main: a pong error "down\\nWATCHDOG=trigger\\n..." went
    into the route's detail, the STATUS= line (systemd then read WATCHDOG=trigger
    and ran the watchdog action) and the journal (a forged <0> entry)."""
    srv = forging_peer(ca, workdir)
    cleanup.append(srv.close)
    port = srv.getsockname()[1]
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "client"))
    route = lab.free_port()
    text = lab.node_config("client-1", ca.cert_path, cert, key,
                           peers=[{"name": "server-1", "connect": f"127.0.0.1:{port}",
                                   "local": f"127.0.0.1:{lab.free_port()}"}],
                           extra=f"routes:\n  - {{local: 127.0.0.1:{route}, to: primary}}\n")
    d = lab.Tunneld(workdir, "client", text)
    # JOURNAL_STREAM: the daemon writes journal lines ("<4>...") as under systemd.
    d.start(env={"JOURNAL_STREAM": "8:12345"})
    cleanup.append(d.stop)
    lab.wait_for(lambda: "refuses" in d.poll_notifications(), timeout=15, what="STATUS= with the route's refusal")
    for _ in range(3):  # a client of the route: its refusal is logged with the detail
        try:
            socket.create_connection(("127.0.0.1", route), timeout=2).close()
        except OSError:
            pass
    d.wait_log(r"route=127\.0\.0\.1:%d reason=no_primary" % route, timeout=10)
    notes = list(d.notifications)
    assert notes, "no sd_notify datagram"
    for datagram in notes:
        for assignment in datagram.split("\n"):
            assert re.match(r"^(READY|STATUS|WATCHDOG|RELOADING|STOPPING)=", assignment), repr(datagram)
            assert assignment != "WATCHDOG=trigger" and not assignment.startswith("STATUS=forged"), repr(datagram)
    assert any("\\x0aWATCHDOG=trigger" in n for n in notes), notes  # the text is there, escaped
    log = d.read_log().splitlines()
    assert log
    for line in log:
        assert re.match(r"^<[2-7]>", line), repr(line)  # every entry has our priority, none is forged
        assert not line.startswith("<0>")
    assert any("\\x0a<0>kernel: forged emergency" in line for line in log)
    status = d.status()
    assert "\n" not in json.dumps(status)  # JSON escapes it anyway; the stored text has none
    assert FORGED not in json.dumps(status)


def test_check_warns_that_a_unix_socket_backend_with_peer_auth_lets_peers_in_as_tunneld(workdir, ca):
    """inbound.backend: unix:... plus Debian's `local all all peer`: every tunnelled
    connection is the OS user tunneld, so a peer logs in as role tunneld (pg_monitor)
    with no password. `tunneld check` says so; a TCP backend gets no such line."""
    cert, key, _ = ca.issue("node-1", os.path.join(workdir, "node"))
    path = os.path.join(workdir, "node.yaml")
    for backend, warned in (("unix:/var/run/postgresql/.s.PGSQL.5432", True), ("127.0.0.1:5432", False)):
        with open(path, "w") as f:
            f.write(lab.node_config("node-1", ca.cert_path, cert, key,
                                    inbound={"listen": f"127.0.0.1:{lab.free_port()}", "backend": backend,
                                             "allow": ["node-2"]}))
        r = lab.tunneld_cli("check", "--peer", path)
        line = [ln for ln in r.stdout.splitlines() if "any allowed peer can log in as role tunneld" in ln]
        assert bool(line) == warned, r.stdout
        if warned:
            assert line[0].startswith("warn  inbound.backend unix:/var/run/postgresql/.s.PGSQL.5432: ")
            assert "`local all all peer`" in line[0] and "127.0.0.1:5432" in line[0]


def test_with_ci_true_a_root_only_test_that_skips_fails(tmp_path):
    """CI runs as root: a root-only test that skips there has silently stopped
    testing anything. The plugin turns such a skip into a failure under CI=true
    and leaves every other skip (and every run outside CI) alone."""
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "def test_root_only():\n    pytest.skip('needs root: network namespaces')\n"
        "def test_other_skip():\n    pytest.skip('no IPv6 on this host')\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "ci_skips", "-q", "-rA", str(tmp_path)]
    ci = subprocess.run(cmd, env=dict(env, CI="true"), capture_output=True, text=True, cwd=tmp_path)
    assert ci.returncode == 1, ci.stdout
    assert "1 failed, 1 skipped" in ci.stdout, ci.stdout
    assert "CI=true: this root-only test skipped (needs root: network namespaces)" in ci.stdout, ci.stdout
    env.pop("CI", None)
    local = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert local.returncode == 0 and "2 skipped" in local.stdout, local.stdout
