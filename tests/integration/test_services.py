"""inbound.services: more local backends on the one TLS port, chosen by ALPN
("tunneld-svc/<name>"), each with its own allow list; peers[].services are the
local listeners that reach them. Patroni's REST API and etcd ride these (see
test_patroni.py); here each behaviour is shown on plain TCP backends."""

import os
import socket
import ssl
import subprocess
import time

import pytest

import lab


class ServicePair:
    """server-1: postgres stand-in `pg`, services patroni (allow: client-1 and
    monitor-1) and etcd-client (whose backend is down). client-1 reaches all three,
    plus a service server-1 does not have ("nope")."""

    def __init__(self, workdir, ca):
        self.ca = ca
        self.pg = lab.Backend("echo")
        self.patroni = lab.Backend("echo")
        self.etcd_down = lab.free_port()  # nothing listens there
        self.tls_port = lab.free_port()
        self.local = {name: lab.free_port() for name in ("postgresql", "patroni", "etcd-client", "nope")}
        self.own = {"postgresql": lab.free_port(), "patroni": lab.free_port()}  # on server-1 itself
        s_cert, s_key, _ = ca.issue("server-1", os.path.join(workdir, "server"))
        c_cert, c_key, _ = ca.issue("client-1", os.path.join(workdir, "client"))
        server = lab.node_config(
            "server-1", ca.cert_path, s_cert, s_key,
            inbound={"listen": f"127.0.0.1:{self.tls_port}", "backend": self.pg.address,
                     "allow": ["client-1"]})
        server = server.replace('  allow: ["client-1"]\n', '  allow: ["client-1"]\n'
                                f'  local: "127.0.0.1:{self.own["postgresql"]}"\n  services:\n'
                                f'    patroni: {{backend: "{self.patroni.address}", allow: [client-1, monitor-1], '
                                f'local: "127.0.0.1:{self.own["patroni"]}"}}\n'
                                f'    etcd-client: "127.0.0.1:{self.etcd_down}"\n')
        self.server = lab.Tunneld(workdir, "server", server).start()
        client = lab.node_config(
            "client-1", ca.cert_path, c_cert, c_key,
            peers=[{"name": "server-1", "connect": f"127.0.0.1:{self.tls_port}",
                    "local": f"127.0.0.1:{self.local['postgresql']}"}])
        pg_local = f'    local: "127.0.0.1:{self.local["postgresql"]}"\n'
        client = client.replace(pg_local, pg_local + "    services: {" + ", ".join(
            f'{n}: "127.0.0.1:{p}"' for n, p in self.local.items() if n != "postgresql") + "}\n")
        self.client = lab.Tunneld(workdir, "client", client).start()

    def roundtrip(self, service, payload):
        with socket.create_connection(("127.0.0.1", self.local[service]), timeout=10) as c:
            c.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = c.recv(4096)
                if not chunk:
                    break
                got += chunk
            return got

    def tls_client(self, identity, alpn, workdir):
        """A TLS client of the server's port with `identity`'s certificate asking
        for `alpn`; returns the echo or the exception."""
        cert, key, _ = self.ca.issue(identity, os.path.join(workdir, identity))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols([alpn])
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=5)
        try:
            with ctx.wrap_socket(raw, server_hostname="server-1") as s:
                s.sendall(b"hello")
                return s.recv(100)
        except (ssl.SSLError, OSError) as e:
            return e
        finally:
            raw.close()

    def stop(self):
        self.client.stop()
        self.server.stop()
        self.pg.close()
        self.patroni.close()


@pytest.fixture
def pair(workdir, ca):
    p = ServicePair(workdir, ca)
    yield p
    p.stop()


def metric(tunneld, name, **labels):
    text = tunneld.http("/metrics")[2]
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name}{want} in /metrics")


def test_each_service_reaches_its_own_backend_through_one_port(pair):
    assert pair.roundtrip("postgresql", b"to postgres") == b"to postgres"
    assert pair.roundtrip("patroni", b"to patroni") == b"to patroni"
    assert pair.pg.accepted == 1 and pair.patroni.accepted == 1
    # The service names the connection in both logs, /status and /metrics.
    pair.server.wait_log(rf"inbound open peer=client-1 .*local={pair.patroni.address} service=patroni ")
    pair.client.wait_log(rf"outbound open peer=server-1 .*local=127\.0\.0\.1:\d+ service=patroni ")
    pair.server.wait_log(r"inbound: service patroni \(ALPN tunneld-svc/patroni\) -> backend .* "
                         r"\(allow: client-1, monitor-1\)")
    lab.wait_for(lambda: pair.server.status()["inbound"]["services"]["patroni"]["peers"]
                 .get("client-1", {}).get("opened") == 1, what="status counts the patroni connection")
    status = pair.server.status()["inbound"]
    assert status["services"]["patroni"]["alpn"] == "tunneld-svc/patroni"
    assert status["services"]["patroni"]["allow"] == ["client-1", "monitor-1"]
    assert status["peers"]["client-1"]["opened"] == 1  # postgres' own count is apart
    assert metric(pair.server, "tunneld_connections_total", peer="client-1", direction="inbound",
                  service="patroni") == 1
    assert metric(pair.client, "tunneld_connections_total", peer="server-1", direction="outbound",
                  service="postgresql") == 1


def test_own_local_listeners_reach_this_nodes_backends_without_tls(pair):
    """inbound.local and inbound.services.X.local: the address other hosts use for
    this node works on this host too (one connect_address for every host)."""
    for service, backend in (("postgresql", pair.pg), ("patroni", pair.patroni)):
        with socket.create_connection(("127.0.0.1", pair.own[service]), timeout=10) as c:
            c.sendall(b"self " + service.encode())
            assert c.recv(100) == b"self " + service.encode()
        assert backend.accepted == 1
    pair.server.wait_log(rf"local: 127\.0\.0\.1:{pair.own['patroni']} -> this node's patroni at "
                         rf"{pair.patroni.address} \(no TLS\)")
    pair.server.wait_log(r"outbound close peer=server-1 remote=\S+ local=\S+ service=patroni .*reason=finished")


def test_unknown_service_gets_an_alert_and_reaches_nothing(pair, workdir):
    with socket.create_connection(("127.0.0.1", pair.local["nope"]), timeout=10) as c:
        c.sendall(b"x")
        assert lab.assert_closed_by_peer(c) is None
    pair.server.wait_log(r"inbound handshake failed peer=- remote=\S+ reason=unknown_service "
                         r"detail=\"service 'nope' is not served here \(inbound.services: etcd-client, patroni\)\"")
    pair.client.wait_log(r"outbound handshake failed peer=server-1 .*service=nope reason=no_alpn "
                         r"detail=\"server-1 does not serve 'nope'")
    # An outsider's client sees the TLS alert itself, before any certificate is asked for.
    cert, key, _ = pair.ca.issue("client-1", os.path.join(workdir, "c"))
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{pair.tls_port}", "-cert", cert,
                        "-key", key, "-alpn", "tunneld-svc/nope"], input="", capture_output=True, text=True,
                       timeout=15)
    assert "no application protocol" in r.stdout + r.stderr
    # A name that is not even a service name is logged without echoing it.
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{pair.tls_port}", "-cert", cert,
                        "-key", key, "-alpn", "tunneld-svc/a\tb"], input="", capture_output=True, text=True,
                       timeout=15)
    pair.server.wait_log(r"reason=unknown_service detail=\"service '\(not a service name\)'")
    time.sleep(0.2)
    assert pair.pg.accepted == 0 and pair.patroni.accepted == 0
    assert metric(pair.server, "tunneld_handshakes_total", direction="inbound", reason="unknown_service") >= 3


def test_a_service_allow_list_admits_a_node_to_that_service_only(pair, workdir):
    """monitor-1 may call the REST API (patroni's allow) but is not in inbound.allow:
    postgres, and services without their own allow, refuse it in the handshake."""
    assert pair.tls_client("monitor-1", "tunneld-svc/patroni", workdir) == b"hello"
    assert pair.patroni.accepted == 1
    refused = pair.tls_client("monitor-1", "postgresql", workdir)
    assert not isinstance(refused, bytes) or refused == b"", refused
    pair.server.wait_log(r"inbound handshake failed peer=- .*reason=identity_not_allowed "
                         r"detail=\"dns:monitor-1 \(not allowed to use postgresql\)\"")
    refused = pair.tls_client("monitor-1", "tunneld-svc/etcd-client", workdir)
    assert not isinstance(refused, bytes) or refused == b"", refused
    pair.server.wait_log(r"reason=identity_not_allowed "
                         r"detail=\"dns:monitor-1 \(not allowed to use service etcd-client\)\"")
    assert pair.pg.accepted == 0


def test_probe_reports_each_service_backend(pair):
    """The peer's pong carries its services' backend state: up for patroni, down
    (with why) for etcd-client, and 'not served' for nope."""
    def services():
        return pair.client.status()["peers"][0]["services"]
    lab.wait_for(lambda: services()["patroni"]["backend_reachable"] is True, timeout=10,
                 what="patroni's backend reported up by the probe")
    s = services()
    assert s["etcd-client"]["backend_reachable"] is False
    assert f"127.0.0.1:{pair.etcd_down}" in s["etcd-client"]["error"]
    assert s["nope"]["backend_reachable"] is None and "not served there" in s["nope"]["error"]
    assert metric(pair.client, "tunneld_peer_service_up", peer="server-1", service="patroni") == 1
    assert metric(pair.client, "tunneld_peer_service_up", peer="server-1", service="etcd-client") == 0
    assert metric(pair.server, "tunneld_service_backend_up", service="etcd-client") == 0
    pair.server.wait_log(r"health: service etcd-client backend does not accept connections: 127\.0\.0\.1:")
    # The backend comes up: the probe says so within a few intervals.
    up = socket.socket()
    up.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    up.bind(("127.0.0.1", pair.etcd_down))
    up.listen(8)
    try:
        lab.wait_for(lambda: services()["etcd-client"]["backend_reachable"] is True, timeout=10,
                     what="etcd-client's backend reported up")
        pair.server.wait_log(r"health: service etcd-client backend accepts connections")
    finally:
        up.close()
