#!/usr/bin/env python3
"""The layering README.md ("Code layout") describes, checked.

1. Includes: each folder includes only tunneld headers of the folders below it
   (plus the dependency-free headers named below), and only the third-party
   headers it is allowed (config/ no Asio or OpenSSL; nothing but health/ and
   app/ sees Beast, libpq or libsystemd).
2. Links: from the build's target graph (cmake --graphviz), the tunneld_*
   libraries form no cycle, and certs/ and firewall/ reach neither Beast,
   libpq nor libsystemd.

Usage: scripts/check_layers.py [--graph] [BUILD_DIR]   (default build/; --graph prints
which folders each folder includes)
"""
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Headers with no dependencies of their own, usable from any folder.
PURE = {"tunneld/error.hpp", "tunneld/c_ptr.hpp"}
# folder -> tunneld folders whose headers it may include (its own always).
# base/ is the ground floor: the vocabulary (close reasons, handshake failures,
# printable text) every floor speaks.
BASE = "tunneld/base"
MAY_INCLUDE = {
    BASE: set(),
    "tunneld/config": {BASE},
    "tunneld/net": {BASE, "tunneld/config"},
    "tunneld/tls": {BASE, "tunneld/config", "tunneld/net"},
    "tunneld/relay": {BASE, "tunneld/config", "tunneld/net", "tunneld/tls"},
    "tunneld/health": {BASE, "tunneld/config", "tunneld/net", "tunneld/tls", "tunneld/relay"},
    "tunneld/route": {BASE, "tunneld/config", "tunneld/net", "tunneld/tls", "tunneld/relay",
                      "tunneld/health"},
    "tunneld/app": {BASE, "tunneld/config", "tunneld/net", "tunneld/tls", "tunneld/relay",
                    "tunneld/health", "tunneld/route", "certs", "firewall"},
    "certs": {BASE, "tunneld/config", "tunneld/net", "tunneld/tls"},
    "firewall": {BASE, "tunneld/config", "tunneld/net"},
}
HEAVY = {
    "asio": re.compile(r"<boost/asio"),
    "openssl": re.compile(r"<openssl/"),
    "beast": re.compile(r"<boost/(beast|url)"),
    "libpq": re.compile(r"<libpq"),
    "systemd": re.compile(r"<systemd/"),
}
FORBIDDEN = {
    BASE: {"asio", "openssl", "beast", "libpq", "systemd"},
    "tunneld/config": {"asio", "openssl", "beast", "libpq", "systemd"},
    "tunneld/net": {"beast", "libpq", "systemd"},
    "tunneld/tls": {"beast", "libpq", "systemd"},
    "tunneld/health": {"systemd"},
    "tunneld/relay": {"beast", "libpq", "systemd"},
    "tunneld/route": {"beast", "libpq", "systemd"},
    "tunneld/app": set(),
    "certs": {"beast", "libpq", "systemd"},
    "firewall": {"beast", "libpq", "systemd"},
}
# Files that must stay free of Asio and OpenSSL (issue 12's check).
LIGHT = [re.compile(r"tunneld/health/routes\.[ch]pp"), re.compile(r"tunneld/config/")]


def folder_of(rel):
    for f in sorted(MAY_INCLUDE, key=len, reverse=True):
        if rel.startswith(f + "/"):
            return f
    return None


EDGES = {}  # folder -> folders it includes, as found


def check_includes():
    problems = []
    for path in sorted(list((ROOT / "tunneld").rglob("*.[ch]pp")) + list((ROOT / "certs").glob("*.[ch]pp"))
                       + list((ROOT / "firewall").glob("*.[ch]pp"))):
        rel = path.relative_to(ROOT).as_posix()
        folder = folder_of(rel)
        if folder is None:
            continue  # tunneld/*.hpp|cpp at the top: pch, asio/beast impl, pure headers
        text = path.read_text()
        for n, line in enumerate(text.splitlines(), 1):
            m = re.match(r'\s*#\s*include\s+"([^"]+)"', line)
            if m:
                inc = m.group(1)
                if inc in PURE or inc.startswith(folder + "/"):
                    continue
                target = folder_of(inc)
                if target:
                    EDGES.setdefault(folder, set()).add(target)
                if target is None or target not in MAY_INCLUDE[folder]:
                    problems.append(f"{rel}:{n}: {folder}/ may not include \"{inc}\"")
                continue
            for name, rx in HEAVY.items():
                if rx.search(line) and line.lstrip().startswith("#"):
                    if name in FORBIDDEN[folder] or (
                            name in ("asio", "openssl") and any(r.match(rel) for r in LIGHT)):
                        problems.append(f"{rel}:{n}: {folder}/ may not include {name} ({line.strip()})")
    return problems


def check_links(build):
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["cmake", f"--graphviz={tmp}/deps.dot", str(build)], check=True,
                       stdout=subprocess.DEVNULL, cwd=tmp)
        edges = {}
        for f in pathlib.Path(tmp).glob("deps.dot.tunneld_*"):
            if f.name.endswith(".dependers"):
                continue
            text = f.read_text()
            names = set(re.findall(r'label = "([^"]+)"', text))
            target = f.name[len("deps.dot."):]
            edges[target] = names - {target}
            if target in ("tunneld_certs", "tunneld_firewall"):
                for bad in ("tunneld_beast", "PkgConfig::LIBPQ", "PkgConfig::SYSTEMD"):
                    if bad in names:
                        problems.append(f"{target} links {bad}")
        for t, deps in edges.items():
            for d in deps:
                if d.startswith("tunneld_") and t in edges.get(d, set()):
                    if t < d:
                        problems.append(f"{t} and {d} link each other (a cycle)")
        if not edges:
            problems.append("cmake --graphviz listed no tunneld_* targets")
    return problems


def check_graph():
    """No two folders include each other, whatever MAY_INCLUDE says."""
    return [f"{a}/ and {b}/ include each other" for a in EDGES for b in EDGES.get(a, ())
            if a < b and a in EDGES.get(b, ())]


def print_graph():
    for folder in sorted(EDGES, key=lambda f: len(MAY_INCLUDE.get(f, ()))):
        print(f"  {folder}/ -> " + ", ".join(sorted(d + "/" for d in EDGES[folder])))


def main():
    args = [a for a in sys.argv[1:] if a != "--graph"]
    build = pathlib.Path(args[0] if args else ROOT / "build")
    problems = check_includes() + check_graph() + check_links(build.resolve())
    if "--graph" in sys.argv:
        print_graph()
    for p in problems:
        print("layers:", p)
    if problems:
        print(f"layers: {len(problems)} problem(s); see README.md, 'Code layout'")
        return 1
    print("layers: includes and links follow README.md's code layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
