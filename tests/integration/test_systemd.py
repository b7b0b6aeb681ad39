"""The packaged unit under a live systemd: a Debian 12 root booted with systemd
as PID 1 (systemd-nspawn -b) in its own network namespace, the .deb installed,
two instances (tunneld@primary with the guard and tunneld@standby) carrying a
connection to a backend. Shows that the unit's sandbox (SystemCallFilter,
MemoryDenyWriteExecute, ProtectProc, two capabilities) leaves the relay, the
guard and the health endpoint working; READY=1, reload, the watchdog, the
drain on stop, and an upgrade that restarts running instances and keeps edited
conffiles."""

import os
import re
import shutil
import subprocess

import pytest

import lab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: systemd-nspawn, network namespaces")

BUILD = os.path.join(lab.ROOT, "build")

PRIMARY = """node: primary-1
tls: {ca: /etc/tunneld/ca.crt, cert: /etc/tunneld/primary-1.crt, key: /etc/tunneld/primary-1.key}
inbound:
  listen: 127.0.0.1:8765
  backend: 127.0.0.1:5432
  allow: [standby-1]
health: {listen: 127.0.0.1:8766, probe_interval: 500ms}
firewall:
  protect:
    - {port: 5432, allow: []}
# edited by the operator
"""

STANDBY = """node: standby-1
tls: {ca: /etc/tunneld/ca.crt, cert: /etc/tunneld/standby-1.crt, key: /etc/tunneld/standby-1.key}
peers:
  - {name: primary-1, connect: "127.0.0.1:8765", local: "127.0.0.1:6432"}
health: {listen: 127.0.0.1:8767, probe_interval: 500ms}
timeouts: {shutdown: 2s}
"""

ECHO_UNIT = """[Unit]
Description=echo backend standing in for postgres
[Service]
ExecStart=/usr/bin/python3 -c "import socket,threading\\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',5432));s.listen(16)\\ndef serve(c):\\n  while (d:=c.recv(65536)): c.sendall(d)\\n  c.close()\\nwhile True: threading.Thread(target=serve,args=(s.accept()[0],),daemon=True).start()"
[Install]
WantedBy=multi-user.target
"""

# One echo round trip through the standby's local port, or a held connection.
ECHO = "python3 -c \"import socket;c=socket.create_connection(('127.0.0.1',6432),5);c.sendall(b'through');" \
       "assert c.recv(7)==b'through';print('echoed')\""
HTTP = "python3 -c \"import urllib.request,sys;print(urllib.request.urlopen('http://127.0.0.1:{port}{path}',timeout=5).status)\""


def main_pid(root, unit):
    return int(root.sh(f"systemctl show -p MainPID --value {unit}").stdout.strip())


def journal(root, unit):
    return root.sh(f"journalctl -q -o cat -u {unit} --no-pager", check=False).stdout


def test_packaged_unit_under_a_booted_systemd(debs):
    import systemd_root

    ns = lab.Netns("sysd")
    root = systemd_root.BootedRoot(ns)
    try:
        for deb in debs.values():  # in /root: the booted container mounts a fresh tmpfs on /tmp
            shutil.copy(deb, os.path.join(root.path, "root"))
        root.chroot("apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                    "/root/tunneld_0.1.0_amd64.deb >/dev/null")
        root.chroot("tunneld certs init-ca --out /root/ca >/dev/null && cp /root/ca/ca.crt /etc/tunneld/ && "
                    "for n in primary-1 standby-1; do tunneld certs issue --ca /root/ca --name $n --out /etc/tunneld "
                    ">/dev/null; chown tunneld:tunneld /etc/tunneld/$n.key; done")
        with open(os.path.join(root.path, "etc/tunneld/primary.yaml"), "w") as f:
            f.write(PRIMARY)  # replaces the shipped example: an operator's edit of a conffile
        with open(os.path.join(root.path, "etc/tunneld/standby.yaml"), "w") as f:
            f.write(STANDBY)
        with open(os.path.join(root.path, "etc/systemd/system/echo-backend.service"), "w") as f:
            f.write(ECHO_UNIT)
        dropin = os.path.join(root.path, "etc/systemd/system/tunneld@.service.d")
        os.makedirs(dropin)
        with open(os.path.join(dropin, "watchdog.conf"), "w") as f:
            f.write("[Service]\nWatchdogSec=3s\n")  # the real unit, a shorter watchdog for the test
        root.boot()

        # Start: Type=notify returns once the daemon said READY=1.
        root.sh("systemctl start echo-backend tunneld@primary tunneld@standby")
        for unit in ("tunneld@primary", "tunneld@standby"):
            state = root.sh(f"systemctl show -p ActiveState,SubState,Result {unit}").stdout
            assert "ActiveState=active" in state and "SubState=running" in state, state + journal(root, unit)
        # The sandbox as the kernel sees it: seccomp on, only the two capabilities, not root.
        pid = main_pid(root, "tunneld@primary")
        status = root.sh(f"cat /proc/{pid}/status").stdout
        assert re.search(r"^Seccomp:\s+2$", status, re.M), status
        assert re.search(r"^CapEff:\s+0000000000001400$", status, re.M), status  # NET_ADMIN | NET_BIND_SERVICE
        assert root.sh(f"stat -c %U /proc/{pid}").stdout.strip() == "tunneld"
        # ... and still relays, guards and answers health checks.
        assert root.sh(ECHO).stdout.strip() == "echoed"
        assert "chain guard" in root.sh("nft list table inet tunneld").stdout
        lab.wait_for(lambda: root.sh(HTTP.format(port=8767, path="/readiness"), check=False).stdout.strip() == "200",
                     timeout=10, what="standby readiness 200")
        assert root.sh(HTTP.format(port=8766, path="/liveness")).stdout.strip() == "200"

        # Reload: `tunneld reload` as ExecReload (no procps in this root) waits for the daemon's answer.
        r = root.sh("systemctl reload tunneld@primary", check=False)
        assert r.returncode == 0, r.stdout + r.stderr + journal(root, "tunneld@primary")
        assert "reloaded: serving cert serial" in journal(root, "tunneld@primary")
        # A failed reload fails `systemctl reload`, and is an error in the journal at its priority.
        r = root.sh("chmod 0644 /etc/tunneld/primary-1.key && systemctl reload tunneld@primary", check=False)
        assert r.returncode != 0, "systemctl reload said it reloaded when the daemon's reload failed"
        assert root.sh("systemctl is-active tunneld@primary").stdout.strip() == "active"  # still serving
        lab.wait_for(lambda: "tunneld reload: reload failed" in root.sh(
            "journalctl -q -o cat -p warning -u tunneld@primary --no-pager", check=False).stdout,
            timeout=10, what="the failed reload at -p warning")
        warnings = root.sh("journalctl -q -o cat -p warning -u tunneld@primary --no-pager").stdout
        assert "reload (SIGHUP) failed, still serving" in warnings and "chmod 600" in warnings, warnings
        assert "ready" not in warnings  # info lines stay out of -p warning
        print(f"systemctl reload after chmod 0644 on the key: exit {r.returncode}\n{r.stderr}"
              "journalctl -p warning after the failed reload:\n" + warnings)
        root.sh("chmod 0600 /etc/tunneld/primary-1.key")
        # A unit name that is not a config file's fails loudly, naming the file.
        r = root.sh("systemctl start tunneld@primary-1", check=False)
        assert r.returncode != 0
        status = root.sh("systemctl status tunneld@primary-1 --no-pager", check=False).stdout
        assert "Assertion failed for tunneld@primary-1.service - tunneld mutual-TLS replication tunnel for " \
               "/etc/tunneld/primary-1.yaml" in status, status

        # Watchdog: a stopped daemon stops pinging; systemd kills and restarts it.
        root.sh(f"kill -STOP {pid}")
        lab.wait_for(lambda: main_pid(root, "tunneld@primary") not in (0, pid) and
                     root.sh("systemctl is-active tunneld@primary", check=False).stdout.strip() == "active",
                     timeout=30, interval=0.5, what="the watchdog to restart tunneld@primary")
        assert "Watchdog timeout" in root.sh("journalctl -q --no-pager -u tunneld@primary", check=False).stdout
        lab.wait_for(lambda: root.sh(ECHO, check=False).stdout.strip() == "echoed", timeout=10, what="relay back")

        # Stop drains: a held connection is reported and the stop completes.
        holder = subprocess.Popen(["nsenter", "-t", str(root.pid1), "-m", "-n", "-p", "--", "python3", "-c",
                                   "import socket,time;c=socket.create_connection(('127.0.0.1',6432));"
                                   "c.sendall(b'x');c.recv(1);print('held',flush=True);time.sleep(30)"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            root.sh("systemctl stop tunneld@standby", timeout=30)
            # journald takes the last lines of a stream asynchronously: wait for them.
            lab.wait_for(lambda: "\nstopped" in journal(root, "tunneld@standby"), timeout=10, what="'stopped'")
            log = journal(root, "tunneld@standby")
            assert "draining 1 live connection(s)" in log, log
            result = root.sh("systemctl show -p Result --value tunneld@standby").stdout.strip()
            assert result == "success", result
        finally:
            holder.kill()
            holder.wait()

        # Upgrade 0.1.0 -> 0.1.1 while tunneld@primary runs: restarted, edited conffile kept.
        before = main_pid(root, "tunneld@primary")
        root.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                "-o Dpkg::Options::=--force-confold /root/tunneld_0.1.1_amd64.deb >/dev/null", timeout=120)
        assert root.sh("dpkg-query -W -f='${Version}' tunneld").stdout == "0.1.1"
        after = main_pid(root, "tunneld@primary")
        assert after not in (0, before), "the running instance was not restarted by the upgrade"
        assert root.sh("systemctl is-active tunneld@primary").stdout.strip() == "active"
        assert "# edited by the operator" in root.sh("cat /etc/tunneld/primary.yaml").stdout
    finally:
        if root.pid1:
            print("----- container journal (tunneld) -----\n" +
                  root.sh("journalctl -q --no-pager -u 'tunneld@*' | tail -80", check=False).stdout)
        print("----- container console -----\n" + root.console_text())
        root.delete()
        ns.delete()
