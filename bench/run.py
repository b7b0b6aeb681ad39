"""Benchmark tunneld against direct TCP, an stunnel4 and an HAProxy mutual-TLS pair, on
loopback, in one run (figures are only comparable within one run: these machines
are shared). Every path is client -> [tunnel client -> tunnel server] -> backend,
with the same certificates, TLS 1.3 and a client certificate for both tunnels."""

import argparse
import statistics
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import lab  # noqa: E402

BENCH = os.path.join(lab.ROOT, "build", "bench", "tunnel_bench")


def tool(*args, timeout=600):
    r = subprocess.run([BENCH, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"tunnel_bench {' '.join(map(str, args))}: {r.stderr}")
    return [float(x) for x in r.stdout.split()]


def cpu_seconds(pids):
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


class Peer:
    """A competing tunnel pair: two processes, each with its config file."""

    def start(self, workdir, kind, configs, argv):
        """Writes each of `configs` ({name: text}) and starts `argv` + [its path]."""
        self.procs = []
        for name, text in configs.items():
            path = os.path.join(workdir, f"{kind}-{name}.conf")
            with open(path, "w") as f:
                f.write(text)
            log = open(os.path.join(workdir, f"{kind}-{name}.log"), "w")
            self.procs.append(subprocess.Popen(argv + [path], stdout=log, stderr=subprocess.STDOUT))
        for port in (self.tls_port, self.local_port):
            lab.wait_for(lambda p=port: _listening(p), what=f"{kind} on {port}")
        self.server_port = self.tls_port

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in self.procs:
            p.terminate()
            p.wait()


class Stunnel(Peer):
    def __init__(self, workdir, ca, backend_port):
        self.tls_port, self.local_port = lab.free_port(), lab.free_port()
        s_cert, s_key, _ = ca.issue("server-1", os.path.join(workdir, "st-server"))
        c_cert, c_key, _ = ca.issue("client-1", os.path.join(workdir, "st-client"))
        common = "foreground = yes\npid =\ndebug = 3\nsslVersionMin = TLSv1.3\n"
        self.start(workdir, "stunnel", {
            "server": f"{common}[pg]\naccept = 127.0.0.1:{self.tls_port}\nconnect = 127.0.0.1:{backend_port}\n"
                      f"cert = {s_cert}\nkey = {s_key}\nCAfile = {ca.cert_path}\nverifyChain = yes\n"
                      "requireCert = yes\ncheckHost = client-1\n",
            "client": f"{common}[pg]\nclient = yes\naccept = 127.0.0.1:{self.local_port}\n"
                      f"connect = 127.0.0.1:{self.tls_port}\ncert = {c_cert}\nkey = {c_key}\n"
                      f"CAfile = {ca.cert_path}\nverifyChain = yes\ncheckHost = server-1\nsni = server-1\n",
        }, ["stunnel4"])
        self.client_cert = (c_cert, c_key)


class Haproxy(Peer):
    """An HAProxy 2.6 mutual-TLS pair in TCP mode: the client side originates TLS
    to the server side with its certificate, SNI and a verified server name; the
    server side requires a client certificate from the CA and checks its CN."""

    def __init__(self, workdir, ca, backend_port):
        self.tls_port, self.local_port = lab.free_port(), lab.free_port()
        pems, issued = {}, {}
        for name in ("server-1", "client-1"):
            cert, key, _ = issued[name] = ca.issue(name, os.path.join(workdir, f"hap-{name}"))
            pems[name] = os.path.join(workdir, f"hap-{name}.pem")
            with open(pems[name], "w") as f:
                f.write(open(cert).read() + open(key).read())
        common = ("global\n  maxconn 4000\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n"
                  "  ssl-default-server-options ssl-min-ver TLSv1.3\n"
                  "defaults\n  mode tcp\n  timeout connect 10s\n  timeout client 1h\n  timeout server 1h\n")
        configs = {
            "server": common + (
                f"frontend tls\n  bind 127.0.0.1:{self.tls_port} ssl crt {pems['server-1']} "
                f"ca-file {ca.cert_path} verify required\n"
                "  tcp-request content reject unless { ssl_c_s_dn(CN) -m str client-1 }\n"
                "  default_backend pg\n"
                f"backend pg\n  server pg 127.0.0.1:{backend_port}\n"),
            "client": common + (
                f"frontend local\n  bind 127.0.0.1:{self.local_port}\n  default_backend tunnel\n"
                f"backend tunnel\n  server peer 127.0.0.1:{self.tls_port} ssl crt {pems['client-1']} "
                f"ca-file {ca.cert_path} verify required verifyhost server-1 sni str(server-1)\n"),
        }
        self.start(workdir, "haproxy", configs, ["haproxy", "-db", "-f"])
        self.client_cert = issued["client-1"][:2]


def _listening(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Path:
    """One way from the load tool to the backend: direct, or through a tunnel pair."""

    def __init__(self, name, port, pids=(), server_port=None, client_cert=None):
        self.name, self.port, self.pids = name, port, list(pids)
        self.server_port, self.client_cert = server_port, client_cert
        self.samples = {}

    def add(self, key, value):
        self.samples.setdefault(key, []).append(value)

    def median(self, key, idx=None):
        values = self.samples.get(key)
        if not values:
            return None
        if idx is not None:
            values = [v[idx] for v in values]
        return statistics.median(values)


def measure_all(paths, args, ca_path):
    """Every metric in alternating rounds over all paths, so that the machine's
    drift (these machines are shared) lands on every path alike; medians reported."""
    q = args.quick
    rounds = 3 if q else 7
    mib = 128 if q else 1024
    count = 1000 if q else 3000
    secs = 1 if q else 2
    for r in range(rounds):
        for p in paths:
            cpu0 = cpu_seconds(p.pids) if p.pids else 0
            p.add("tput1", tool("throughput", p.port, 1, mib)[0])
            if p.pids:
                p.add("cpu_per_gib", (cpu_seconds(p.pids) - cpu0) / (mib / 1024))
            p.add("tput4", tool("throughput", p.port, 4, mib // 4)[0])
            p.add("rtt1", tool("pingpong", p.port, 1, count))
            p.add("rtt8k", tool("pingpong", p.port, 8192, count))
            p.add("conn_s", tool("connect", p.port, secs)[0])
            if p.server_port:
                p.add("hs_s", tool("handshake", p.server_port, secs, ca_path, *p.client_cert, "server-1")[0])
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    # RSS per idle connection: 500 open connections through each tunnel.
    for p in paths:
        if not p.pids:
            continue
        base = rss_kib(p.pids)
        idle = subprocess.Popen([BENCH, "idle", str(p.port), "500"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        assert idle.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        p.add("rss_per_conn_kib", (rss_kib(p.pids) - base) / 500)
        idle.stdin.close()
        idle.wait()
    return rounds


def fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller transfers and shorter runs")
    ap.add_argument("--baseline", metavar="BINARY",
                    help="also measure a pair of this tunneld binary (say, the previous release) in the "
                         "same rounds, and print tunneld against it")
    args = ap.parse_args()
    workdir = lab.tmpdir("tunneld-bench-")
    procs, tunnels = [], []
    try:
        backend_port = lab.free_port()
        backend = subprocess.Popen([BENCH, "server", str(backend_port)], stdout=subprocess.PIPE, text=True)
        procs.append(backend)
        assert backend.stdout.readline().strip() == "listening"
        ca = lab.CA(os.path.join(workdir, "ca"))
        pair = lab.Pair(workdir, f"127.0.0.1:{backend_port}", ca=ca,
                        extra_server="log_level: warn\nlimits: {max_connections: 2000}\n",
                        extra_client="log_level: warn\nlimits: {max_connections: 2000, max_local_connections: 2000}\n")
        tunnels.append(pair)
        stunnel = Stunnel(workdir, ca, backend_port)
        tunnels.append(stunnel)
        haproxy = Haproxy(workdir, ca, backend_port)
        tunnels.append(haproxy)
        direct = Path("direct", backend_port)
        tunneld = Path("tunneld", pair.local_port, [pair.client.proc.pid, pair.server.proc.pid],
                       pair.tls_port, pair.client_cert[:2])
        baseline = None
        if args.baseline:
            saved, lab.TUNNELD = lab.TUNNELD, os.path.abspath(args.baseline)
            try:
                old = lab.Pair(os.path.join(workdir, "baseline"), f"127.0.0.1:{backend_port}", ca=ca,
                               extra_server="log_level: warn\nlimits: {max_connections: 2000}\n",
                               extra_client="log_level: warn\nlimits: {max_connections: 2000, max_local_connections: 2000}\n")
            finally:
                lab.TUNNELD = saved
            tunnels.append(old)
            baseline = Path("baseline", old.local_port, [old.client.proc.pid, old.server.proc.pid],
                            old.tls_port, old.client_cert[:2])
        stun = Path("stunnel", stunnel.local_port, stunnel.pids, stunnel.server_port, stunnel.client_cert)
        hap = Path("haproxy", haproxy.local_port, haproxy.pids, haproxy.server_port, haproxy.client_cert)
        rounds = measure_all([direct, tunneld, stun, hap] + ([baseline] if baseline else []), args,
                             ca.cert_path)
    finally:
        for t in tunnels:
            t.stop()
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    report(direct, tunneld, stun, hap, rounds)
    if baseline:
        report_baseline(tunneld, baseline, args.baseline)


def report(d, t, s, h, rounds):
    rows = [
        ("throughput, 1 stream (MiB/s)", "tput1", None, True),
        ("throughput, 4 streams (MiB/s)", "tput4", None, True),
        ("round trip 1 B p50 (us)", "rtt1", 0, False),
        ("round trip 1 B p99 (us)", "rtt1", 1, False),
        ("round trip 8 KiB p50 (us)", "rtt8k", 0, False),
        ("round trip 8 KiB p99 (us)", "rtt8k", 1, False),
        ("new connections/s through the pair", "conn_s", None, True),
        ("full mTLS handshakes/s, server side", "hs_s", None, True),
        ("tunnel CPU seconds per GiB (both ends)", "cpu_per_gib", None, False),
        ("RSS per idle connection (KiB, both ends)", "rss_per_conn_kib", None, False),
    ]

    def get(path, key, idx=None):
        return path.median(key, idx)

    def ratio(a, b):
        return fmt(a / b, 2) + "x" if a and b else "-"

    print(f"\nmedians of {rounds} interleaved rounds; TLS 1.3, P-256 certificates, client certificate required")
    print(f"\n{'metric':42} {'direct':>9} {'tunneld':>9} {'stunnel':>9} {'haproxy':>9} "
          f"{'t/stunnel':>10} {'t/haproxy':>10} {'t/direct':>9}")
    for label, key, idx, _ in rows:
        tv, sv, hv, dv = get(t, key, idx), get(s, key, idx), get(h, key, idx), get(d, key, idx)
        print(f"{label:42} {fmt(dv):>9} {fmt(tv):>9} {fmt(sv):>9} {fmt(hv):>9} "
              f"{ratio(tv, sv):>10} {ratio(tv, hv):>10} {ratio(tv, dv):>9}")
    added = {p.name: get(p, "rtt1", 0) - get(d, "rtt1", 0) for p in (t, s, h)}
    print("\nadded round-trip latency (1 B p50): " + ", ".join(f"{k} {v:.1f} us" for k, v in added.items()))
    print("higher is better for throughput, connections and handshakes; lower for the rest.")

    # The targets of the loopback parity work (issue 15), each met or not.
    best_tput = max(get(s, "tput1") or 0, get(h, "tput1") or 0)
    targets = [
        ("1 B round trip p50 <= 0.9x stunnel", get(t, "rtt1", 0), 0.9 * get(s, "rtt1", 0), False),
        ("1 B round trip p99 <= stunnel", get(t, "rtt1", 1), get(s, "rtt1", 1), False),
        ("RSS per idle connection <= 64 KiB (both ends)", get(t, "rss_per_conn_kib"), 64.0, False),
        ("1-stream throughput >= 1.5x best of stunnel, haproxy", get(t, "tput1"), 1.5 * best_tput, True),
        ("new connections/s >= 1.3x haproxy", get(t, "conn_s"), 1.3 * (get(h, "conn_s") or 0), True),
        ("CPU seconds per GiB <= 0.7x haproxy", get(t, "cpu_per_gib"), 0.7 * (get(h, "cpu_per_gib") or 0), False),
    ]
    print("\ntargets:")
    for label, value, bound, higher in targets:
        met = value is not None and (value >= bound if higher else value <= bound)
        print(f"  {'met    ' if met else 'NOT met'}  {label}: {fmt(value, 2)} (bound {fmt(bound, 2)})")


def report_baseline(t, b, binary):
    print(f"\ntunneld against --baseline {binary} (same rounds):")
    print(f"{'metric':42} {'tunneld':>9} {'baseline':>9} {'ratio':>7}")
    for label, key, idx in (("throughput, 1 stream (MiB/s)", "tput1", None),
                            ("throughput, 4 streams (MiB/s)", "tput4", None),
                            ("round trip 1 B p50 (us)", "rtt1", 0), ("round trip 1 B p99 (us)", "rtt1", 1),
                            ("round trip 8 KiB p50 (us)", "rtt8k", 0),
                            ("new connections/s through the pair", "conn_s", None),
                            ("full mTLS handshakes/s, server side", "hs_s", None),
                            ("tunnel CPU seconds per GiB (both ends)", "cpu_per_gib", None),
                            ("RSS per idle connection (KiB, both ends)", "rss_per_conn_kib", None)):
        tv, bv = t.median(key, idx), b.median(key, idx)
        print(f"{label:42} {fmt(tv):>9} {fmt(bv):>9} {(fmt(tv / bv, 2) + 'x') if tv and bv else '-':>7}")


if __name__ == "__main__":
    main()
