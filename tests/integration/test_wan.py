"""The lab WAN (wan_lab.py) is what it claims: its round trip measured by ping,
its loss rate by a counted run; and a tunneld pair across it carries a stream
intact through latency and loss."""

import os
import subprocess
import time

import pytest

import lab
import wan_lab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and AF_PACKET")

ECHO = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
def serve(c):
    while True:
        d = c.recv(1 << 16)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

CLIENT = r"""
import hashlib, socket, sys, threading, time
total = int(sys.argv[2])
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=120)
block = bytes(range(256)) * 256
def send():
    left = total
    while left:
        n = min(left, len(block)); c.sendall(block[:n]); left -= n
    c.shutdown(socket.SHUT_WR)
t0 = time.monotonic()
threading.Thread(target=send, daemon=True).start()
h, got = hashlib.sha256(), 0
while True:
    d = c.recv(1 << 16)
    if not d:
        break
    h.update(d); got += len(d)
want = hashlib.sha256()
left = total
while left:
    n = min(left, len(block)); want.update(block[:n]); left -= n
print(got, h.hexdigest() == want.hexdigest(), round(time.monotonic() - t0, 2))
"""


TLS_PORT, LOCAL_PORT, SERVICE_PORT = 8765, 6432, 6439


def start_pair(wan, workdir, ca, backend_port, extra=""):
    """A tunneld pair across the WAN: server on b (-> 127.0.0.1:backend_port),
    client on a (127.0.0.1:LOCAL_PORT; probe_interval 500ms), and the same
    backend as a named service, "etcd", on the client's 127.0.0.1:SERVICE_PORT.
    `extra`: top-level config lines for both. Returns (server, client)."""
    s_cert, s_key, _ = ca.issue("server-1", os.path.join(workdir, "s"))
    c_cert, c_key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    server = lab.Tunneld(workdir, "server", lab.node_config(
        "server-1", ca.cert_path, s_cert, s_key,
        inbound={"listen": f"{wan_lab.B}:{TLS_PORT}", "backend": f"127.0.0.1:{backend_port}",
                 "allow": ["client-1"]}).replace(
        '  allow: ["client-1"]\n', f'  allow: ["client-1"]\n  services: {{etcd: "127.0.0.1:{backend_port}"}}\n') + extra,
        netns=wan.b.name).start()
    client = lab.Tunneld(workdir, "client", lab.node_config(
        "client-1", ca.cert_path, c_cert, c_key,
        peers=[{"name": "server-1", "connect": f"{wan_lab.B}:{TLS_PORT}",
                "local": f"127.0.0.1:{LOCAL_PORT}"}]).replace(
        f'    local: "127.0.0.1:{LOCAL_PORT}"\n',
        f'    local: "127.0.0.1:{LOCAL_PORT}"\n    services: {{etcd: "127.0.0.1:{SERVICE_PORT}"}}\n') + extra,
        netns=wan.a.name).start()
    return server, client


@pytest.fixture
def wan():
    w = wan_lab.Wan(rtt_ms=20).setup()
    yield w
    w.teardown()


def test_the_lab_wan_has_its_round_trip_and_loss(wan):
    rtt, mdev, loss = wan.ping(count=20)
    assert loss == 0
    assert 20 <= rtt <= 23, f"ping rtt {rtt} ms through a 20 ms delay line"
    wan.start_bridge(100)
    rtt100, _, _ = wan.ping(count=10)
    assert 100 <= rtt100 <= 104, rtt100
    wan.start_bridge(20)
    # 1% each way: a ping round trip is lost with probability 1 - 0.99^2 = 1.99%.
    wan.set_loss(0.01)
    _, _, loss = wan.ping(count=2000, interval=0.002)
    assert 0.008 <= loss <= 0.035, f"round-trip loss {loss:.2%} for 1% each way"
    print(f"wan: ping rtt {rtt:.2f} ms (mdev {mdev:.2f}) at 20 ms, {rtt100:.2f} ms at 100 ms; "
          f"round-trip loss {loss:.2%} at 1% each way")


def test_a_tunneld_pair_across_the_wan_carries_a_stream_intact_under_loss(wan, workdir, ca):
    wan.set_loss(0.005)
    backend_port, local_port = 5433, LOCAL_PORT
    echo = wan.b.popen(["/usr/bin/python3", "-c", ECHO, str(backend_port)])
    try:
        server, client = start_pair(wan, workdir, ca, backend_port)
        try:
            total = 16 << 20
            r = wan.a.exec(["/usr/bin/python3", "-c", CLIENT, str(local_port), str(total)], timeout=300)
            got, intact, seconds = r.stdout.split()
            assert int(got) == total and intact == "True", r.stdout + r.stderr
            server.wait_log(rf"inbound close .* rx={total} tx={total} .*reason=finished")
            print(f"wan: 16 MiB each way through tunneld at 20 ms rtt, 0.5% loss each way: {seconds}s")
        finally:
            client.stop()
            server.stop()
    finally:
        echo.kill()
        echo.wait()


# Line commands on stdin, one answer line each: "open NAME" connects through
# tunneld and echoes a line ("ok SECONDS" or "err SECONDS ERROR"); "echo NAME"
# echoes another line on an open connection.
SESSIONS = r"""
import socket, sys, time
port, conns = int(sys.argv[1]), {}
for line in sys.stdin:
    cmd, name = line.split()
    t0 = time.monotonic()
    try:
        if cmd == "open":
            conns[name] = socket.create_connection(("127.0.0.1", port), timeout=20)
        c = conns[name]
        c.sendall(b"hello\n")
        if c.recv(100) != b"hello\n":
            raise ConnectionError("closed without an echo")
        print("ok", round(time.monotonic() - t0, 3), flush=True)
    except Exception as e:
        print("err", round(time.monotonic() - t0, 3), type(e).__name__, flush=True)
"""


def test_a_silent_peer_is_reset_at_once_and_dialled_again_once_it_answers(wan, workdir, ca):
    """While the probe gets no answer from a peer, new connections to its services
    are reset at once instead of each waiting timeouts.connect (10 s), so a client
    with a list of addresses (etcd's, Patroni's) moves on; a postgres connection
    (the peer's only address: a walreceiver) is held and dialled the moment the
    link answers; the probe tries a fresh connect every second while the peer is
    silent, so the healed link is used again promptly; a connection open across
    the cut loses nothing."""
    backend_port, local_port = 5433, SERVICE_PORT
    echo = wan.b.popen(["/usr/bin/python3", "-c", ECHO, str(backend_port)])
    client = server = sessions = None
    try:
        server, client = start_pair(wan, workdir, ca, backend_port)  # probe_interval 500ms
        sessions = wan.a.popen(["/usr/bin/python3", "-c", SESSIONS, str(local_port)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def ask(cmd):
            sessions.stdin.write(cmd + "\n")
            sessions.stdin.flush()
            return sessions.stdout.readline().split()

        assert ask("open kept")[0] == "ok"
        lab.partition(wan.a)  # silent: every packet dropped, nothing refused
        t_cut = time.monotonic()
        client.wait_log(r"probe: peer server-1 is down: no answer within 1s", timeout=5)
        detected = time.monotonic() - t_cut
        answer = ask("open during-cut")
        assert answer[0] == "err" and float(answer[1]) < 1.0, answer  # not timeouts.connect
        client.wait_log(r'outbound close .*reason=peer_unreachable detail=not dialled: the probe has had '
                        r'no answer from server-1 for [\d.]+ s \(no answer within 1s\)')
        # A client retrying in a loop gets reset each time but logs one line per 10 s.
        assert all(ask(f"open retry-{i}")[0] == "err" for i in range(20))
        assert len(client.log_lines("not dialled")) == 1, client.log_lines("not dialled")
        # A postgres connection now is held, not reset.
        held = wan.a.popen(["/usr/bin/python3", "-c", SESSIONS, str(LOCAL_PORT)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        held.stdin.write("open held\n")
        held.stdin.flush()
        time.sleep(1)
        assert held.poll() is None
        lab.heal(wan.a)
        t_heal = time.monotonic()
        got = held.stdout.readline().split()
        held_back = time.monotonic() - t_heal
        held.kill()
        held.wait()
        assert got[0] == "ok", got
        client.wait_log(r"probe: peer server-1 is up", timeout=10, count=2)  # again
        back = time.monotonic() - t_heal
        # A fresh connect every second while silent, then the handshake over
        # 20 ms: not the 1, 3, 7 s SYN retries of one 10 s connect.
        assert back <= 1.5, f"probe up {back:.1f}s after the heal"
        assert held_back <= 1.5, f"the held postgres connection answered {held_back:.1f}s after the heal"
        assert ask("open after-heal")[0] == "ok"
        assert ask("echo kept")[0] == "ok"  # open across the cut, nothing lost
        print(f"MEASURED wan: silent peer detected {detected:.1f}s after the cut; a new service connection "
              f"reset in {answer[1]}s ({answer[2]}); probe up {back:.2f}s and a held postgres connection "
              f"answered {held_back:.2f}s after the heal")
    finally:
        if sessions:
            sessions.kill()
            sessions.wait()
        for t in (client, server):
            if t:
                t.stop()
        echo.kill()
        echo.wait()


def test_a_partition_past_the_keepalive_ends_postgres_connections_but_not_services(wan, workdir, ca):
    """`keepalive` (postgres connections, the probe) declares a silent path dead
    within seconds here. Service connections (etcd, Patroni's API) follow
    `service_keepalive`, which by default outlasts a partition as a direct TCP
    connection does: a service connection with a request in flight across the
    cut answers after the heal, on both tunnelds, while the postgres connection
    beside it was closed as peer_timeout. (Through a tunnel that ended them with
    the postgres keepalive, Patroni's etcd client fell back to its own stale
    etcd member after a partition; test_patroni_heal.py.)"""
    backend_port = 5433
    echo = wan.b.popen(["/usr/bin/python3", "-c", ECHO, str(backend_port)])
    client = server = None
    opened = []
    try:
        server, client = start_pair(wan, workdir, ca, backend_port,
                                    extra="keepalive: {idle: 1s, interval: 1s, count: 2, user_timeout: 3s}\n")

        def session(port):
            p = wan.a.popen(["/usr/bin/python3", "-c", SESSIONS, str(port)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            opened.append(p)
            return p

        def send(p, cmd):
            p.stdin.write(cmd + "\n")
            p.stdin.flush()

        svc, pg = session(SERVICE_PORT), session(LOCAL_PORT)
        for p, name in ((svc, "svc"), (pg, "pg")):
            send(p, f"open {name}")
            assert p.stdout.readline().split()[0] == "ok"
        lab.partition(wan.a)
        t_cut = time.monotonic()
        send(svc, "echo svc")  # in flight across the cut
        send(pg, "echo pg")
        client.wait_log(r"outbound close (?!.*service=).*reason=peer_timeout", timeout=15)
        pg_ended = time.monotonic() - t_cut
        server.wait_log(r"inbound close (?!.*service=).*reason=peer_timeout", timeout=15)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - t_cut)))  # past every keepalive bound above
        assert not client.log_lines(r"close .*service=etcd"), client.read_log()[-2000:]
        lab.heal(wan.a)
        cut_for = time.monotonic() - t_cut
        assert pg.stdout.readline().split()[0] == "err"  # ended with the path, not held open
        got = svc.stdout.readline().split()
        assert got[0] == "ok", got  # the same connection, both tunnelds kept it
        send(svc, "echo svc")
        assert svc.stdout.readline().split()[0] == "ok"
        assert not server.log_lines(r"inbound close .*service=etcd"), server.read_log()[-2000:]
        print(f"MEASURED wan: a {cut_for:.1f}s partition ended the postgres connection after {pg_ended:.1f}s "
              f"(keepalive 1s+2x1s, user_timeout 3s); the service connection answered {got[1]}s after "
              f"its request, across the cut")
    finally:
        for p in opened:
            p.kill()
            p.wait()
        for t in (client, server):
            if t:
                t.stop()
        echo.kill()
        echo.wait()
