"""The README walkthrough, run as written: its command blocks are extracted from
README.md and run verbatim, as root in /tmp, inside two Debian 12 containers
booted with systemd (systemd-nspawn -b), each in a network namespace of its own
joined by a veth. The roots have PostgreSQL 15 and tunneld's dependencies
installed beforehand (the containers have no route to a mirror); the README's own
`apt-get install ./tunneld_0.1.0_amd64.deb postgresql` installs tunneld.

Two things stand in for the operator: the names primary.example.net and
standby.example.net resolve through /etc/hosts, and `scp SRC... root@HOST:DEST`
lines are carried out by copying the files between the two roots.

At the end: streaming replication, equal data on both sides, the command counts
the README promises (numbered, at most 10 per host), and then the README's
rotation blocks (one rotation with the CA, one by CSR) with replication going on."""

import glob
import os
import re
import shlex
import shutil
import time

import pytest

import lab

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: systemd-nspawn, network namespaces")

README = os.path.join(lab.ROOT, "README.md")
ADDR = {"primary": "10.88.0.1", "standby": "10.88.0.2"}
HOSTS = "".join(f"{a} {h}.example.net\n" for h, a in ADDR.items())


def readme_blocks(kind):
    """[(host, [command, ...])] of the README's `<!-- KIND: HOST -->` code blocks, in order."""
    text = open(README).read()
    out = []
    for m in re.finditer(r"<!-- (\w+): (\w+) -->\s*\n```sh\n(.*?)```", text, re.S):
        if m.group(1) != kind:
            continue
        commands, pending = [], ""
        for line in m.group(3).splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            line = pending + line
            pending = ""
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
        out.append((m.group(2), commands))
    return out


def test_the_readme_has_at_most_ten_numbered_commands_per_host():
    blocks = readme_blocks("walkthrough")
    assert blocks, "no <!-- walkthrough: HOST --> blocks in README.md"
    numbers = {}
    for host, commands in blocks:
        for c in commands:
            m = re.search(r"#\s*(\d+)\s*$", c)
            assert m, f"walkthrough command without its number: {c}"
            numbers.setdefault(host, []).append(int(m.group(1)))
    assert set(numbers) == {"primary", "standby"}
    for host, got in numbers.items():
        assert got == list(range(1, len(got) + 1)), (host, got)
        assert len(got) <= 10, (host, got)
    print({h: len(n) for h, n in numbers.items()})


class Host:
    def __init__(self, name, netns, root):
        self.name, self.netns, self.root = name, netns, root

    def run(self, command, timeout=180):
        r = self.root.sh("cd /tmp && " + command, check=False, timeout=timeout)
        return r

    def journal(self):
        return self.root.sh("journalctl -q --no-pager -o short-monotonic | tail -n 80", check=False).stdout


def scp(hosts, src_host, command):
    """`scp SRC... root@HOST.example.net:DEST` between the two roots."""
    args = shlex.split(command.split("#", 1)[0])
    assert args[0] == "scp" and len(args) >= 3, command
    m = re.fullmatch(r"root@(\w+)\.example\.net:(.*)", args[-1])
    assert m, f"scp target not root@HOST.example.net:PATH: {command}"
    dst_host, dest = hosts[m.group(1)], m.group(2) or "/root"
    if not dest.startswith("/"):
        dest = "/root/" + dest
    copied = 0
    for pattern in args[1:-1]:
        for src in glob.glob(os.path.join(src_host.root.path, pattern.lstrip("/"))):
            target = os.path.join(dst_host.root.path, dest.lstrip("/"))
            if os.path.isdir(target):
                target = os.path.join(target, os.path.basename(src))
            shutil.copy(src, target)  # mode kept, owner root: what scp does
            copied += 1
    assert copied, f"{command}: nothing matched on {src_host.name}"


def run_blocks(hosts, kind, transcript):
    """Runs the blocks; returns {(host, step number or command): output}."""
    outputs = {}
    for host_name, commands in readme_blocks(kind):
        host = hosts[host_name]
        for command in commands:
            t0 = time.monotonic()
            if command.startswith("scp "):
                scp(hosts, host, command)
                transcript.append(f"{host_name}# {command}  (copied between the roots)")
                continue
            r = host.run(command)
            m = re.search(r"#\s*(\d+)\s*$", command)
            outputs[(host_name, int(m.group(1)) if m else command)] = r.stdout + r.stderr
            transcript.append(f"{host_name}# {command}  ({time.monotonic() - t0:.1f}s, exit {r.returncode})\n"
                              + (r.stdout + r.stderr).rstrip())
            assert r.returncode == 0, (f"README command failed on {host_name}: {command}\nexit {r.returncode}\n"
                                       f"{r.stdout}\n{r.stderr}\n--- journal ---\n{host.journal()}")
    return outputs


def psql(host, sql):
    r = host.root.sh(f"runuser -u postgres -- psql -XAtq -c {shlex.quote(sql)}", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


def test_readme_walkthrough_in_two_booted_containers(debs):
    import systemd_root

    systemd_root.ensure_postgres_tarball()
    hosts, nss = {}, []
    transcript = []
    try:
        for name in ("primary", "standby"):
            nss.append(lab.Netns(f"rd{name[0]}"))
        lab.veth(nss[0], ADDR["primary"], nss[1], ADDR["standby"])
        for name, ns in zip(("primary", "standby"), nss):
            root = systemd_root.BootedRoot(ns, tarball=systemd_root.PG_TARBALL)
            hosts[name] = Host(name, ns, root)
            shutil.copy(debs["0.1.0"], os.path.join(root.path, "root"))  # for the dependencies, below
            # tunneld's dependencies (the README installs tunneld itself, offline).
            root.install("deps=$(dpkg-deb -f /root/tunneld_0.1.0_amd64.deb Depends | tr ',' '\\n' | "
                         "sed 's/(.*)//; s/|.*//' | xargs) && "
                         "apt-get install -y -qq --no-install-recommends $deps >/dev/null")
            with open(os.path.join(root.path, "etc/hosts"), "a") as f:
                f.write(HOSTS)
        for h in hosts.values():
            h.root.boot()
            # The operator copies the .deb to /tmp (a tmpfs of the booted system).
            shutil.copy(debs["0.1.0"], f"/proc/{h.root.pid1}/root/tmp/")
            lab.wait_for(lambda h=h: h.root.sh("systemctl is-active postgresql@15-main", check=False)
                         .stdout.strip() == "active", timeout=60, what=f"postgres on {h.name}")

        steps = run_blocks(hosts, "walkthrough", transcript)
        # What the README says each step shows.
        check_primary = steps[("primary", 8)]
        assert "ok    health.postgres answers: postgres is the primary" in check_primary, check_primary
        assert re.search(r"warn  peer standby-1 .* not reachable yet", check_primary), check_primary
        assert "FAIL" not in check_primary and "all checks passed" in check_primary
        check_standby = steps[("standby", 5)]
        assert "warn  backend (inbound.backend) 127.0.0.1:5432 not accepting connections yet" in check_standby
        assert "ok    peer primary-1 (peers[].connect) primary.example.net:8765 accepts connections" in check_standby
        assert "FAIL" not in check_standby, check_standby
        assert steps[("standby", 10)].strip() == "replica: ok", steps[("standby", 10)]
        assert re.search(r"127\.0\.0\.1 +\| streaming", steps[("primary", 10)]), steps[("primary", 10)]
        for (host, step), out in steps.items():  # nothing a new operator would wonder about
            assert "could not change directory" not in out and "Permission denied" not in out, (host, step, out)

        primary, standby = hosts["primary"], hosts["standby"]
        rows = psql(primary, "SELECT client_addr, state FROM pg_stat_replication")
        assert rows == "127.0.0.1|streaming", rows
        assert psql(standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
        psql(primary, "CREATE TABLE readme AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")

        def caught_up():
            return psql(primary, "SELECT pg_current_wal_lsn() = replay_lsn FROM pg_stat_replication") == "t"

        lab.wait_for(caught_up, timeout=30, what="standby caught up")
        fingerprint = "SELECT count(*), md5(string_agg(v, ',' ORDER BY id)) FROM readme"
        assert psql(primary, fingerprint) == psql(standby, fingerprint)
        # What steps 2 and 3 promise about the health endpoint and the journal.
        for h, cfg, path in ((primary, "primary", "/primary"), (standby, "standby", "/replica")):
            r = h.run(f"tunneld health --peer /etc/tunneld/{cfg}.yaml --path {path}")
            assert r.returncode == 0, r.stdout + r.stderr
            # STATUS= follows each probe result at once; the other host's probe
            # may still be on its retry interval when the walkthrough ends.
            show = f"systemctl show -p StatusText --value tunneld@{cfg}"
            lab.wait_for(lambda: ": healthy; peers 1/1 up" in h.run(show).stdout, timeout=15,
                         interval=0.5, what=f"{cfg}: STATUS= saying healthy, peers 1/1 up")
        for h, unit in ((primary, "tunneld@primary"), (standby, "tunneld@standby")):
            closes = h.run(f"journalctl -q -o cat -u {unit} | grep ' close peer='").stdout
            bad = [l for l in closes.splitlines() if "reason=finished" not in l]
            assert not bad, f"{unit}: connections that did not end cleanly:\n{closes}"  # pg_basebackup's included

        # Rotation, as the README says, while replication runs.
        serials = {c: h.run(f"tunneld health --peer /etc/tunneld/{c}.yaml --path /status").stdout
                   for c, h in (("primary", primary), ("standby", standby))}
        run_blocks(hosts, "rotation", transcript)
        for c, h in (("primary", primary), ("standby", standby)):
            now = h.run(f"tunneld health --peer /etc/tunneld/{c}.yaml --path /status").stdout
            before_serial = re.search(r'"cert_serial":"(\w+)"', serials[c]).group(1)
            assert re.search(r'"cert_serial":"(\w+)"', now).group(1) != before_serial, c
        psql(primary, "INSERT INTO readme SELECT g, md5(g::text) FROM generate_series(20001, 30000) g")
        lab.wait_for(caught_up, timeout=30, what="standby caught up after the rotations")
        assert psql(primary, fingerprint) == psql(standby, fingerprint)
        assert psql(standby, "SELECT status FROM pg_stat_wal_receiver") == "streaming"
        print("\n".join(transcript))
    except BaseException:
        print("\n".join(transcript))
        raise
    finally:
        for h in hosts.values():
            h.root.delete()
        for ns in nss:
            ns.delete()


def test_the_man_page_examples_are_the_readme_walkthrough():
    """tunneld(8) repeats the walkthrough; this keeps the two from drifting."""
    man = open(os.path.join(lab.ROOT, "packaging", "tunneld.8")).read()
    examples = man[man.index(".SH EXAMPLES"):man.index(".SH SEE ALSO")]
    text = (examples.replace("\\e\n    ", "").replace("\\-", "-").replace("\\(aq", "'"))
    lines = {re.sub(r"^(primary|standby)# ", "", l.strip()) for l in text.splitlines()}
    for kind in ("walkthrough", "rotation"):
        for host, commands in readme_blocks(kind):
            for c in commands:
                bare = re.sub(r"\s+#.*$", "", c).strip()
                assert bare in lines, f"README {kind} command missing from tunneld(8) EXAMPLES: {bare}"
