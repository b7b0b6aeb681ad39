"""The one .deb on Debian 13 for real: a trixie root (systemd 257, OpenSSL 3.5,
glibc 2.41) booted with systemd in a container, the package installed with
`apt-get install ./tunneld_*.deb`, and a Debian 12 container beside it on a
veth, both running the packaged tunneld@ units with the guard:

    trixie ns (10.98.0.1)                               bookworm ns (10.98.0.2)
    standby postgres -> tunneld@standby ==TLS, X25519==> tunneld@primary -> postgres 15
    echo via 7432    -> tunneld@standby ==TLS, X25519MLKEM768==> tunneld@edge (also trixie)

pg_basebackup and streaming cross the trixie-to-bookworm pair (the hybrid is
not in bookworm's OpenSSL 3.0: X25519 is agreed, with no extra round trip),
while the two trixie tunnelds agree on X25519MLKEM768. PostgreSQL is Debian
12's (the host's, run in each container's network namespace), since a
standby needs the primary's major version."""

import os
import re
import shutil
import subprocess

import pytest

import lab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: systemd-nspawn, network namespaces")

T_ADDR, B_ADDR = "10.98.0.1", "10.98.0.2"

GUARD = f"""firewall:
  protect:
    - {{port: 5432, allow: []}}
    - {{port: 8765, allow: [{T_ADDR}/32]}}
"""

PRIMARY = f"""node: primary-1
tls: {{ca: /etc/tunneld/ca.crt, cert: /etc/tunneld/primary-1.crt, key: /etc/tunneld/primary-1.key}}
inbound:
  listen: {B_ADDR}:8765
  backend: 127.0.0.1:5432
  allow: [standby-1]
health: {{listen: 127.0.0.1:8766, probe_interval: 500ms}}
""" + GUARD

STANDBY = f"""node: standby-1
tls: {{ca: /etc/tunneld/ca.crt, cert: /etc/tunneld/standby-1.crt, key: /etc/tunneld/standby-1.key}}
peers:
  - {{name: primary-1, connect: "{B_ADDR}:8765", local: "127.0.0.1:6432"}}
  - {{name: edge-1, connect: "127.0.0.1:9765", local: "127.0.0.1:7432"}}
health: {{listen: 127.0.0.1:8767, probe_interval: 500ms}}
"""

EDGE = """node: edge-1
tls: {ca: /etc/tunneld/ca.crt, cert: /etc/tunneld/edge-1.crt, key: /etc/tunneld/edge-1.key}
inbound:
  listen: 127.0.0.1:9765
  backend: 127.0.0.1:9432
  allow: [standby-1]
health: {listen: 127.0.0.1:8768, probe_interval: 500ms}
firewall:
  protect:
    - {port: 9432, allow: []}
"""

# An ad-hoc client (not a unit) whose only peer is the test's s_server.
HRR_CLIENT = f"""node: standby-1
tls: {{ca: /etc/tunneld/ca.crt, cert: /etc/tunneld/standby-1.crt, key: /etc/tunneld/standby-1.key}}
peers:
  - {{name: hrr-check, connect: "{B_ADDR}:9443", local: "127.0.0.1:7999"}}
health: {{enabled: false}}
"""

ECHO_UNIT = """[Unit]
Description=echo backend
[Service]
ExecStart=/usr/bin/python3 -c "import socket,threading\\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',9432));s.listen(16)\\ndef serve(c):\\n  while (d:=c.recv(65536)): c.sendall(d)\\n  c.close()\\nwhile True: threading.Thread(target=serve,args=(s.accept()[0],),daemon=True).start()"
[Install]
WantedBy=multi-user.target
"""

ECHO = "python3 -c \"import socket;c=socket.create_connection(('127.0.0.1',7432),5);c.sendall(b'pq');" \
       "assert c.recv(2)==b'pq';print('echoed')\""
METRICS = "python3 -c \"import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:{port}/metrics'," \
          "timeout=5).read().decode())\""


def journal(root, unit):
    return root.sh(f"journalctl -q -o cat -u {unit} --no-pager", check=False).stdout


def install(root, deb, configs, certs, ca, extra_units=()):
    """apt-get install ./tunneld_*.deb in the (not yet booted) root, then the
    operator's part: configs, the CA and this host's keys (owned by tunneld)."""
    shutil.copy(deb, os.path.join(root.path, "root"))
    root.chroot("apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                f"./root/{os.path.basename(deb)} >/dev/null")
    shutil.copy(ca.cert_path, os.path.join(root.path, "etc/tunneld/ca.crt"))
    for name in certs:
        cert, key, _ = ca.issue(name, directory=os.path.join(root.path, "etc/tunneld"))
        root.chroot(f"chown tunneld:tunneld /etc/tunneld/{name}.key && chmod 0600 /etc/tunneld/{name}.key")
    for unit, text in configs.items():
        with open(os.path.join(root.path, f"etc/tunneld/{unit}.yaml"), "w") as f:
            f.write(text)
    for name, text in extra_units:
        with open(os.path.join(root.path, f"etc/systemd/system/{name}"), "w") as f:
            f.write(text)


def test_debian_13_and_12_containers_replicate_through_the_packaged_units(debs, workdir):
    import systemd_root

    deb = debs["0.1.0"]
    ns_t, ns_b = lab.Netns("trixie"), lab.Netns("bookworm")
    lab.veth(ns_t, T_ADDR, ns_b, B_ADDR)
    trixie = systemd_root.BootedRoot(ns_t, tarball=systemd_root.TRIXIE_TARBALL)
    bookworm = systemd_root.BootedRoot(ns_b)
    primary = lab.Postgres(os.path.join(workdir, "primary"), 5432, netns=ns_b)
    standby = lab.Postgres(os.path.join(workdir, "standby"), 5433, netns=ns_t)
    try:
        ca = lab.CA(os.path.join(workdir, "ca"))
        install(trixie, deb, {"standby": STANDBY, "edge": EDGE}, ["standby-1", "edge-1"], ca,
                [("echo-backend.service", ECHO_UNIT)])
        install(bookworm, deb, {"primary": PRIMARY}, ["primary-1"], ca)
        assert "VERSION_ID=\"13\"" in trixie.chroot("cat /etc/os-release").stdout
        version = trixie.chroot("tunneld --version").stdout
        print("tunneld --version on Debian 13:\n" + version)
        assert re.search(r"^built with OpenSSL 3\.0\.", version, re.M), version
        assert re.search(r"^running with OpenSSL 3\.([5-9]|\d\d)\.", version, re.M), version
        assert "post-quantum key exchange: X25519MLKEM768" in version
        assert "post-quantum key exchange: not available" in bookworm.chroot("tunneld --version").stdout
        check = trixie.chroot("tunneld check --peer /etc/tunneld/edge.yaml || true").stdout
        assert "ok    key exchange (tls.groups): X25519MLKEM768, X25519, P-256, P-384\n" in check, check

        primary.initdb()
        primary.start()
        trixie.boot()
        bookworm.boot()
        assert trixie.sh("systemctl --version | head -1").stdout.startswith("systemd 257")
        bookworm.sh("systemctl start tunneld@primary")
        trixie.sh("systemctl start echo-backend tunneld@edge tunneld@standby")
        for root, unit in ((bookworm, "tunneld@primary"), (trixie, "tunneld@edge"), (trixie, "tunneld@standby")):
            state = root.sh(f"systemctl show -p ActiveState,SubState {unit}").stdout
            assert "ActiveState=active" in state and "SubState=running" in state, state + journal(root, unit)
        for root in (bookworm, trixie):  # the guard, through Debian 12's and Debian 13's libnftnl
            assert "chain guard" in root.sh("nft list table inet tunneld").stdout

        # PostgreSQL through the trixie-to-bookworm pair: a base backup, then streaming.
        standby.basebackup_from("127.0.0.1", 6432)
        standby.start()
        primary.sql("CREATE TABLE across (v text); INSERT INTO across VALUES ('bookworm to trixie')")
        lab.wait_for(lambda: standby.sql("SELECT v FROM across", check=False) == "bookworm to trixie",
                     timeout=30, what="the row streamed to the standby through the pair")
        assert primary.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == "1"

        # The two trixie tunnelds agree on the post-quantum hybrid.
        assert trixie.sh(ECHO).stdout.strip() == "echoed"
        lab.wait_for(lambda: "inbound open peer=standby-1" in journal(trixie, "tunneld@edge"), timeout=10,
                     what="edge-1's open line")
        edge_open = [line for line in journal(trixie, "tunneld@edge").splitlines() if "inbound open" in line]
        assert edge_open and all(line.endswith("group=X25519MLKEM768") for line in edge_open), edge_open
        # ... and the trixie-to-bookworm pair falls back to X25519, on both sides.
        b_open = [line for line in journal(bookworm, "tunneld@primary").splitlines() if "inbound open" in line]
        assert b_open and all(line.endswith("group=X25519") for line in b_open), b_open
        t_open = [line for line in journal(trixie, "tunneld@standby").splitlines() if "outbound open" in line]
        assert any("peer=primary-1" in line and line.endswith("group=X25519") for line in t_open), t_open
        assert any("peer=edge-1" in line and line.endswith("group=X25519MLKEM768") for line in t_open), t_open
        print("open lines:\n" + "\n".join(edge_open[:1] + b_open[:1] + t_open[:2]))
        metrics = trixie.sh(METRICS.format(port=8767)).stdout
        pq = re.search(r'^tunneld_tls_key_exchanges_total\{direction="outbound",group="X25519MLKEM768"\} (\d+)',
                       metrics, re.M)
        classic = re.search(r'^tunneld_tls_key_exchanges_total\{direction="outbound",group="X25519"\} (\d+)',
                            metrics, re.M)
        assert pq and int(pq.group(1)) >= 1 and classic and int(classic.group(1)) >= 1, metrics
        assert 'group="X25519MLKEM768"' not in bookworm.sh(METRICS.format(port=8766)).stdout

        # The client on trixie sends two key shares (the hybrid and X25519), so a
        # bookworm server picks X25519 at once: one ClientHello, no HelloRetryRequest
        # round trip. Seen from an `openssl s_server -msg` (OpenSSL 3.0) in the
        # bookworm namespace; openssl s_client on trixie with one key share is the
        # control that shows the count can be two.
        def client_hellos(client_cmd):
            server = ns_b.popen(["openssl", "s_server", "-accept", f"{B_ADDR}:9443", "-cert", hrr_cert, "-key",
                                 hrr_key, "-msg", "-naccept", "1", "-tls1_3", "-www"], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
            try:
                lab.wait_for(lambda: ns_b.exec(["ss", "-Htln", f"src {B_ADDR}:9443"]).stdout.strip() != "",
                             timeout=10, what="s_server")
                trixie.sh(client_cmd, check=False, timeout=30)
                out = server.communicate(timeout=20)[0]
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
            return len(re.findall(r"<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], ClientHello", out)), out

        hrr_cert, hrr_key, _ = ca.issue("hrr-check", directory=os.path.join(workdir, "hrr"))
        n, out = client_hellos("openssl s_client -connect 10.98.0.2:9443 -groups X25519MLKEM768:X25519 "
                               "</dev/null >/dev/null 2>&1 || true")
        assert n == 2, out  # one key share (the hybrid's): the 3.0 server asks again
        with open(os.path.join(trixie.path, "etc/tunneld/hrr.yaml"), "w") as f:
            f.write(HRR_CLIENT)
        n, out = client_hellos("timeout 3 tunneld --peer /etc/tunneld/hrr.yaml >/dev/null 2>&1 || true")
        assert n == 1, out
    finally:
        for root, units in ((trixie, "tunneld@*"), (bookworm, "tunneld@*")):
            if root.pid1:
                print(f"----- {root.path} journal -----\n" +
                      root.sh(f"journalctl -q --no-pager -u '{units}' | tail -40", check=False).stdout)
        standby.stop()
        primary.stop()
        trixie.delete()
        bookworm.delete()
        ns_t.delete()
        ns_b.delete()
