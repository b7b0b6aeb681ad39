"""A clean Debian 12 (or 13) root for package install tests: made once with debootstrap
(minbase) from the mirror this machine's apt already uses, cached as a tarball
under /var/cache/tunneld-tests, and unpacked fresh for every test. Commands run
in it with chroot, inside a network namespace of their own when asked (so
nothing the test runs there reaches the network); only apt reaches the mirror."""

import os
import re
import shutil
import subprocess
import tempfile

CACHE = "/var/cache/tunneld-tests"
TARBALL = os.path.join(CACHE, "bookworm-minbase.tar")
ARCHIVES = os.path.join(CACHE, "apt-archives")  # downloaded .debs, reused between runs


def apt_mirror():
    """The Debian mirror (URI) this machine's apt uses for bookworm's main suite."""
    sources = "/etc/apt/sources.list.d/debian.sources"
    if os.path.exists(sources):
        for stanza in open(sources).read().split("\n\n"):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    for path in ("/etc/apt/sources.list",):
        if os.path.exists(path):
            for line in open(path):
                m = re.match(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
                if m:
                    return m.group(1)
    raise RuntimeError("no bookworm source in this machine's apt configuration")


def ensure_tarball(log=print, tarball=TARBALL, include="", suite="bookworm"):
    """The cached minbase root of `suite` (with the `include` packages, comma-separated),
    made once. Debian's mirror serves trixie (Debian 13) beside bookworm."""
    if os.path.exists(tarball):
        return tarball
    os.makedirs(CACHE, exist_ok=True)
    build = tempfile.mkdtemp(prefix="debroot-", dir=CACHE)
    try:
        log(f"debootstrap --variant=minbase {include} {suite} (cached in {tarball} afterwards)")
        subprocess.run(["debootstrap", "--variant=minbase"] + ([f"--include={include}"] if include else []) +
                       [suite, build, apt_mirror()], check=True, capture_output=True, text=True)
        subprocess.run(["tar", "-C", build, "-cf", tarball + ".tmp", "."], check=True)
        os.rename(tarball + ".tmp", tarball)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return tarball


class DebianRoot:
    """A fresh copy of the cached root; delete() unmounts and removes it."""

    def __init__(self):
        ensure_tarball()
        self.path = tempfile.mkdtemp(prefix="debroot-", dir=CACHE)
        subprocess.run(["tar", "-C", self.path, "-xf", TARBALL], check=True)
        shutil.copy("/etc/resolv.conf", os.path.join(self.path, "etc/resolv.conf"))
        os.makedirs(os.path.join(ARCHIVES, "partial"), exist_ok=True)
        self.mounts = []
        for src, dst, kind in (("proc", "proc", "proc"), (ARCHIVES, "var/cache/apt/archives", "bind")):
            target = os.path.join(self.path, dst)
            os.makedirs(target, exist_ok=True)
            if kind == "proc":
                subprocess.run(["mount", "-t", "proc", "proc", target], check=True)
            else:
                subprocess.run(["mount", "--bind", src, target], check=True)
            self.mounts.append(target)

    def run(self, script, check=True, netns=None):
        """Runs `script` with /bin/sh in the root; with netns (a name), in that namespace."""
        cmd = ["chroot", self.path, "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
               "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C.UTF-8", "/bin/sh", "-ec", script]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"in the Debian root: {script}\nexit {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def files(self):
        """Every path in the root (relative, with a leading /), /proc and apt's caches left out."""
        out = set()
        skip = ("/proc", "/var/cache/apt", "/var/lib/apt/lists", "/var/log", "/tmp", "/run")
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = "/" + os.path.relpath(dirpath, self.path).lstrip(".")
            rel = rel if rel != "/" else ""
            if any((rel + "/").startswith(s + "/") for s in skip):
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                out.add(f"{rel}/{name}")
        return out

    def delete(self):
        for target in reversed(self.mounts):
            # Never remove the tree while something is still mounted in it.
            subprocess.run(["umount", "-l", target], check=True)
        shutil.rmtree(self.path, ignore_errors=True)
