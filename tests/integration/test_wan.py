"""The lab WAN (wan_lab.py) is what it claims: its round trip measured by ping,
its loss rate by a counted run; and a tunneld pair across it carries a stream
intact through latency and loss."""

import os

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
    backend_port, tls_port, local_port = 5433, 8765, 6432
    echo = wan.b.popen(["/usr/bin/python3", "-c", ECHO, str(backend_port)])
    try:
        s_cert, s_key, _ = ca.issue("server-1", os.path.join(workdir, "s"))
        c_cert, c_key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
        server = lab.Tunneld(workdir, "server", lab.node_config(
            "server-1", ca.cert_path, s_cert, s_key,
            inbound={"listen": f"{wan_lab.B}:{tls_port}", "backend": f"127.0.0.1:{backend_port}",
                     "allow": ["client-1"]}), netns=wan.b.name).start()
        client = lab.Tunneld(workdir, "client", lab.node_config(
            "client-1", ca.cert_path, c_cert, c_key,
            peers=[{"name": "server-1", "connect": f"{wan_lab.B}:{tls_port}",
                    "local": f"127.0.0.1:{local_port}"}]), netns=wan.a.name).start()
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
