"""The ABI contract of the packages (README.md: Install): the packaged binary
needs at run time only libraries that Debian 12 and 13, Ubuntu 22.04 and 24.04,
RHEL/Rocky/Alma 9 and 10 and Fedora all ship under the same soname, with no
symbol version newer than the oldest of them has (glibc 2.34: RHEL 9; systemd
249: Ubuntu 22.04); the .deb's Depends and the .rpm's Requires name exactly
those. Read off the binary with readelf, not by eye; a binary built the usual
way (dynamic libstdc++, arc4random) is the control that shows the check fails."""

import os
import re
import subprocess
import tempfile

import pytest

import lab

# soname -> the symbol versions the binary may need from it.
GLIBC_MAX = (2, 34)  # RHEL 9
LIBSYSTEMD_MAX = 249  # Ubuntu 22.04
CONTRACT = {
    "libc.so.6": "GLIBC",
    "libm.so.6": "GLIBC",
    "ld-linux-x86-64.so.2": "GLIBC",
    "libssl.so.3": {"OPENSSL_3.0.0"},  # OpenSSL 3.0, the oldest 3.x shipped (Ubuntu 22.04, RHEL 9)
    "libcrypto.so.3": {"OPENSSL_3.0.0"},
    "libpq.so.5": set(),  # unversioned upstream; RHEL's carries RHPRIVATE, which must not be needed
    "libsystemd.so.0": "LIBSYSTEMD",
    "libnftnl.so.11": {"LIBNFTNL_11"},  # libnftnl 1.1 and later
    "libmnl.so.0": {"LIBMNL_1.0", "LIBMNL_1.1", "LIBMNL_1.2"},  # libmnl 1.0.4 everywhere
}
# The .deb's Depends, package by package (alternatives joined by " | ").
DEB_DEPENDS = {"adduser", "libc6", "libssl3 | libssl3t64", "libpq5", "libsystemd0", "libnftnl11", "libmnl0"}
# The .rpm's Requires besides sonames: the scriptlets' shell and useradd, rpm's own features.
RPM_OTHER = {"/bin/sh", "shadow-utils", "rtld(GNU_HASH)", "config(tunneld)"}


def violations(binary):
    """Every way `binary` breaks the contract, as sentences; [] when it keeps it."""
    out = []
    dynamic = subprocess.run(["readelf", "-dW", binary], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^]]+)\]", dynamic)
    for lib in needed:
        if lib not in CONTRACT:
            out.append(f"needs {lib}, which is not in the contract")
    for lib in ("libssl.so.3", "libcrypto.so.3"):
        if lib not in needed:
            out.append(f"does not load {lib}: OpenSSL must stay dynamic for the host's security updates")
    # Version needs, from the .gnu.version_r section: "File: libc.so.6 ... Name: GLIBC_2.34".
    versions = subprocess.run(["readelf", "-VW", binary], capture_output=True, text=True, check=True).stdout
    current = None
    for line in versions.splitlines():
        m = re.search(r"File: (\S+)\s+Cnt:", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if not (m and current):
            continue
        version, rule = m.group(1), CONTRACT.get(current)
        if rule is None:
            continue  # reported as a NEEDED above
        if rule == "GLIBC":
            g = re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", version)
            if not g or (int(g.group(1)), int(g.group(2))) > GLIBC_MAX:
                out.append(f"needs {version} from {current}, newer than GLIBC_2.34 (RHEL 9)")
        elif rule == "LIBSYSTEMD":
            g = re.fullmatch(r"LIBSYSTEMD_(\d+)", version)
            if not g or int(g.group(1)) > LIBSYSTEMD_MAX:
                out.append(f"needs {version} from {current}, newer than systemd 249 (Ubuntu 22.04)")
        elif version not in rule:
            out.append(f"needs {version} from {current}, outside {sorted(rule) or 'no versions'}")
    return out


def newest_glibc(binary):
    versions = subprocess.run(["readelf", "-VW", binary], capture_output=True, text=True, check=True).stdout
    found = {tuple(map(int, v)) for v in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", versions)}
    return "GLIBC_%d.%d" % max(found)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    out = tmp_path_factory.mktemp("pkg")
    r = subprocess.run(["cpack", "-G", "DEB;RPM", "-B", str(out)], cwd=os.path.join(lab.ROOT, "build"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    deb = next(str(p) for p in out.glob("*.deb"))
    rpm = next(str(p) for p in out.glob("*.rpm"))
    tree = out / "tree"
    subprocess.run(["dpkg-deb", "-x", deb, str(tree)], check=True)
    return deb, rpm, str(tree / "usr/bin/tunneld")


def test_the_packaged_binary_keeps_the_contract(packaged):
    _, _, binary = packaged
    assert violations(binary) == []
    dynamic = subprocess.run(["readelf", "-dW", binary], capture_output=True, text=True).stdout
    needed = re.findall(r"\[([^]]+)\]", "\n".join(line for line in dynamic.splitlines() if "(NEEDED)" in line))
    print(f"NEEDED: {' '.join(needed)}\nnewest glibc symbol: {newest_glibc(binary)}\n"
          f"size: {os.path.getsize(binary)} bytes (stripped)")
    assert newest_glibc(binary) <= "GLIBC_2.34"


def test_a_binary_built_the_usual_way_breaks_it(tmp_path):
    """The control: dynamic libstdc++ and glibc 2.36's arc4random are both reported."""
    src = tmp_path / "usual.cpp"
    src.write_text("#include <cstdlib>\n#include <string>\n#include <iostream>\n"
                   "int main(int argc, char**) { std::string s(argc, 'x'); std::cout << s << arc4random(); }\n")
    subprocess.run(["g++", "-O1", "-o", str(tmp_path / "usual"), str(src)], check=True)
    found = violations(str(tmp_path / "usual"))
    assert any("libstdc++.so.6, which is not in the contract" in v for v in found), found
    assert any("GLIBC_2.36 from libc.so.6, newer than GLIBC_2.34" in v for v in found), found
    assert any("does not load libssl.so.3" in v for v in found), found


def test_deb_depends_names_exactly_the_contract_and_agrees_with_dpkg_shlibdeps(packaged):
    deb, _, binary = packaged
    control = subprocess.run(["dpkg-deb", "-f", deb, "Depends", "Recommends"], capture_output=True,
                             text=True, check=True).stdout
    fields = dict(re.findall(r"^(\w+): (.*)$", control, re.M))
    assert fields.get("Recommends") == "nftables", control
    depends = {}
    for item in fields["Depends"].split(","):
        alts = [a.strip() for a in item.split("|")]
        name = " | ".join(re.match(r"\S+", a).group(0) for a in alts)
        depends[name] = alts
    assert set(depends) == DEB_DEPENDS, fields["Depends"]
    # dpkg-shlibdeps (Debian's own reading of the binary, from the libraries'
    # symbols files) asks for nothing the hand-written list does not give.
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(os.path.join(work, "debian"))
        with open(os.path.join(work, "debian", "control"), "w") as f:
            f.write("Source: tunneld\n\nPackage: tunneld\nArchitecture: any\n")
        r = subprocess.run(["dpkg-shlibdeps", "-O", binary], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    wanted = r.stdout.split("=", 1)[1].strip()
    print(f"Depends: {fields['Depends']}\ndpkg-shlibdeps: {wanted}")
    for item in wanted.split(","):
        m = re.match(r"\s*(\S+)(?: \((>=) (\S+)\))?", item)
        pkg, version = m.group(1), m.group(3)
        ours = next((alts for name, alts in depends.items() if pkg in name.split(" | ")), None)
        assert ours, f"dpkg-shlibdeps wants {item.strip()}, Depends lacks {pkg}"
        mine = next(a for a in ours if a.startswith(pkg + " ") or a == pkg)
        if version:
            have = re.search(r"\(>= (\S+)\)", mine)
            assert have, f"{pkg}: dpkg-shlibdeps wants >= {version}, Depends has no version"
            cmp = subprocess.run(["dpkg", "--compare-versions", have.group(1), "ge", version])
            assert cmp.returncode == 0, f"{pkg}: Depends >= {have.group(1)} < dpkg-shlibdeps' {version}"


def test_rpm_requires_name_only_contract_sonames(packaged):
    _, rpm, _ = packaged
    requires = subprocess.run(["rpm", "-qpR", rpm], capture_output=True, text=True, check=True).stdout.split("\n")
    print("Requires:\n" + "\n".join(r for r in requires if r))
    for req in filter(None, (r.strip() for r in requires)):
        if req in RPM_OTHER or req.startswith("rpmlib(") or req.startswith("config(tunneld)"):
            continue
        m = re.fullmatch(r"(\S+?)\(([^)]*)\)\(64bit\)", req)
        assert m, f"Requires {req}: not a soname"
        soname, version = m.group(1), m.group(2)
        assert soname in CONTRACT, f"Requires {req}: {soname} is not in the contract"
        rule = CONTRACT[soname]
        if not version:
            continue
        if rule == "GLIBC":
            assert tuple(map(int, version.split("_")[1].split(".")[:2])) <= GLIBC_MAX, req
        elif rule == "LIBSYSTEMD":
            assert int(version.split("_")[1]) <= LIBSYSTEMD_MAX, req
        else:
            assert version in rule, req
    weak = subprocess.run(["rpm", "-qp", "--recommends", rpm], capture_output=True, text=True).stdout.split()
    assert weak == ["nftables"], weak
