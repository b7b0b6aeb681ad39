#!/usr/bin/env python3
"""The layering README.md ("Code layout") describes, checked.

1. Includes: each folder includes only tunneld headers of the folders below it
   (plus the dependency-free headers named below), and only the third-party
   headers it is allowed (config/ no Asio or OpenSSL; nothing but health/ and
   app/ sees Beast, libpq or libsystemd).
2. Links: from the build's target graph (cmake --graphviz), the tunneld_*
   libraries form no cycle, and certs/ and firewall/ reach neither Beast,
   libpq nor libsystemd.

Usage: scripts/check_layers.py [BUILD_DIR]   (default build/)
"""
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Headers with no dependencies of their own, usable from any folder.
PURE = {
    "tunneld/error.hpp", "tunneld/c_ptr.hpp", "tunneld/printable.hpp", "tunneld/check_line.hpp",
    "tunneld/relay/outcome.hpp", "tunneld/tls/handshake_failure.hpp",
    "tunneld/tls/openssl_ptr.hpp", "tunneld/health/probe_state.hpp",
}
# folder -> tunneld folders whose headers it may include (its own always).
MAY_INCLUDE = {
    "tunneld/config": set(),
    "tunneld/net": {"tunneld/config"},
    "tunneld/tls": {"tunneld/config", "tunneld/net"},
    "tunneld/health": {"tunneld/config", "tunneld/net", "tunneld/tls"},
    "tunneld/relay": {"tunneld/config", "tunneld/net", "tunneld/tls", "tunneld/health"},
    "tunneld/app": {"tunneld/config", "tunneld/net", "tunneld/tls", "tunneld/health",
                    "tunneld/relay", "certs", "firewall"},
    "certs": {"tunneld/config", "tunneld/tls"},
    "firewall": {"tunneld/config", "tunneld/net"},
}
HEAVY = {
    "asio": re.compile(r"<boost/asio"),
    "openssl": re.compile(r"<openssl/"),
    "beast": re.compile(r"<boost/(beast|url)"),
    "libpq": re.compile(r"<libpq"),
    "systemd": re.compile(r"<systemd/"),
}
FORBIDDEN = {
    "tunneld/config": {"asio", "openssl", "beast", "libpq", "systemd"},
    "tunneld/net": {"beast", "libpq", "systemd"},
    "tunneld/tls": {"beast", "libpq", "systemd"},
    "tunneld/health": {"systemd"},
    "tunneld/relay": {"beast", "libpq", "systemd"},
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


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build")
    problems = check_includes() + check_links(build.resolve())
    for p in problems:
        print("layers:", p)
    if problems:
        print(f"layers: {len(problems)} problem(s); see README.md, 'Code layout'")
        return 1
    print("layers: includes and links follow README.md's code layout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
