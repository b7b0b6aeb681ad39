"""What the guard covers beyond the tunnel port, in namespaces made here: with
route_localnet=1 every plaintext listener drops what did not come over loopback;
an unresolvable peer starts guarded, and a refused start leaves the guard."""

import os
import textwrap

import pytest

import lab
from firewall_lab import can_connect, guard_config, listener

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and nftables")


def route_loopback_through_veth(ns, via):
    """Makes `ns` send 127.0.0.0/8 out of its veth to `via` (its loopback down, so
    no local route for 127/8; route_localnet on): a neighbour of a host whose
    route_localnet=1 reaches that host's 127.0.0.1 listeners this way."""
    for iface in ["all"] + ns.exec(["ls", "/sys/class/net"]).stdout.split():
        ns.exec(["sysctl", "-qw", f"net.ipv4.conf.{iface}.route_localnet=1"])
    ns.exec(["ip", "addr", "flush", "dev", "lo"])
    ns.exec(["ip", "link", "set", "lo", "down"])
    ns.exec(["ip", "route", "add", "127.0.0.0/8", "via", via])


def test_with_route_localnet_every_plaintext_listener_drops_what_did_not_come_over_loopback(
        site, workdir, ca, cleanup):
    """kube-proxy sets route_localnet=1 on every interface (Docker without the
    userland proxy on docker0): then 127.0.0.1 listeners are reachable from the
    neighbours. inbound.local is postgres without TLS; routes, peers[].local and
    peers[].services connect with this node's identity."""
    site.host.exec(["sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1"])
    for iface in site.host.exec(["ls", "/sys/class/net"]).stdout.split():
        site.host.exec(["sysctl", "-qw", f"net.ipv4.conf.{iface}.route_localnet=1"])
    route_loopback_through_veth(site.bad, "10.88.1.1")
    route_loopback_through_veth(site.good, "10.88.2.1")
    # The hole is real here: an unguarded listener on 127.0.0.1 is reached from outside.
    probe = listener(site.host, 17999, host="127.0.0.1")
    cleanup.append(probe.kill)
    assert can_connect(site.bad, "127.0.0.1", 17999), "route_localnet did not open 127.0.0.1 to the neighbour"
    pg = listener(site.host, 5432, host="127.0.0.1")
    cleanup.append(pg.kill)
    svc = listener(site.host, 8008, host="127.0.0.1")
    cleanup.append(svc.kill)
    cert, key, _ = ca.issue("host-1", os.path.join(workdir, "host"))
    ports = {"inbound.local": 6431, "inbound.services.svc.local": 18001, "peers[].local": 16432,
             "peers[].services.svc": 18002, "routes[].local": 6432, "health.listen": 18766}
    text = textwrap.dedent(f"""\
        node: host-1
        tls: {{ca: {ca.cert_path}, cert: {cert}, key: {key}}}
        inbound:
          listen: 0.0.0.0:8765
          backend: 127.0.0.1:5432
          allow: [good-1]
          local: 127.0.0.1:6431
          services:
            svc: {{backend: 127.0.0.1:8008, local: 127.0.0.1:18001}}
        peers:
          - {{name: p, connect: "10.88.9.9:1", local: "127.0.0.1:16432", services: {{svc: 127.0.0.1:18002}}}}
        routes:
          - {{local: 127.0.0.1:6432, to: primary}}
        health: {{listen: 127.0.0.1:18766, probe_interval: 500ms}}
        firewall:
          protect:
            - {{port: 8765, allow: [10.88.2.0/24]}}
        """)
    daemon = lab.Tunneld(workdir, "host", text, netns=site.host.name).start()
    cleanup.append(daemon.stop)
    for what, port in ports.items():
        assert site.host.exec(["ss", "-Htln", f"sport = :{port}"]).stdout.strip(), f"{what} is not listening"
        for ns in (site.bad, site.good):
            assert not can_connect(ns, "127.0.0.1", port, timeout=1), f"{what} ({port}) reached from {ns.name}"
    for port in (5432, 8008):  # the backends, as before
        assert not can_connect(site.bad, "127.0.0.1", port, timeout=1)
    # The one way in: the inbound port, from the allowed peers only; loopback still works.
    assert can_connect(site.good, "10.88.2.1", 8765)
    assert not can_connect(site.bad, "10.88.1.1", 8765, timeout=1)
    assert site.host.exec(["/usr/bin/python3", "-c", "import socket; socket.create_connection(('127.0.0.1', 6431), 2)"],
                          check=False).returncode == 0
    assert lab.http_request("127.0.0.1:18766", "/liveness", netns=site.host.name)[0] == 200


def test_an_unresolvable_peer_starts_guarded_and_a_refused_start_leaves_the_guard(site, workdir, ca, cleanup):
    """A peer name that does not resolve (no DNS in this namespace) is not fatal:
    the daemon starts with the guard applied (the peer's unknown address simply is
    not allowed yet) and retries. A start that fails after the guard (the inbound
    port taken by another process) exits 1 and leaves the guard in place."""
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    cfg = guard_config(workdir, ca, [(5432, ["10.88.2.0/24"])])
    text = open(cfg).read().replace("10.88.9.9:1", "no-such-host.invalid:8765")
    daemon = lab.Tunneld(workdir, "host", text, netns=site.host.name).start()
    cleanup.append(daemon.stop)
    daemon.wait_log(r"firewall: peer address not resolved \(retried every 1m\): no-such-host\.invalid")
    assert site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    assert can_connect(site.good, "10.88.2.1", 5432)
    daemon.stop()
    # Now a start that fails after the guard is applied: inbound.listen is taken.
    taken = listener(site.host, 8765)
    cleanup.append(taken.kill)
    inbound_cfg = guard_config(workdir, ca, [(5432, ["10.88.2.0/24"])],
                               inbound={"listen": "0.0.0.0:8765", "backend": "127.0.0.1:5432", "allow": ["x"]})
    site.host.exec(["nft", "delete", "table", "inet", "tunneld"])
    r = site.host.exec([lab.TUNNELD, "--peer", inbound_cfg], check=False, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "8765" in r.stderr and "in use" in r.stderr, r.stderr
    assert site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    assert not can_connect(site.bad, "10.88.1.1", 5432), "a daemon that refused to start left postgres open"
