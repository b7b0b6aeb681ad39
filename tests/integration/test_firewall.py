"""The nftables guard, in network namespaces made here (never the host's ruleset):
Docker's DNAT bypass reproduced and closed, allowed and refused sources on the
tunnel port (IPv4 and IPv6), atomic updates under churn, on_exit, privileges."""


import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

import lab
from firewall_lab import can_connect, guard_config, guard_daemon, listener, until_stdin_closes

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and nftables")


def test_docker_dnat_bypass_is_reproduced_and_then_closed(site, workdir, ca):
    h = site.host
    container = lab.Netns("container")
    try:
        # Docker's bridge and a container listening on 5432.
        h.exec(["ip", "link", "add", "br-td", "type", "bridge"])
        h.exec(["ip", "addr", "add", "172.30.0.1/24", "dev", "br-td"])
        h.exec(["ip", "link", "set", "br-td", "up"])
        a, _ = lab.veth(h, "172.30.0.254", container, "172.30.0.2")
        h.exec(["ip", "addr", "flush", "dev", a])
        h.exec(["ip", "link", "set", a, "master", "br-td"])
        container.exec(["ip", "route", "add", "default", "via", "172.30.0.1"])
        pg = listener(container, 5432)
        # Docker's rules, as `docker run -p 5432:5432` installs them (iptables-nft),
        # plus a ufw-style INPUT drop that operators believe closes the port.
        for rule in (["-t", "nat", "-N", "DOCKER"],
                     ["-t", "nat", "-A", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "DOCKER"],
                     ["-t", "nat", "-A", "DOCKER", "!", "-i", "br-td", "-p", "tcp", "--dport", "5432",
                      "-j", "DNAT", "--to-destination", "172.30.0.2:5432"],
                     ["-t", "nat", "-A", "POSTROUTING", "-s", "172.30.0.0/24", "!", "-o", "br-td", "-j", "MASQUERADE"],
                     ["-N", "DOCKER"],
                     ["-A", "FORWARD", "-o", "br-td", "-j", "DOCKER"],
                     ["-A", "DOCKER", "-d", "172.30.0.2/32", "!", "-i", "br-td", "-o", "br-td", "-p", "tcp",
                      "--dport", "5432", "-j", "ACCEPT"],
                     ["-A", "INPUT", "-p", "tcp", "--dport", "5432", "-j", "DROP"]):
            h.exec(["iptables"] + rule)
        # The bypass: INPUT drops 5432, yet both clients reach the container.
        assert can_connect(site.bad, "10.88.1.1", 5432), "Docker's DNAT bypass did not reproduce"
        assert can_connect(site.good, "10.88.2.1", 5432)

        cfg = guard_config(workdir, ca, [(5432, ["10.88.2.0/24"])])
        r = lab.tunneld_cli("firewall", "apply", "--peer", cfg, netns=h)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not can_connect(site.bad, "10.88.1.1", 5432), "the guard did not close the bypass"
        assert can_connect(site.good, "10.88.2.1", 5432), "the guard blocked an allowed source"
        shown = lab.tunneld_cli("firewall", "show", "--peer", cfg, netns=h).stdout
        assert "table inet tunneld: applied" in shown
        drops = int(shown.split("drops to 5432: ")[1].split()[0])
        assert drops >= 1, shown
        pg.kill()
    finally:
        container.delete()


def test_tunnel_port_admits_allowed_peer_over_mtls_and_drops_others_v4_and_v6(site, workdir, ca, cleanup):
    backend_port = 15432
    srv = listener(site.host, backend_port, "127.0.0.1")
    cleanup.append(srv.kill)
    daemon = guard_daemon(site, workdir, ca, [(8765, ["10.88.2.0/24", "fd88:2::/64"])],
                          inbound={"listen": ["0.0.0.0:8765", "[::]:8765"],
                                   "backend": f"127.0.0.1:{backend_port}", "allow": ["client-1"]})
    daemon.start()
    cleanup.append(daemon.stop)
    daemon.wait_log(r"firewall: table inet tunneld applied")
    client_cert, client_key, _ = ca.issue("client-1", os.path.join(workdir, "client"))
    for addr in ("10.88.2.1", "fd88:2::1"):
        r = site.good.exec(["openssl", "s_client", "-connect", f"[{addr}]:8765" if ":" in addr else f"{addr}:8765",
                            "-cert", client_cert, "-key", client_key, "-CAfile", ca.cert_path, "-alpn", "postgresql",
                            "-verify_return_error", "-brief"], input="", check=False, timeout=20)
        assert "Verification: OK" in r.stderr or "CONNECTION ESTABLISHED" in r.stderr, r.stderr
    for addr in ("10.88.1.1", "fd88:1::1"):
        assert not can_connect(site.bad, addr, 8765)
    shown = lab.tunneld_cli("firewall", "show", "--peer", daemon.config_path, netns=site.host).stdout
    assert int(shown.split("drops to 8765: ")[1].split()[0]) >= 2, shown
    assert not daemon.log_lines(r"inbound handshake failed .*remote=10\.88\.1"), "a dropped SYN reached tunneld"
    srv.kill()  # the stand-in backend holds its connections open; closing them lets the daemon drain at once


def test_allow_set_swaps_are_atomic_under_churn(site, workdir, ca, cleanup):
    """Peer names re-resolved (hosts file inside the namespace) and reloaded 30
    times while an outsider retries and an allowed client holds a connection."""
    hosts_dir = f"/etc/netns/{site.host.name}"
    os.makedirs(hosts_dir, exist_ok=True)
    cleanup.append(lambda: shutil.rmtree(hosts_dir, ignore_errors=True))
    hosts = os.path.join(hosts_dir, "hosts")

    def write_hosts(b_addr):
        # In place: `ip netns exec` bind-mounts this inode over /etc/hosts.
        with open(hosts, "w") as f:
            f.write(f"127.0.0.1 localhost\n10.88.2.2 peer-a.test\n{b_addr} peer-b.test\n")

    write_hosts("10.88.3.2")
    backend_port = 15432
    echo = site.host.popen(["/usr/bin/python3", "-c",
                            "import socket,threading\n"
                            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                            f"s.bind(('127.0.0.1', {backend_port})); s.listen(8); print('up', flush=True)\n"
                            "def serve(c):\n while (d:=c.recv(65536)): c.sendall(d)\n c.close()\n"
                            "while True:\n c,_=s.accept(); threading.Thread(target=serve,args=(c,),daemon=True).start()\n"],
                           stdout=subprocess.PIPE, text=True)
    assert echo.stdout.readline().strip() == "up"
    cleanup.append(echo.kill)
    ca_cert = ca.cert_path
    host_cert, host_key, _ = ca.issue("host-1", os.path.join(workdir, "host"))
    text = lab.node_config("host-1", ca_cert, host_cert, host_key,
                           inbound={"listen": "0.0.0.0:8765", "backend": f"127.0.0.1:{backend_port}",
                                    "allow": ["client-1"]},
                           peers=[{"name": "client-1", "connect": "peer-a.test:8765", "local": "127.0.0.1:16432"},
                                  {"name": "other-1", "connect": "peer-b.test:8765", "local": "127.0.0.1:16433"}],
                           extra="firewall:\n  resolve_interval: 1h\n")
    daemon = lab.Tunneld(workdir, "host", text, netns=site.host.name).start()
    cleanup.append(daemon.stop)
    # The allowed client: a tunneld in the good namespace, holding one relayed connection.
    c_cert, c_key, _ = ca.issue("client-1", os.path.join(workdir, "client"))
    client = lab.Tunneld(workdir, "client", lab.node_config(
        "client-1", ca_cert, c_cert, c_key,
        peers=[{"name": "host-1", "connect": "10.88.2.1:8765", "local": "127.0.0.1:6432"}]),
        netns=site.good.name).start()
    cleanup.append(client.stop)
    holder = until_stdin_closes(site.good, "c=socket.create_connection(('127.0.0.1',6432),timeout=5); n=0",
                                "c.sendall(b'ping'); assert c.recv(4)==b'ping'; n+=1; time.sleep(0.02)",
                                "'intact', n")
    cleanup.append(holder.kill)
    # The outsider: a fresh non-blocking connect every 5 ms for as long as the churn
    # lasts, each given 300 ms to complete; it reports attempts and successes.
    outsider = until_stdin_closes(site.bad, "pending={}; attempts=0; through=0",
                                  "s=socket.socket(); s.setblocking(False); s.connect_ex(('10.88.1.1',8765))\n"
                                  "pending[s]=time.monotonic(); attempts+=1\n"
                                  "_,w,_=select.select([],list(pending),[],0.005)\n"
                                  "for x in w:\n"
                                  " if x.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)==0: through+=1\n"
                                  " x.close(); del pending[x]\n"
                                  "for x,t in list(pending.items()):\n"
                                  " if time.monotonic()-t>0.3: x.close(); del pending[x]",
                                  "attempts, through")
    cleanup.append(outsider.kill)
    for i in range(30):
        write_hosts(f"10.88.{4 - i % 2}.2")  # alternates, starting with a change
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(r"firewall \(SIGHUP\): peer addresses are now", count=i + 1)
        time.sleep(0.05)
    outsider.stdin.close()
    attempts, through = map(int, outsider.stdout.readline().split())
    assert attempts >= 100, f"the outsider made only {attempts} attempts"
    assert through == 0, f"the outsider got through {through} time(s) out of {attempts} during the swaps"
    holder.stdin.close()
    word, pings = (holder.stdout.readline().split() + ["", ""])[:2]
    assert word == "intact", "the allowed connection was cut"
    assert int(pings) >= 50, f"the allowed connection made only {pings} round trips"
    holder.wait(timeout=30)
    assert not daemon.log_lines(r"firewall .* failed")
    print(f"churn: 30 swaps, {attempts} outsider attempts, 0 through, {pings} round trips on the held connection")
    # The outsider's detector works: with the daemon stopped and the guard removed,
    # a listener on the same port is reached at once.
    daemon.stop()
    assert lab.tunneld_cli("firewall", "remove", "--peer", daemon.config_path, netns=site.host).returncode == 0
    stand_in = listener(site.host, 8765)
    cleanup.append(stand_in.kill)
    assert can_connect(site.bad, "10.88.1.1", 8765)


def test_guard_stays_while_daemon_is_down_and_is_replaced_on_restart(site, workdir, ca, cleanup):
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    daemon = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])])
    daemon.start()
    daemon.stop()
    assert daemon.log_lines(r"firewall: table inet tunneld kept \(on_exit: keep\)")
    assert site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    assert not can_connect(site.bad, "10.88.1.1", 5432), "guard gone while the daemon is down"
    # Restart: the table is replaced in one transaction; watch that it is never missing.
    missing = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode != 0:
                missing.append(time.monotonic())

    t = threading.Thread(target=watch)
    t.start()
    daemon.start()
    daemon.wait_log(r"firewall: table inet tunneld applied", count=2)
    stop.set()
    t.join()
    assert missing == []
    assert can_connect(site.good, "10.88.2.1", 5432) and not can_connect(site.bad, "10.88.1.1", 5432)
    daemon.stop()


def test_on_exit_remove_deletes_the_table(site, workdir, ca):
    daemon = guard_daemon(site, workdir, ca, [(5432, [])], extra="  on_exit: remove\n")
    daemon.start()
    assert site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    daemon.stop()
    assert daemon.log_lines(r"firewall: table inet tunneld removed \(on_exit: remove\)")
    assert site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode != 0


def test_without_cap_net_admin_the_daemon_refuses_to_start(site, workdir, ca):
    cfg = guard_config(workdir, ca, [(5432, [])])
    for path in (os.path.join(workdir, "host", "host-1.key"),):
        os.chown(path, 65534, 65534)
    os.chmod(workdir, 0o755)
    r = site.host.exec(["runuser", "-u", "nobody", "--", lab.TUNNELD, "--peer", cfg], check=False, timeout=30)
    assert r.returncode == 1
    assert "needs CAP_NET_ADMIN" in r.stderr, r.stderr
    assert site.host.exec(["nft", "list", "tables"]).stdout.strip() == ""  # nothing half-applied
    # `tunneld check` says the same before anyone tries to start it.
    r = site.host.exec(["runuser", "-u", "nobody", "--", lab.TUNNELD, "check", "--peer", cfg], check=False, timeout=30)
    assert r.returncode == 1
    assert "FAIL  firewall: cannot query nf_tables: Operation not permitted (changing nftables needs CAP_NET_ADMIN" \
        in r.stdout, r.stdout
    r = lab.tunneld_cli("check", "--peer", cfg, netns=site.host)
    assert "ok    firewall: port 5432 open to loopback only" in r.stdout, r.stdout
    assert "ok    firewall: nf_tables usable; table inet tunneld not applied yet" in r.stdout, r.stdout
    # A peer name that does not resolve (this namespace has no DNS route) is named, not fatal.
    with open(cfg) as f:
        text = f.read().replace("10.88.9.9:1", "no-such-host.invalid:8765")
    with open(cfg, "w") as f:
        f.write(text)
    r = lab.tunneld_cli("check", "--peer", cfg, netns=site.host)
    assert "warn  firewall: peer address not resolved (its packets would be dropped): no-such-host.invalid: " \
        in r.stdout, r.stdout


def expired_crl(ca, path):
    """A CRL from `ca` whose nextUpdate has passed (what a forgotten cron job leaves)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    import datetime
    now = datetime.datetime.now(datetime.timezone.utc)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(ca.cert.subject)
           .last_update(now - datetime.timedelta(days=10)).next_update(now - datetime.timedelta(days=1))
           .sign(ca.key, hashes.SHA256()))
    with open(path, "wb") as f:
        f.write(crl.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize("bad", ["key_0644", "expired_cert", "expired_crl"])
def test_bad_tls_files_at_boot_leave_the_guard_up(site, workdir, ca, cleanup, bad):
    """A reboot with a bad TLS file must not open postgres: the guard is applied
    before the TLS files are read, and stays when the daemon refuses to start."""
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    cfg = guard_config(workdir, ca, [(5432, ["10.88.2.0/24"])])
    key = os.path.join(workdir, "host", "host-1.key")
    if bad == "key_0644":
        os.chmod(key, 0o644)
    elif bad == "expired_cert":
        import datetime
        past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
        ca.issue("host-1", os.path.join(workdir, "host"), not_before=past, not_after=past + datetime.timedelta(days=1))
    else:
        crl = os.path.join(workdir, "expired.crl")
        expired_crl(ca, crl)
        text = open(cfg).read().replace(f"  key: {key}\n", f"  key: {key}\n  crl: {crl}\n")
        open(cfg, "w").write(text)
    assert can_connect(site.bad, "10.88.1.1", 5432), "the test's outsider cannot even reach an unguarded port"
    r = site.host.exec([lab.TUNNELD, "--peer", cfg], check=False, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "stays in place" in r.stderr and "table inet tunneld" in r.stderr, r.stderr
    assert site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    assert not can_connect(site.bad, "10.88.1.1", 5432), "a daemon that refused to start left postgres open"
    assert can_connect(site.good, "10.88.2.1", 5432)


def test_firewall_apply_alone_guards_a_node_that_never_starts(site, workdir, ca, cleanup):
    """What the unit's ExecStartPre=+tunneld firewall apply does before the daemon."""
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    cfg = guard_config(workdir, ca, [(5432, [])])
    os.chmod(os.path.join(workdir, "host", "host-1.key"), 0o644)  # the daemon would refuse this
    r = lab.tunneld_cli("firewall", "apply", "--peer", cfg, netns=site.host)
    assert r.returncode == 0, r.stderr
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    # Without a firewall block, apply is a no-op that succeeds (the unit runs it for every node).
    text = open(cfg).read().split("firewall:")[0]
    open(cfg, "w").write(text)
    r = lab.tunneld_cli("firewall", "apply", "--peer", cfg, netns=site.host)
    assert r.returncode == 0 and "nothing applied" in r.stdout, r.stdout + r.stderr


def test_missing_cap_net_admin_in_the_bounding_set_is_named_as_such(site, workdir, ca):
    """A container VPS that does not grant CAP_NET_ADMIN: the advice is not the
    unit's AmbientCapabilities= (which it has) but the container's bounding set."""
    cfg = guard_config(workdir, ca, [(5432, [])])
    r = site.host.exec(["setpriv", "--bounding-set", "-net_admin", lab.TUNNELD, "--peer", cfg], check=False, timeout=30)
    assert r.returncode == 1
    assert "bounding set (CapBnd in /proc/self/status) does not contain it" in r.stderr, r.stderr
    assert "AmbientCapabilities" not in r.stderr
