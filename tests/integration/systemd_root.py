"""A Debian 12 root booted with systemd as PID 1 in a container
(systemd-nspawn --register=no --keep-unit -b), in a network namespace of its
own, driven with nsenter into the container's PID 1 namespaces. The root is
made once with debootstrap (systemd, systemd-sysv, dbus, python3 and nftables
included, since the container has no route to a mirror), cached as a tarball
under /var/cache/tunneld-tests, and unpacked fresh for every boot. Packages are
installed into the root with chroot before it boots."""

import os
import shutil
import subprocess
import tempfile

import debroot
import lab

TARBALL = os.path.join(debroot.CACHE, "bookworm-systemd.tar")
INCLUDE = "systemd,systemd-sysv,dbus,python3,nftables,iproute2"
# The same root with PostgreSQL 15 installed (Debian's cluster 15/main made, not
# started) and apt's package lists, for the README walkthrough.
PG_TARBALL = os.path.join(debroot.CACHE, "bookworm-systemd-postgres.tar")
PG_PACKAGES = "postgresql postgresql-15 postgresql-client-15"
# Debian 13 (trixie: systemd 257, OpenSSL 3.5, glibc 2.41), booted the same way;
# openssl's command line for looking at handshakes from inside.
TRIXIE_TARBALL = os.path.join(debroot.CACHE, "trixie-systemd.tar")
TRIXIE_INCLUDE = INCLUDE + ",openssl"


def ensure_tarball():
    return debroot.ensure_tarball(log=lambda *_: None, tarball=TARBALL, include=INCLUDE)


def ensure_trixie_tarball():
    return debroot.ensure_tarball(log=lambda *_: None, tarball=TRIXIE_TARBALL, include=TRIXIE_INCLUDE,
                                  suite="trixie")


def ensure_postgres_tarball():
    if os.path.exists(PG_TARBALL):
        return PG_TARBALL
    root = BootedRoot(None)
    try:
        root.install(f"apt-get update -qq && apt-get install -y -qq --no-install-recommends {PG_PACKAGES} >/dev/null")
        subprocess.run(["tar", "-C", root.path, "-cf", PG_TARBALL + ".tmp", "."], check=True)
        os.rename(PG_TARBALL + ".tmp", PG_TARBALL)
    finally:
        root.delete()
    return PG_TARBALL


class BootedRoot:
    """unpack() -> chroot installs -> boot() -> sh() inside -> delete()."""

    def __init__(self, netns, tarball=TARBALL):
        if tarball == TARBALL:
            ensure_tarball()
        elif tarball == TRIXIE_TARBALL:
            ensure_trixie_tarball()
        self.path = tempfile.mkdtemp(prefix="sysroot-", dir=debroot.CACHE)
        subprocess.run(["tar", "-C", self.path, "-xf", tarball], check=True)
        os.chmod(self.path, 0o755)  # mkdtemp's 0700 would be the container's "/": no user could enter it
        shutil.copy("/etc/resolv.conf", os.path.join(self.path, "etc/resolv.conf"))
        self.netns = netns
        self.nspawn = None
        self.pid1 = None
        self.mounts = []

    def chroot(self, script):
        """Runs `script` in the (not yet booted) root with chroot: for installing packages."""
        for src, dst in (("proc", "proc"), (os.path.join(debroot.ARCHIVES), "var/cache/apt/archives")):
            target = os.path.join(self.path, dst)
            os.makedirs(target, exist_ok=True)
            if src == "proc":
                subprocess.run(["mount", "-t", "proc", "proc", target], check=True)
            else:
                os.makedirs(os.path.join(src, "partial"), exist_ok=True)
                subprocess.run(["mount", "--bind", src, target], check=True)
            self.mounts.append(target)
        try:
            r = subprocess.run(["chroot", self.path, "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "/bin/sh", "-ec", script],
                               capture_output=True, text=True)
        finally:
            for target in reversed(self.mounts):
                subprocess.run(["umount", "-l", target], check=True)
            self.mounts = []
        if r.returncode != 0:
            raise AssertionError(f"chroot: {script}\n{r.stdout}\n{r.stderr}")
        return r

    def install(self, script):
        """chroot(script) with every service start refused (policy-rc.d): a package's
        postinst must not start its daemon in the host's namespaces."""
        policy = os.path.join(self.path, "usr/sbin/policy-rc.d")
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        try:
            return self.chroot(script)
        finally:
            os.unlink(policy)

    def boot(self, timeout=60):
        self.console = open(os.path.join(self.path, "..", os.path.basename(self.path) + ".console"), "wb")
        self.nspawn = subprocess.Popen(
            # (not under `ip netns exec`: it remounts /sys, and with it the cgroup tree nspawn needs)
            ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--capability=CAP_NET_ADMIN",
             f"--network-namespace-path=/run/netns/{self.netns.name}", "-D", self.path, "-b"], stdin=subprocess.DEVNULL, stdout=self.console, stderr=subprocess.STDOUT)

        def container_init():
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.nspawn.returncode}: {self.console_text()}")
            # nspawn's child is the container's PID 1 (systemd).
            for child in self._children(self.nspawn.pid):
                comm = open(f"/proc/{child}/comm").read().strip()
                if comm == "ip":
                    for c in self._children(child):
                        if open(f"/proc/{c}/comm").read().strip() in ("systemd", "init"):
                            return c
                        for cc in self._children(c):
                            if open(f"/proc/{cc}/comm").read().strip() in ("systemd", "init"):
                                return cc
                if comm in ("systemd", "init"):
                    return child
                for c in self._children(child):
                    if open(f"/proc/{c}/comm").read().strip() in ("systemd", "init"):
                        return c
            return None

        self.pid1 = lab.wait_for(container_init, timeout=timeout, interval=0.1, what="the container's systemd")
        lab.wait_for(lambda: self.sh("systemctl is-system-running", check=False).stdout.strip()
                     in ("running", "degraded"), timeout=timeout, interval=0.3, what="multi-user.target")

    @staticmethod
    def _children(pid):
        out = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                out += [int(x) for x in open(f"/proc/{pid}/task/{tid}/children").read().split()]
        except FileNotFoundError:
            pass
        return out

    def console_text(self):
        try:
            return open(self.console.name, errors="replace").read()[-3000:]
        except OSError:
            return ""

    def sh(self, script, check=True, timeout=60):
        """Runs `script` inside the booted container (all of PID 1's namespaces)."""
        r = subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "--",
                            "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8",
                            "SYSTEMD_PAGER=", "/bin/sh", "-ec", script],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"in the container: {script}\nexit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def delete(self):
        if self.nspawn and self.nspawn.poll() is None:
            if self.pid1:
                self.sh("systemctl poweroff --no-block", check=False)
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()  # by the PID we started
                self.nspawn.wait()
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            os.unlink(self.console.name)
        except (OSError, AttributeError):
            pass
