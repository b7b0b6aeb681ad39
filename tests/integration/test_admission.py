"""Admission (issue 23, items 4 and 6): each local plaintext listener has its own
limit and never takes the room of authenticated inbound replication; one
identity holds at most 2 probe connections; a flood of both from one source
leaves an allowed peer's replication connecting and relaying."""

import re
import socket
import ssl

import lab
from lab import echo_once


def with_inbound_local(pair, local_port, service_port=None, backend=None):
    """Adds inbound.local (and a service `svc` with its local listener) to the
    server of a Pair that has not started."""
    text = open(pair.server.config_path).read()
    extra = f"  local: 127.0.0.1:{local_port}\n"
    if service_port:
        extra += f"  services:\n    svc: {{backend: \"{backend}\", local: \"127.0.0.1:{service_port}\"}}\n"
    text = re.sub(r"(  allow: \[[^\n]*\]\n)", lambda m: m.group(1) + extra, text, count=1)
    with open(pair.server.config_path, "w") as f:
        f.write(text)


def closed_soon(s, timeout=3):
    """True when the other end closed `s` (EOF or reset) within `timeout`."""
    s.settimeout(timeout)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except (socket.timeout, ssl.SSLError, OSError):
        return False


def test_local_clients_have_their_own_limit_and_never_take_replications_room(workdir, cleanup):
    """Reproduced on the old main: a local process holding 4 sockets on a local
    listener (max_connections: 4) made the next inbound replication fail with
    'refused ... limits.max_connections=4 reached'."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False,
                    extra_server="limits: {max_connections: 2, max_local_connections: 3}\n")
    cleanup.append(pair.stop)
    local = lab.free_port()
    with_inbound_local(pair, local)
    pair.server.start()
    pair.client.start()
    held = [socket.create_connection(("127.0.0.1", local), timeout=5) for _ in range(3)]
    cleanup.extend(s.close for s in held)
    for s in held:
        assert echo_once(s, b"local") == b"local"
    extra = socket.create_connection(("127.0.0.1", local), timeout=5)
    assert closed_soon(extra), "a fourth local client was let in past max_local_connections: 3"
    extra.close()
    pair.server.wait_log(r"reason=limit detail=\"?limits\.max_local_connections=3 reached on 127\.0\.0\.1:%d" % local)
    # Both max_connections places are still there for the authenticated peer.
    peers = [pair.connect() for _ in range(2)]
    cleanup.extend(c.close for c in peers)
    for i, c in enumerate(peers):
        assert echo_once(c, b"replication %d" % i) == b"replication %d" % i
    assert not pair.server.log_lines(r"limits\.max_connections=2 reached")


def probe_client(pair):
    """A TLS client with client-1's certificate asking for the probe ALPN."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pair.client_cert[0], pair.client_cert[1])
    ctx.load_verify_locations(pair.ca_path)
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["tunneld-probe"])
    raw = socket.create_connection(("127.0.0.1", pair.tls_port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="server-1")


def test_a_flood_of_local_listeners_and_probes_from_one_source_leaves_replication_working(workdir, cleanup):
    """47 probe connections from one allowed identity exhausted the old daemon's
    fds; local clients shared max_connections with the peers. Now one identity
    holds at most 2 probes, each local listener has its own places, and the
    peer's replication connects and relays through the flood."""
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address, start=False,
                    extra_server="limits: {max_connections: 4, max_local_connections: 8}\n")
    cleanup.append(pair.stop)
    local, svc = lab.free_port(), lab.free_port()
    with_inbound_local(pair, local, svc, backend.address)
    pair.server.start()
    pair.client.start()
    fds_before = pair.server.fd_count()
    flood = []
    cleanup.append(lambda: [s.close() for s in flood])
    for port in (local, svc):
        for _ in range(40):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    probes = []
    cleanup.append(lambda: [s.close() for s in probes])
    for _ in range(20):
        try:
            probes.append(probe_client(pair))
        except (ssl.SSLError, OSError):
            pass
    # Replication through the flood: connects and relays.
    with pair.connect() as c:
        assert echo_once(c, b"replication" * 1000) == b"replication" * 1000
    # At most 2 probes from client-1 (its own tunneld holds one) stay open.
    probes_open = sum(not closed_soon(p, timeout=1) for p in probes)
    assert probes_open <= 1, probes_open
    pair.server.wait_log(r"inbound: refused \d+ probe connection\(s\) from client-1: 2 already open")
    # Each local listener kept 8; the rest were closed at once.
    open_local = sum(not closed_soon(s, timeout=0.2) for s in flood)
    assert open_local <= 16, open_local
    assert pair.server.fd_count() < fds_before + 2 * (16 + 2) + 10
    assert pair.client.http("/readiness")[0] == 200
