"""The .deb and .rpm made by CPack from the tested build: their file lists,
modes, owners and maintainer scripts; lintian and rpmlint; systemd-analyze on
the unit; and an install of the .deb into a clean Debian 12 root (debootstrap),
where tunneld runs, configs survive edits and removal, and purge leaves only
what Debian policy allows."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

import lab

VERSION = re.search(r"project\(tunneld VERSION ([0-9.]+)", open(os.path.join(lab.ROOT, "CMakeLists.txt")).read()).group(1)
BUILD = os.path.join(lab.ROOT, "build")

# path -> (mode, owner:group); directories end in /.
DEB_FILES = {
    "./etc/": (0o755, "root/root"),
    "./etc/tunneld/": (0o755, "root/root"),  # postinst makes it 0750 root:tunneld once the group exists
    "./etc/tunneld/primary.yaml": (0o644, "root/root"),
    "./etc/tunneld/standby.yaml": (0o644, "root/root"),
    "./usr/": (0o755, "root/root"),
    "./usr/bin/": (0o755, "root/root"),
    "./usr/bin/tunneld": (0o755, "root/root"),
    "./usr/lib/": (0o755, "root/root"),
    "./usr/lib/systemd/": (0o755, "root/root"),
    "./usr/lib/systemd/system/": (0o755, "root/root"),
    "./usr/lib/systemd/system/tunneld@.service": (0o644, "root/root"),
    "./usr/share/": (0o755, "root/root"),
    "./usr/share/doc/": (0o755, "root/root"),
    "./usr/share/doc/tunneld/": (0o755, "root/root"),
    "./usr/share/doc/tunneld/README.md": (0o644, "root/root"),
    "./usr/share/doc/tunneld/changelog.gz": (0o644, "root/root"),
    "./usr/share/doc/tunneld/copyright": (0o644, "root/root"),
    "./usr/share/lintian/": (0o755, "root/root"),
    "./usr/share/lintian/overrides/": (0o755, "root/root"),
    "./usr/share/lintian/overrides/tunneld": (0o644, "root/root"),
    "./usr/share/man/": (0o755, "root/root"),
    "./usr/share/man/man8/": (0o755, "root/root"),
    "./usr/share/man/man8/tunneld.8.gz": (0o644, "root/root"),
    "./usr/share/tunneld/": (0o755, "root/root"),
    "./usr/share/tunneld/monitoring/": (0o755, "root/root"),
    "./usr/share/tunneld/monitoring/prometheus.yml": (0o644, "root/root"),
    "./usr/share/tunneld/monitoring/tunneld-dashboard.json": (0o644, "root/root"),
    "./usr/share/tunneld/monitoring/tunneld-rules.test.yml": (0o644, "root/root"),
    "./usr/share/tunneld/monitoring/tunneld-rules.yml": (0o644, "root/root"),
}

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: packages are built and installed as root")


@pytest.fixture(scope="module")
def packages():
    out = tempfile.mkdtemp(prefix="tunneld-pkg-")
    r = subprocess.run(["cpack", "-G", "DEB;RPM", "-B", out], cwd=BUILD, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    deb = os.path.join(out, f"tunneld_{VERSION}_amd64.deb")
    rpm = os.path.join(out, f"tunneld-{VERSION}.x86_64.rpm")
    assert os.path.exists(deb) and os.path.exists(rpm), os.listdir(out)
    yield deb, rpm
    shutil.rmtree(out, ignore_errors=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def test_deb_holds_exactly_the_expected_files_modes_and_owners(packages):
    deb, _ = packages
    listing = run(["dpkg-deb", "-c", deb]).stdout.splitlines()
    got = {}
    for line in listing:
        perms, owner, _size, _date, _time, path = line.split(None, 5)
        mode = sum(1 << (8 - i) for i, c in enumerate(perms[1:10]) if c != "-")
        got[path + ("/" if perms[0] == "d" and not path.endswith("/") else "")] = (mode, owner)
    assert got == DEB_FILES
    control = run(["dpkg-deb", "-f", deb]).stdout
    # The ABI contract's libraries (test_abi_contract.py holds them to dpkg-shlibdeps), and
    # nothing only Debian 12 ships.
    for lib in ("libpq5", "libssl3", "libnftnl11", "libmnl0", "libsystemd0", "adduser"):
        assert re.search(rf"^Depends:.*\b{re.escape(lib)}\b", control, re.M), (lib, control)
    for gone in ("libyaml-cpp", "libboost", "libspdlog", "libfmt", "libstdc++", "libgcc"):
        assert gone not in control, (gone, control)
    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert conffiles == ["/etc/tunneld/primary.yaml", "/etc/tunneld/standby.yaml"]


def test_deb_maintainer_scripts(packages):
    deb, _ = packages
    postinst = run(["dpkg-deb", "-I", deb, "postinst"]).stdout
    assert "adduser --system" in postinst and "chown root:tunneld /etc/tunneld" in postinst
    assert "chmod 0750 /etc/tunneld" in postinst and "try-restart" in postinst
    code = "\n".join(line for line in postinst.splitlines() if not line.lstrip().startswith("#"))
    assert "enable" not in code and " start" not in code  # nothing runs until an operator enables an instance
    prerm = run(["dpkg-deb", "-I", deb, "prerm"]).stdout
    assert '"$1" = "remove"' in prerm and "stop" in prerm
    postrm = run(["dpkg-deb", "-I", deb, "postrm"]).stdout
    assert '"$1" = "purge"' in postrm and "rm -rf /etc/tunneld" in postrm
    for name in ("postinst", "prerm", "postrm"):
        script = run(["dpkg-deb", "-I", deb, name]).stdout
        assert run(["sh", "-n"], input=script).returncode == 0, name


def test_rpm_files_and_scripts(packages):
    _, rpm = packages
    listing = run(["rpm", "-qlpv", rpm]).stdout.splitlines()
    got = {line.split()[-1]: (line.split()[0], line.split()[2], line.split()[3]) for line in listing}
    assert got == {
        "/etc/tunneld": ("drwxr-xr-x", "root", "root"),
        "/etc/tunneld/primary.yaml": ("-rw-r--r--", "root", "root"),
        "/etc/tunneld/standby.yaml": ("-rw-r--r--", "root", "root"),
        "/usr/bin/tunneld": ("-rwxr-xr-x", "root", "root"),
        "/usr/lib/systemd/system/tunneld@.service": ("-rw-r--r--", "root", "root"),
        "/usr/share/doc/tunneld": ("drwxr-xr-x", "root", "root"),
        "/usr/share/doc/tunneld/README.md": ("-rw-r--r--", "root", "root"),
        "/usr/share/doc/tunneld/changelog.gz": ("-rw-r--r--", "root", "root"),
        "/usr/share/doc/tunneld/copyright": ("-rw-r--r--", "root", "root"),
        "/usr/share/lintian/overrides/tunneld": ("-rw-r--r--", "root", "root"),
        "/usr/share/man/man8/tunneld.8.gz": ("-rw-r--r--", "root", "root"),
        "/usr/share/tunneld": ("drwxr-xr-x", "root", "root"),
        "/usr/share/tunneld/monitoring": ("drwxr-xr-x", "root", "root"),
        "/usr/share/tunneld/monitoring/prometheus.yml": ("-rw-r--r--", "root", "root"),
        "/usr/share/tunneld/monitoring/tunneld-dashboard.json": ("-rw-r--r--", "root", "root"),
        "/usr/share/tunneld/monitoring/tunneld-rules.test.yml": ("-rw-r--r--", "root", "root"),
        "/usr/share/tunneld/monitoring/tunneld-rules.yml": ("-rw-r--r--", "root", "root"),
    }
    configs = run(["rpm", "-qcp", rpm]).stdout.split()
    assert configs == ["/etc/tunneld/primary.yaml", "/etc/tunneld/standby.yaml"]
    flags = dict(line.split() for line in run(["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm])
                 .stdout.splitlines() if len(line.split()) == 2)
    assert flags == {"/etc/tunneld/primary.yaml": "cn", "/etc/tunneld/standby.yaml": "cn",  # %config(noreplace)
                     "/usr/share/doc/tunneld/README.md": "d", "/usr/share/doc/tunneld/copyright": "dl",
                     "/usr/share/doc/tunneld/changelog.gz": "d", "/usr/share/man/man8/tunneld.8.gz": "d"}, flags
    scripts = run(["rpm", "-qp", "--scripts", rpm]).stdout
    assert "preinstall scriptlet" in scripts and "useradd -r -g tunneld" in scripts
    assert "chown root:tunneld /etc/tunneld" in scripts and "chmod 0750 /etc/tunneld" in scripts
    assert 'if [ "$1" -eq 0 ]' in scripts and "systemctl stop 'tunneld@*.service'" in scripts
    assert "try-restart 'tunneld@*.service'" in scripts
    requires = run(["rpm", "-qpR", rpm]).stdout
    for lib in ("libpq.so.5", "libssl.so.3", "libnftnl.so.11", "libsystemd.so.0", "libc.so.6(GLIBC_2.34)"):
        assert lib in requires, lib
    assert "boost" not in requires and "yaml" not in requires and "libstdc++" not in requires, requires


def test_packaged_binary_is_built_hardened(packages, tmp_path):
    """PIE, full RELRO with immediate binding, stack protector, fortified libc
    calls and stack clash protection: Debian's hardening-check on the binary as
    it ships in the .deb; -fcf-protection landing pads, and exactly what the
    README says of CET (no IBT/SHSTK property note, so no shadow stack)."""
    deb, _ = packages
    run(["dpkg-deb", "-x", deb, str(tmp_path)])
    binary = str(tmp_path / "usr/bin/tunneld")
    # --nocfprotection: Debian 12's own Scrt1.o and crti.o carry no CET property note,
    # so the linker drops IBT/SHSTK from every binary linked there (nft, openssl and
    # haproxy show "no" too). Our code is compiled with -fcf-protection: endbr64
    # landing pads are checked below instead.
    r = run(["hardening-check", "--nocfprotection", binary])
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("Position Independent Executable: yes", "Stack protected: yes", "Fortify Source functions: yes",
                 "Read-only relocations: yes", "Immediate binding: yes", "Stack clash protection: yes"):
        assert line in r.stdout, r.stdout
    endbr = subprocess.run(f"objdump -d --no-show-raw-insn {binary} | grep -c endbr64", shell=True,
                           capture_output=True, text=True).stdout.strip()
    assert int(endbr or 0) > 1000, f"only {endbr} endbr64 landing pads: built without -fcf-protection?"
    notes = run(["readelf", "-n", binary]).stdout
    assert "IBT" not in notes and "SHSTK" not in notes, \
        "the binary is marked CET-ready now: update README.md's CET sentence\n" + notes


def test_lintian_and_rpmlint_report_nothing(packages):
    deb, rpm = packages
    r = run(["lintian", "--fail-on", "error,warning", deb])
    findings = [line for line in r.stdout.splitlines() if re.match(r"^[EW]: ", line)]
    assert r.returncode == 0 and not findings, r.stdout + r.stderr
    r = run(["rpmlint", "-c", os.path.join(lab.ROOT, "packaging", "rpmlint.toml"), rpm])
    assert "0 errors, 0 warnings" in r.stdout, r.stdout + r.stderr


def test_systemd_accepts_the_unit_and_its_hardening(packages, tmp_path):
    unit_text = open(os.path.join(lab.ROOT, "packaging", "tunneld@.service")).read()
    for line in ("Type=notify", "Restart=on-failure", "ExecReload=/usr/bin/tunneld reload --peer /etc/tunneld/%i.yaml", "User=tunneld",
                 "AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
                 "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadOnlyPaths=/etc/tunneld", "ExecStartPre=+/usr/bin/tunneld firewall apply --peer /etc/tunneld/%i.yaml", "ProtectHome=yes", "PrivateTmp=yes",
                 "PrivateDevices=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
                 "SystemCallFilter=@system-service", "WatchdogSec=30s",
                 "ExecStart=/usr/bin/tunneld --peer /etc/tunneld/%i.yaml"):
        assert line in unit_text.splitlines(), line
    # systemd-analyze checks that ExecStart exists: show it the packaged binary at
    # /usr/bin/tunneld through an overlay in a private mount namespace (the host's
    # /usr/bin is not touched).
    upper, work, units = tmp_path / "upper", tmp_path / "work", tmp_path / "units"
    for d in (upper, work, units):
        d.mkdir()
    shutil.copy(os.path.join(BUILD, "tunneld"), upper / "tunneld")
    shutil.copy(os.path.join(lab.ROOT, "packaging", "tunneld@.service"), units / "tunneld@standby.service")
    script = (f"mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={upper},workdir={work} /usr/bin && "
              f"systemd-analyze verify --man=no {units}/tunneld@standby.service")
    r = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    # The check can fail: a broken copy of the unit is reported.
    (units / "tunneld@standby.service").write_text(unit_text.replace("Type=notify", "Type=notfiy"))
    r = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])
    assert "Failed to parse service type" in r.stderr


def test_install_run_remove_and_purge_in_a_clean_debian_12_root(packages):
    import debroot

    deb, _ = packages
    root = debroot.DebianRoot()
    ns = lab.Netns("debroot")  # what tunneld does in the root stays off the network
    try:
        before = root.files()
        shutil.copy(deb, os.path.join(root.path, "tmp"))
        root.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends "
                 f"/tmp/{os.path.basename(deb)} >/dev/null")
        # Every shared library is there: the binary runs.
        version = root.run("tunneld --version").stdout
        assert version.startswith(f"tunneld {VERSION}\nbuilt with OpenSSL 3.0.") and "running with OpenSSL 3.0." in version
        assert root.run("ldd /usr/bin/tunneld | grep -c 'not found' || true").stdout.strip() == "0"
        # The maintainer scripts' work.
        assert root.run("getent passwd tunneld | cut -d: -f7").stdout.strip() == "/usr/sbin/nologin"
        assert root.run("stat -c '%a %U:%G' /etc/tunneld").stdout.strip() == "750 root:tunneld"
        assert root.run("test ! -e /etc/systemd/system/multi-user.target.wants/tunneld@primary.service && echo none"
                        ).stdout.strip() == "none"  # nothing enabled until configured
        assert root.run("zcat /usr/share/man/man8/tunneld.8.gz | head -1").stdout.startswith(".TH TUNNELD 8")
        # `tunneld check` with the shipped example configs, certificates made in the root.
        root.run("cd /etc/tunneld && tunneld certs init-ca --out /root/ca >/dev/null && "
                 "tunneld certs issue --ca /root/ca --name primary-1 --out /etc/tunneld >/dev/null && "
                 "cp /root/ca/ca.crt /etc/tunneld/ca.crt")
        r = root.run("tunneld check --peer /etc/tunneld/primary.yaml", check=False, netns=ns.name)
        assert "ok    config /etc/tunneld/primary.yaml (node primary-1" in r.stdout, r.stdout + r.stderr
        assert "ok    certificate serial " in r.stdout and "health endpoint on http://127.0.0.1:8766/" in r.stdout
        assert re.search(r"^ok    key exchange \(tls.groups\): X25519, P-256, P-384; X25519MLKEM768 not in OpenSSL 3\.0",
                         r.stdout, re.M), r.stdout
        assert r.returncode == 1  # no postgres and no peer in this root: said, not crashed
        assert "warn  peer standby-1 (peers[].connect) standby.example.net:8765 not reachable yet" in r.stdout, r.stdout
        r = root.run("tunneld check --peer /etc/tunneld/standby.yaml", check=False, netns=ns.name)
        assert "ok    config /etc/tunneld/standby.yaml" in r.stdout, r.stdout + r.stderr

        # An edited config survives a reinstall (conffile) and a remove.
        root.run("echo '# edited by the operator' >> /etc/tunneld/standby.yaml")
        root.run(f"apt-get install -y -qq --reinstall /tmp/{os.path.basename(deb)} >/dev/null")
        assert "edited by the operator" in root.run("cat /etc/tunneld/standby.yaml").stdout
        root.run("apt-get remove -y -qq tunneld >/dev/null")
        assert root.run("test ! -e /usr/bin/tunneld && echo gone").stdout.strip() == "gone"
        assert "edited by the operator" in root.run("cat /etc/tunneld/standby.yaml").stdout
        assert root.run("dpkg-query -W -f='${Status}' tunneld").stdout == "deinstall ok config-files"

        # Purge: tunneld's files, the operator's keys and configs go.
        root.run("apt-get purge -y -qq tunneld >/dev/null")
        assert root.run("dpkg-query -W -f='${Status}' tunneld 2>&1 || true").stdout.strip() in (
            "", "dpkg-query: no packages found matching tunneld")
        after = root.files()
        left = after - before
        # What may remain: the installed dependencies' files, dpkg's and apt's records,
        # the system user (policy: never removed), the root's own /root/ca, and /tmp.
        deps = set()
        for pkg in root.run("dpkg-query -W -f='${Package}\\n'").stdout.split():
            for path in root.run(f"dpkg -L {pkg} 2>/dev/null || true").stdout.split():
                deps.add(path)
                deps.add(re.sub(r"^/(lib|lib64|bin|sbin)/", r"/usr/\1/", path))  # Debian 12 is merged-/usr
        allowed = re.compile(r"^/(var/lib/dpkg|var/lib/apt|var/cache|var/log|etc/(passwd|group|shadow|gshadow)-?$"
                             r"|etc/ld\.so\.cache$|root/ca|var/lib/systemd/deb-systemd-helper|etc/apt)")
        stray = sorted(p for p in left if p not in deps and not allowed.match(p)
                       and not any(d.startswith(p + "/") for d in deps))
        assert stray == [], stray
        assert not any("tunneld" in p for p in left if not p.startswith(("/var/lib/dpkg", "/root/ca"))), \
            sorted(p for p in left if "tunneld" in p)
        assert root.run("getent passwd tunneld >/dev/null && echo kept").stdout.strip() == "kept"
    finally:
        ns.delete()
        root.delete()


def test_rpm_scriptlets_install_upgrade_and_erase_in_a_scratch_root(packages, tmp_path):
    """The .rpm's scriptlets for real, with this machine's rpm and --root: a
    Debian 12 minbase root gives them /bin/sh, getent, groupadd and useradd
    (what shadow-utils gives on RHEL). --nodeps, because that root's libraries
    are dpkg's, not in an rpm database: the Requires are held to the ABI
    contract by test_abi_contract.py instead. Not exercised here: the
    `systemctl daemon-reload`/`try-restart` branches (no systemd runs in a
    chroot; the .deb's identical branches run under a booted systemd in
    test_systemd.py) and dnf's resolution of the Requires on a real RHEL."""
    import debroot

    _, rpm = packages
    r = run(["cpack", "-G", "RPM", "-B", str(tmp_path), "-D", "CPACK_PACKAGE_VERSION=0.1.1"], cwd=BUILD)
    assert r.returncode == 0, r.stdout + r.stderr
    newer = str(next(tmp_path.glob("tunneld-*.rpm")))  # (named by the configured version)
    root = debroot.DebianRoot()
    try:
        def rpm_cmd(*args):
            r = run(["rpm", "--root", root.path, *args])
            assert r.returncode == 0, r.stdout + r.stderr
            return r.stdout

        rpm_cmd("--initdb")
        rpm_cmd("-i", "--nodeps", rpm)
        # %pre made the system user, %post the directory's owner and mode.
        assert root.run("getent passwd tunneld | cut -d: -f6,7").stdout.strip() == "/:/sbin/nologin"
        assert root.run("getent group tunneld >/dev/null && echo yes").stdout.strip() == "yes"
        assert root.run("stat -c '%a %U:%G' /etc/tunneld").stdout.strip() == "750 root:tunneld"
        assert root.run("test -x /usr/bin/tunneld && echo yes").stdout.strip() == "yes"
        assert rpm_cmd("-q", "tunneld").strip() == "tunneld-0.1.0-1.x86_64"

        # An operator's edit survives an upgrade (%config(noreplace)); the user is not made twice.
        root.run("echo '# edited by the operator' >> /etc/tunneld/standby.yaml")
        rpm_cmd("-U", "--nodeps", newer)
        assert rpm_cmd("-q", "tunneld").strip() == "tunneld-0.1.1-1.x86_64"
        assert "edited by the operator" in root.run("cat /etc/tunneld/standby.yaml").stdout
        assert root.run("grep -c '^tunneld:' /etc/passwd").stdout.strip() == "1"
        assert root.run("stat -c '%a %U:%G' /etc/tunneld").stdout.strip() == "750 root:tunneld"

        # Erase: %preun/%postun with $1 = 0; the edited config is kept as .rpmsave, the user stays.
        rpm_cmd("-e", "tunneld")
        assert root.run("test ! -e /usr/bin/tunneld && echo gone").stdout.strip() == "gone"
        assert "edited by the operator" in root.run("cat /etc/tunneld/standby.yaml.rpmsave").stdout
        assert root.run("test ! -e /etc/tunneld/primary.yaml && echo gone").stdout.strip() == "gone"
        assert root.run("getent passwd tunneld >/dev/null && echo kept").stdout.strip() == "kept"
    finally:
        root.delete()
