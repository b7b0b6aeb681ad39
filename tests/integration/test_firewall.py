"""The nftables guard, in network namespaces made here (never the host's ruleset):
Docker's DNAT bypass reproduced and closed, allowed and refused sources on the
tunnel port (IPv4 and IPv6), atomic updates under churn, on_exit, privileges."""

import os
import re
import shutil
import signal
import socket
import subprocess
import textwrap
import threading
import time

import pytest

import lab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and nftables")


class Site:
    """A "host" namespace joined to two client namespaces: `good` (10.88.2.2,
    fd88:2::2) and `bad` (10.88.1.2, fd88:1::2)."""

    def __init__(self):
        self.host = lab.Netns("host")
        self.good = lab.Netns("good")
        self.bad = lab.Netns("bad")
        for ns, net in ((self.bad, 1), (self.good, 2)):
            a, b = lab.veth(self.host, f"10.88.{net}.1", ns, f"10.88.{net}.2")
            self.host.exec(["ip", "addr", "add", f"fd88:{net}::1/64", "dev", a, "nodad"])
            ns.exec(["ip", "addr", "add", f"fd88:{net}::2/64", "dev", b, "nodad"])
            ns.exec(["ip", "route", "add", "default", "via", f"10.88.{net}.1"])
            ns.exec(["ip", "-6", "route", "add", "default", "via", f"fd88:{net}::1"])
        self.host.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def delete(self):
        for ns in (self.bad, self.good, self.host):
            ns.delete()


def can_connect(ns, host, port, timeout=1.5):
    """TCP connect from inside `ns` (a subprocess, so the socket lives in that namespace)."""
    code = ("import socket,sys\n"
            f"s=socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)\n"
            f"s.settimeout({timeout})\n"
            f"try:\n s.connect(('{host}', {port})); print('connected')\n"
            "except Exception as e: print(type(e).__name__)\n")
    return ns.exec(["/usr/bin/python3", "-c", code], check=False).stdout.strip() == "connected"


def listener(ns, port, host="0.0.0.0"):
    """A TCP server inside `ns` that accepts and holds connections (a stand-in for postgres)."""
    code = ("import socket,time\n"
            f"s=socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{host}', {port})); s.listen(64); print('up', flush=True)\nconns=[]\n"
            "while True:\n c,_=s.accept(); conns.append(c)\n")
    p = ns.popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    return p


def until_stdin_closes(ns, setup, body, report):
    """A Python loop inside `ns`: runs `setup`, prints "up", repeats `body` until the
    test closes its stdin, then prints `report` (an expression). Returns the Popen."""
    code = (f"import os,select,socket,time\n{setup}\nos.set_blocking(0, False)\nprint('up', flush=True)\n"
            "while True:\n try:\n  if os.read(0, 1) == b'': break\n except BlockingIOError: pass\n"
            + textwrap.indent(body, " ") + f"\nprint({report}, flush=True)\n")
    p = ns.popen(["/usr/bin/python3", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    return p


def guard_daemon(site, workdir, ca, protect, **kwargs):
    """A tunneld (not started) in the host namespace, guarding `protect`; its
    config is the file guard_config() writes."""
    cfg = guard_config(workdir, ca, protect, **kwargs)
    return lab.Tunneld(workdir, "host", open(cfg).read(), netns=site.host.name)


@pytest.fixture
def site():
    s = Site()
    yield s
    s.delete()


def guard_config(workdir, ca, protect, extra="", inbound=None, peers=()):
    cert, key, _ = ca.issue("host-1", os.path.join(workdir, "host"))
    text = lab.node_config("host-1", ca.cert_path, cert, key, inbound=inbound, peers=peers or
                           ([] if inbound else [{"name": "p", "connect": "10.88.9.9:1", "local": "127.0.0.1:16432"}]))
    text += "firewall:\n  protect:\n"
    for port, allow in protect:
        text += f"    - port: {port}\n      allow: {lab.yaml_list(allow)}\n"
    path = os.path.join(workdir, "host.yaml")
    with open(path, "w") as f:
        f.write(text + extra)
    return path


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


def test_a_table_changed_or_deleted_from_outside_is_put_back_at_once(site, workdir, ca, cleanup):
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    daemon = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])])
    daemon.start()
    cleanup.append(daemon.stop)
    # Someone lets themselves in by hand: the element goes at once.
    site.host.exec(["nft", "add", "element", "inet", "tunneld", "allow_v4_5432", "{ 10.88.1.2 }"])
    daemon.wait_log(r"firewall: table inet tunneld was changed by nft \(pid \d+\); put back .*\(1 time", timeout=1)
    assert "10.88.1.2" not in site.host.exec(["nft", "list", "set", "inet", "tunneld", "allow_v4_5432"]).stdout
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    # What a reload of nftables.service does.
    site.host.exec(["nft", "flush", "ruleset"])
    daemon.wait_log(r"firewall: table inet tunneld was changed by nft \(pid \d+\); put back .*\(2 time", timeout=1)
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    assert can_connect(site.good, "10.88.2.1", 5432)
    # Another table, and our own SIGHUP refresh, are not "changes" to repair.
    site.host.exec(["nft", "add", "table", "inet", "other"])
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"reload \(SIGHUP\)", count=1)
    # A sentinel change by hand: events are handled in order, so when its repair
    # is logged, anything the two above had set off would have been logged first.
    site.host.exec(["nft", "add", "element", "inet", "tunneld", "allow_v4_5432", "{ 10.88.1.3 }"])
    daemon.wait_log(r"was changed by nft \(pid \d+\); put back .*\(3 time", timeout=2)
    assert len(daemon.log_lines(r"was changed by")) == 3


def test_two_daemons_sharing_one_table_stop_fighting_and_say_why(site, workdir, ca, cleanup):
    first = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])]).start()
    cleanup.append(first.stop)
    # A second instance, same table, a different allow list: each start/repair undoes the other.
    text = open(first.config_path).read().replace("127.0.0.1:16432", "127.0.0.1:16442").replace("10.88.2.0/24", "10.88.1.0/24")
    text = text.replace(first.health_address, f"127.0.0.1:{lab.free_port()}")
    second = lab.Tunneld(workdir, "host2", text, netns=site.host.name).start()
    cleanup.append(second.stop)
    rx = r"keeps being changed by tunneld \(pid \d+\) \(5 times in 10 s\); is another tunneld using the same " \
         r"firewall.table\? Repairs paused for 3s"
    lab.wait_for(lambda: first.log_lines(rx) or second.log_lines(rx), timeout=10, what="the fight to be noticed")
    # The fight is over: the pause ends (3 s) with the other daemon's table in
    # place, which is a guard too, so nobody undoes it and nothing restarts.
    both = (first, second)
    tunneld_repairs = lambda: sum(len(d.log_lines(r"was changed by tunneld")) for d in both)
    lab.wait_for(lambda: all(d.log_lines(r"repairs of table inet tunneld resumed") or not d.log_lines(rx) for d in both),
                 timeout=6, what="the pause to end")
    baseline = tunneld_repairs()
    ended = time.monotonic()
    lab.wait_for(lambda: time.monotonic() - ended > 4 or tunneld_repairs() != baseline, timeout=6)
    assert tunneld_repairs() == baseline, "the two daemons are still undoing each other"
    # A pause never leaves the host unguarded: a flush now is put back by one of them.
    site.host.exec(["nft", "flush", "ruleset"])
    lab.wait_for(lambda: site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0,
                 timeout=5, what="the table back after a flush")


def test_six_flushes_in_ten_seconds_leave_no_guard_only_until_the_pause_ends(site, workdir, ca, cleanup):
    """Config management restarting nftables.service in a loop (six `nft flush
    ruleset` 0.4 s apart). The old keeper paused for a minute after five repairs,
    nothing re-checked, and the node stayed unguarded while /readiness said 200,
    /status said applied and STATUS= said "firewall applied"."""
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    daemon = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])],
                          inbound={"listen": "0.0.0.0:8765", "backend": "127.0.0.1:5432", "allow": ["x"]})
    daemon.start()
    cleanup.append(daemon.stop)
    assert daemon.http("/readiness")[0] == 200
    table_present = lambda: site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    for i in range(6):
        if i:
            time.sleep(0.4)  # the pace of the outside loop, not a wait for tunneld
        site.host.exec(["nft", "flush", "ruleset"])
    last_flush = time.monotonic()
    daemon.wait_log(r"keeps being changed by nft \(pid \d+\) \(5 times in 10 s\).*Repairs paused for 3s", timeout=3)
    # While the table is missing every signal says so.
    lab.wait_for(lambda: daemon.http("/readiness")[0] == 503, timeout=2.5, what="/readiness 503 while the table is missing")
    assert not table_present()
    status = daemon.status()["firewall"]
    assert status["applied"] is False and "is missing" in status["error"], status
    assert status["missing"] >= 1
    metrics = daemon.http("/metrics")[2]
    assert re.search(r"^tunneld_firewall_applied\{table=\"tunneld\"\} 0$", metrics, re.M), metrics
    assert re.search(r"^tunneld_firewall_missing_total [1-9]", metrics, re.M), metrics
    lab.wait_for(lambda: "firewall NOT applied" in daemon.poll_notifications(), timeout=3, what="STATUS= says so")
    assert daemon.log_lines(r"warning firewall: table inet tunneld is missing .*nothing is guarded meanwhile")
    # Back within a few seconds of the last flush, and every signal with it.
    lab.wait_for(table_present, timeout=5, what="the table back after the pause")
    back_after = time.monotonic() - last_flush
    assert back_after < 5, back_after
    daemon.wait_log(r"was found missing by the end of the pause; put back")
    lab.wait_for(lambda: daemon.http("/readiness")[0] == 200, timeout=5, what="/readiness 200 again")
    assert daemon.status()["firewall"]["applied"] is True
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    assert can_connect(site.good, "10.88.2.1", 5432)


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


def test_own_transactions_are_recognised_inside_a_pid_namespace(site, workdir, ca, cleanup):
    """On container VPSes (LXC, OpenVZ, nspawn) the pid nf_tables reports is not
    ours: own commits must still not look like tampering, and real tampering must."""
    cfg = guard_config(workdir, ca, [(5432, ["10.88.2.0/24"])])
    daemon = lab.Tunneld(workdir, "pidns", open(cfg).read(), netns=site.host.name,
                         wrapper=["unshare", "--pid", "--fork", "--kill-child=SIGTERM"])
    daemon.start()
    cleanup.append(daemon.stop)
    pid = daemon.proc.pid  # unshare's; the daemon is its child (pid 1 in the new namespace)
    child = int(open(f"/proc/{pid}/task/{pid}/children").read().split()[0])
    os.kill(child, signal.SIGHUP)  # a refresh commit of our own, too
    daemon.wait_log(r"reload \(SIGHUP\)")
    site.host.exec(["nft", "add", "table", "inet", "unrelated"])
    # A sentinel tampering: handled after the events above, and it must be the first repair.
    site.host.exec(["nft", "add", "element", "inet", "tunneld", "allow_v4_5432", "{ 10.88.1.2 }"])
    daemon.wait_log(r"firewall: table inet tunneld was changed by nft \(pid \d+\); put back .*\(1 time", timeout=2)
    assert len(daemon.log_lines(r"was changed by|keeps being changed")) == 1, daemon.read_log()
    os.kill(child, signal.SIGTERM)  # unshare does not pass signals on; it exits with its child
    daemon.proc.wait(timeout=15)


def test_missing_cap_net_admin_in_the_bounding_set_is_named_as_such(site, workdir, ca):
    """A container VPS that does not grant CAP_NET_ADMIN: the advice is not the
    unit's AmbientCapabilities= (which it has) but the container's bounding set."""
    cfg = guard_config(workdir, ca, [(5432, [])])
    r = site.host.exec(["setpriv", "--bounding-set", "-net_admin", lab.TUNNELD, "--peer", cfg], check=False, timeout=30)
    assert r.returncode == 1
    assert "bounding set (CapBnd in /proc/self/status) does not contain it" in r.stderr, r.stderr
    assert "AmbientCapabilities" not in r.stderr


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
