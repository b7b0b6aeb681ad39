"""Start-up refusals with the file, line and fix named (malformed config,
unknown keys, a readable key, a certificate not naming the node, a port in
use), `tunneld check`, --version and --help, and the example configs."""

import os
import socket
import subprocess

import pytest

import lab
from lab import echo_once


def run_tunneld(*args):
    return subprocess.run([lab.TUNNELD, *args], capture_output=True, text=True, timeout=30)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def test_malformed_config_names_file_line_and_column(workdir):
    path = write(os.path.join(workdir, "bad.yaml"), "node: a\ntls: [unclosed\n")
    r = run_tunneld("--peer", path)
    assert r.returncode == 1
    assert f"{path}:3:1: invalid YAML" in r.stderr or f"{path}:2:" in r.stderr, r.stderr


def test_unknown_key_is_an_error_with_position(workdir, ca):
    cert, key, _ = ca.issue("n1", workdir)
    text = lab.node_config("n1", ca.cert_path, cert, key,
                           peers=[{"name": "p", "connect": "127.0.0.1:1", "local": "127.0.0.1:2"}])
    path = write(os.path.join(workdir, "typo.yaml"), text + "keepalive:\n  idel: 30s\n")
    r = run_tunneld("--peer", path)
    assert r.returncode == 1
    line = text.count("\n") + 2
    assert f"typo.yaml:{line}:3: unknown key 'keepalive.idel' (expected one of:" in r.stderr, r.stderr


def test_group_readable_key_is_refused_with_exact_fix(workdir, ca):
    cert, key, _ = ca.issue("n1", workdir)
    os.chmod(key, 0o640)
    path = write(os.path.join(workdir, "n1.yaml"), lab.node_config(
        "n1", ca.cert_path, cert, key,
        peers=[{"name": "p", "connect": "127.0.0.1:1", "local": f"127.0.0.1:{lab.free_port()}"}]))
    r = run_tunneld("--peer", path)
    assert r.returncode == 1
    assert f"(mode 0640): run chmod 600 {key}" in r.stderr, r.stderr


def test_certificate_not_naming_node_is_refused(workdir, ca):
    cert, key, _ = ca.issue("someone-else", workdir)
    path = write(os.path.join(workdir, "n1.yaml"), lab.node_config(
        "n1", ca.cert_path, cert, key,
        peers=[{"name": "p", "connect": "127.0.0.1:1", "local": f"127.0.0.1:{lab.free_port()}"}]))
    r = run_tunneld("--peer", path)
    assert r.returncode == 1
    assert "does not name this node 'n1'" in r.stderr and "SAN DNS:n1" in r.stderr, r.stderr


def test_port_in_use_is_a_clear_error(workdir, ca):
    cert, key, _ = ca.issue("n1", workdir)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    path = write(os.path.join(workdir, "n1.yaml"), lab.node_config(
        "n1", ca.cert_path, cert, key,
        peers=[{"name": "p", "connect": "127.0.0.1:1", "local": f"127.0.0.1:{port}"}]))
    r = run_tunneld("--peer", path)
    holder.close()
    assert r.returncode == 1
    assert f"peers[p].local: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, r.stderr


def test_check_passes_for_a_working_pair_and_fails_with_reasons(workdir, cleanup):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    ok = run_tunneld("check", "--peer", pair.client.config_path)
    assert ok.returncode == 0, ok.stdout
    assert "all checks passed" in ok.stdout
    assert "peer server-1 (peers[].connect)" in ok.stdout

    backend.close()
    os.chmod(pair.server_cert[1], 0o644)
    bad = run_tunneld("check", "--peer", pair.server.config_path)
    assert bad.returncode == 1
    assert f"FAIL  tls.key {pair.server_cert[1]} is group/world accessible" in bad.stdout
    # postgres not up is a warning: tunneld runs without it (a new standby's comes later)
    assert "warn  backend (inbound.backend)" in bad.stdout and "refused" in bad.stdout
    assert "1 problem(s) found" in bad.stdout


def test_version_and_help():
    v = run_tunneld("--version")
    assert v.returncode == 0 and v.stdout.startswith("tunneld ")
    h = run_tunneld("--help")
    assert h.returncode == 0 and "check" in h.stdout and "--peer" in h.stdout


def test_certificates_made_with_the_readme_openssl_commands_work(workdir, cleanup):
    certs = os.path.join(workdir, "openssl")
    subprocess.run(["bash", os.path.join(lab.ROOT, "scripts", "openssl-certs.sh"), certs,
                    "server-1", "client-1"], check=True)
    assert oct(os.stat(os.path.join(certs, "client-1.key")).st_mode & 0o777) == "0o600"
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    tls_port, local_port = lab.free_port(), lab.free_port()
    server = lab.Tunneld(workdir, "server", lab.node_config(
        "server-1", f"{certs}/ca.crt", f"{certs}/server-1.crt", f"{certs}/server-1.key",
        inbound={"listen": f"127.0.0.1:{tls_port}", "backend": backend.address, "allow": ["client-1"]})).start()
    cleanup.append(server.stop)
    client = lab.Tunneld(workdir, "client", lab.node_config(
        "client-1", f"{certs}/ca.crt", f"{certs}/client-1.crt", f"{certs}/client-1.key",
        peers=[{"name": "server-1", "connect": f"127.0.0.1:{tls_port}",
                "local": f"127.0.0.1:{local_port}"}])).start()
    cleanup.append(client.stop)
    with socket.create_connection(("127.0.0.1", local_port), timeout=5) as c:
        assert echo_once(c, b"openssl-made certs") == b"openssl-made certs"


@pytest.mark.skipif(not lab.is_root(), reason="needs root: a network namespace keeps the example hosts' DNS "
                                               "lookups off the real network")
def test_example_configs_parse():
    ns = lab.Netns("examples")  # loopback only: lookups of *.example.net fail at once, nothing leaves
    try:
        for name in ("primary.yaml", "standby.yaml"):
            r = lab.tunneld_cli("check", "--peer", os.path.join(lab.ROOT, "configs", name), netns=ns)
            assert r.stdout.startswith(f"ok    config {lab.ROOT}/configs/{name}"), r.stdout
            assert "ok    firewall: port 5432 open to loopback only" in r.stdout, r.stdout
    finally:
        ns.delete()


def test_check_names_the_process_holding_a_listen_address(workdir, cleanup, ca):
    backend = lab.Backend("echo")
    cleanup.append(backend.close)
    pair = lab.Pair(workdir, backend.address)
    cleanup.append(pair.stop)
    # On the running node: its own listeners are not a problem.
    r = lab.tunneld_cli("check", "--peer", pair.client.config_path)
    assert f"ok    peers[server-1].local 127.0.0.1:{pair.local_port} is held by this node's running tunneld (pid " \
        f"{pair.client.proc.pid})" in r.stdout, r.stdout
    # A config whose local port another program holds.
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    cleanup.append(squatter.close)
    port = squatter.getsockname()[1]
    text = open(pair.client.config_path).read().replace(f"127.0.0.1:{pair.local_port}", f"127.0.0.1:{port}")
    other = os.path.join(workdir, "other.yaml")
    open(other, "w").write(text)
    r = lab.tunneld_cli("check", "--peer", other)
    assert r.returncode == 1
    assert f"FAIL  peers[server-1].local 127.0.0.1:{port} is already in use by python3 (pid {os.getpid()}: " \
        in r.stdout, r.stdout


def test_check_judges_the_key_for_the_daemons_user_and_a_missing_peer_is_not_a_failure(workdir, cleanup, ca):
    """`tunneld check` as root for a daemon that runs as another user: the key
    advice is the one that works for that user, the certificate lines still come,
    and a peer that is not up yet (a first install) is a warning, not a failure."""
    if not lab.is_root():
        pytest.skip("needs root: chown")
    cert, key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
    cfg = os.path.join(workdir, "c.yaml")
    with open(cfg, "w") as f:
        f.write(lab.node_config("client-1", ca.cert_path, cert, key,
                                peers=[{"name": "server-1", "connect": f"127.0.0.1:{lab.free_port()}",
                                        "local": f"127.0.0.1:{lab.free_port()}"}]))
    r = lab.tunneld_cli("check", "--peer", cfg, "--as-user", "nobody")
    assert f"FAIL  tls.key {key} is owned by root, so nobody (the user tunneld runs as) cannot read it: " \
           f"run chown nobody {key}" in r.stdout, r.stdout
    assert "ok    certificate serial " in r.stdout and "certificate expires in 29 days" in r.stdout, r.stdout
    assert r.returncode == 1
    os.chown(key, 65534, 65534)
    r = lab.tunneld_cli("check", "--peer", cfg, "--as-user", "nobody")
    assert f"ok    tls.key {key} is private to nobody" in r.stdout, r.stdout
    assert "warn  peer server-1 (peers[].connect) 127.0.0.1:" in r.stdout and "not reachable yet" in r.stdout
    assert r.returncode == 0, r.stdout
