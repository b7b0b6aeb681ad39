"""Synchronous replication over a lab WAN (tests/integration/wan_lab.py):
PostgreSQL 15 primary on host a, its one synchronous standby on host b, the
standby's walreceiver reaching the primary by direct TCP, through an stunnel4
mTLS pair, or through a tunneld pair. For each round trip and loss rate, a
single client commits small transactions in a loop on the primary; every commit
waits for the standby's flush, so its latency is one WAN round trip plus what
the path adds. Paths are interleaved round by round (these machines are shared
and noisy); the table gives medians over rounds, with the spread.

    bench/wan.sh [--quick] [--rounds N] [--seconds S]
    bench/wan.sh --bulk [--scale N] [--away S]   pg_basebackup and catch-up throughput
    bench/wan.sh --keepalive MINUTES             the shipped keepalive under loss, then a partition
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import lab  # noqa: E402
import wan_lab  # noqa: E402
from wan_lab import A, B  # noqa: E402

import wan_bulk  # noqa: E402  (bench/, this script's own folder)
from wan_bulk import LOCAL, PATHS  # noqa: E402

LOOP = r"""
import json, sys, time, psycopg2
conn = psycopg2.connect(host=sys.argv[1], port=5432, user="postgres", dbname="postgres")
conn.autocommit = True
c = conn.cursor()
lat, end = [], time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    t = time.perf_counter()
    c.execute("INSERT INTO commits (at) VALUES (now())")
    lat.append((time.perf_counter() - t) * 1000)
lat.sort()
print(json.dumps({"n": len(lat), "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))]}))
"""


def shipped_keepalive():
    """The keepalive line of the shipped example configs (configs/standby.yaml)."""
    for line in open(os.path.join(lab.ROOT, "configs", "standby.yaml")):
        if line.startswith("keepalive:"):
            return line
    raise RuntimeError("configs/standby.yaml has no keepalive line")


class Setup:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs, self.tunnels, self.extra_standbys = [], [], []
        self.primary = self.standby = None
        self.wan = wan_lab.Wan(rtt_ms=20, label="bw").setup()
        try:
            self._setup(workdir)
        except BaseException:
            self.teardown()
            raise

    def _setup(self, workdir):
        ca = lab.CA(os.path.join(workdir, "ca"))
        self.ca = ca
        # Primary on a, listening on its WAN address too (for the direct path).
        self.primary = lab.Postgres(os.path.join(workdir, "primary"), 5432, self.wan.a)
        self.primary.initdb()
        with open(os.path.join(self.primary.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '*'\n")
        with open(os.path.join(self.primary.data, "pg_hba.conf"), "a") as f:
            f.write(f"host replication all {B}/32 trust\nhost all all {B}/32 trust\n")
        self.primary.start()
        self.primary.sql("CREATE TABLE commits (id bigserial PRIMARY KEY, at timestamptz)")
        # tunneld: server on a, client on b.
        s_cert, s_key, _ = ca.issue("server-1", os.path.join(workdir, "s"))
        c_cert, c_key, _ = ca.issue("client-1", os.path.join(workdir, "c"))
        self.tunnels += [
            lab.Tunneld(workdir, "td-server", lab.node_config(
                "server-1", ca.cert_path, s_cert, s_key,
                inbound={"listen": f"{A}:8765", "backend": "127.0.0.1:5432", "allow": ["client-1"]},
                extra=shipped_keepalive()), netns=self.wan.a.name).start(),
            lab.Tunneld(workdir, "td-client", lab.node_config(
                "client-1", ca.cert_path, c_cert, c_key,
                peers=[{"name": "server-1", "connect": f"{A}:8765", "local": f"127.0.0.1:{LOCAL['tunneld']}"}],
                extra=shipped_keepalive()), netns=self.wan.b.name).start()]
        # stunnel4: the same certificates' kind, TLS 1.3, client certificate required.
        common = "foreground = yes\npid =\ndebug = 3\nsslVersionMin = TLSv1.3\n"
        for ns, name, text in (
            (self.wan.a, "server", f"{common}[pg]\naccept = {A}:8443\nconnect = 127.0.0.1:5432\n"
                                   f"cert = {s_cert}\nkey = {s_key}\nCAfile = {ca.cert_path}\nverifyChain = yes\n"
                                   "requireCert = yes\ncheckHost = client-1\n"),
            (self.wan.b, "client", f"{common}[pg]\nclient = yes\naccept = 127.0.0.1:{LOCAL['stunnel']}\n"
                                   f"connect = {A}:8443\ncert = {c_cert}\nkey = {c_key}\nCAfile = {ca.cert_path}\n"
                                   "verifyChain = yes\ncheckHost = server-1\nsni = server-1\n")):
            path = os.path.join(workdir, f"stunnel-{name}.conf")
            with open(path, "w") as f:
                f.write(text)
            log = open(os.path.join(workdir, f"stunnel-{name}.log"), "w")
            self.procs.append(ns.popen(["stunnel4", path], stdout=log, stderr=subprocess.STDOUT))
        # Standby on b: a base backup straight over the (fast, lossless) WAN.
        self.standby = lab.Postgres(os.path.join(workdir, "standby"), 5432, self.wan.b)
        self.wan.start_bridge(1)
        self.standby.basebackup_from(A, 5432)
        with open(os.path.join(self.standby.data, "postgresql.conf"), "a") as f:
            f.write("cluster_name = 'standby'\n")
        self.standby.start()
        # Synchronous only now: before the standby streams every commit would wait.
        lab.wait_for(lambda: self.primary.sql("SELECT count(*) FROM pg_stat_replication") == "1", timeout=60,
                     what="the standby streaming")
        self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
        self.primary.sql("SELECT pg_reload_conf()")

    def use(self, path):
        """Points the standby's walreceiver at `path` and waits until a new
        walsender (stunnel and tunneld both arrive from 127.0.0.1, so the address
        alone cannot tell the old connection from the new) is the primary's
        synchronous standby through it."""
        host, port = wan_bulk.endpoint(path)
        before = self.primary.sql("SELECT pid FROM pg_stat_replication", check=False)
        self.standby.sql(f"ALTER SYSTEM SET primary_conninfo = 'host={host} port={port} user=postgres "
                         f"application_name=standby'")
        self.standby.sql("SELECT pg_reload_conf()")
        want = B if path == "direct" else "127.0.0.1"

        def streaming():
            out = self.primary.sql("SELECT pid, client_addr, state, sync_state FROM pg_stat_replication",
                                   check=False)
            rows = [r.split("|") for r in out.splitlines()] if out else []
            return len(rows) == 1 and rows[0][0] != before and rows[0][1:] == [want, "streaming", "sync"]
        lab.wait_for(streaming, timeout=60, interval=0.2, what=f"the standby streaming via {path}")

    def commit_loop(self, seconds):
        r = lab.as_postgres(["/usr/bin/python3", "-c", LOOP, self.primary.dir, str(seconds)],
                            netns=self.wan.a, timeout=seconds + 120)
        return json.loads(r.stdout)

    def teardown(self):
        for t in self.tunnels:
            t.stop()
        for p in self.procs:
            p.terminate()
            p.wait()
        for pg in self.extra_standbys + [self.standby, self.primary]:
            if pg:
                pg.stop()
        self.wan.teardown()


def conn_id(line):
    """"conn=12" of a tunneld connection log line, or None."""
    return next((w for w in line.split() if w.startswith("conn=")), None)


def open_conns(lines):
    """The connection ids a tunneld log shows open and not yet closed."""
    live = set()
    for line in lines:
        if " open " in line and conn_id(line):
            live.add(conn_id(line))
        elif " close " in line:
            live.discard(conn_id(line))
    return live


def keepalive_run(s, minutes, rtt=100, loss=0.01):
    """Replication through tunneld with the shipped keepalive settings for
    `minutes` at `rtt` ms and `loss` each way under a light write load: no tunnel
    may close. Then a silent partition (the delay line stops forwarding): how long
    until each tunneld closes the dead connection."""
    s.wan.start_bridge(rtt)
    s.wan.set_loss(loss)
    s.use("tunneld")
    receiver = s.standby.sql("SELECT pid FROM pg_stat_wal_receiver")
    logs = [t.log_path for t in s.tunnels]
    before = [len(open(p).read().splitlines()) for p in logs]
    lab.as_postgres(["pgbench", "-h", s.primary.dir, "-p", "5432", "-U", "postgres", "-i", "-s", "1"],
                           netns=s.wan.a)
    bench = s.wan.a.popen(["runuser", "-u", "postgres", "--", "pgbench", "-h", s.primary.dir, "-p", "5432",
                           "-U", "postgres", "-c", "2", "-R", "20", "-T", str(int(minutes * 60)), "-n"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
    out = bench.communicate(timeout=minutes * 60 + 300)[0]
    closes = []
    for p, n in zip(logs, before):
        closes += [l for l in open(p).read().splitlines()[n:] if " close " in l]
    same_receiver = s.standby.sql("SELECT pid FROM pg_stat_wal_receiver") == receiver
    tps = next((l for l in out.splitlines() if l.startswith("tps")), "?")
    # Silent partition: frames vanish, nobody gets a reset. What counts is the
    # close of the replication connection that was open then, not the failed
    # dials of the walreceiver's retries that follow.
    marks = [len(open(p).read().splitlines()) for p in logs]
    live = [open_conns(open(p).read().splitlines()) for p in logs]
    t0 = time.monotonic()
    s.wan.stop_bridge()
    detected, reasons = {}, []
    while len(detected) < len(logs) and time.monotonic() - t0 < 300:
        for p, n, ids in zip(logs, marks, live):
            ended = [l for l in open(p).read().splitlines()[n:] if " close " in l and conn_id(l) in ids]
            if p not in detected and ended:
                detected[p] = time.monotonic() - t0
                reasons.append(ended[0].split("reason=")[1].split()[0])
        time.sleep(0.2)
    s.wan.start_bridge(rtt)
    return {"minutes": minutes, "closes": closes, "same_receiver": same_receiver, "tps": tps,
            "detect": {os.path.basename(p): round(v, 1) for p, v in detected.items()}, "reasons": reasons}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1 round of 4 s (a smoke run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--keepalive", type=float, metavar="MINUTES",
                    help="instead: replication at 100 ms / 1%% loss for MINUTES with the shipped keepalive "
                         "settings, then a silent partition")
    ap.add_argument("--bulk", action="store_true",
                    help="instead: pg_basebackup and catch-up throughput (a separate run, about 14 min)")
    ap.add_argument("--scale", type=int, default=150, help="--bulk: pgbench scale (150 = 2.2 GB)")
    ap.add_argument("--away", type=float, default=60.0, help="--bulk: seconds the standby is disconnected")
    ap.add_argument("--rtt", type=int, action="append", help="--bulk: only this round trip (ms; repeatable)")
    args = ap.parse_args()
    if args.bulk:
        wan_bulk.main(Setup, args)
        return
    if args.keepalive:
        workdir = lab.tmpdir("tunneld-wan-bench-")
        s = Setup(workdir)
        try:
            r = keepalive_run(s, args.keepalive)
        finally:
            s.teardown()
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"Keepalive ({shipped_keepalive().strip()}) at 100 ms rtt, 1% loss each way, "
              f"{r['minutes']:g} min of replication under pgbench ({r['tps']}):")
        print(f"  tunnel closes during the run: {len(r['closes'])}; walreceiver never restarted: "
              f"{r['same_receiver']}")
        for line in r["closes"]:
            print("   ", line)
        print(f"  silent partition detected after: {r['detect']} s (reasons: {', '.join(r['reasons'])})")
        return
    rounds, seconds = (1, 4.0) if args.quick else (args.rounds, args.seconds)
    workdir = lab.tmpdir("tunneld-wan-bench-")
    started = time.monotonic()
    s = Setup(workdir)
    rows = []
    try:
        for rtt in (20, 100):
            for loss in (0.0, 0.005):
                s.wan.start_bridge(rtt)
                s.wan.set_loss(loss)
                ping_rtt, mdev, _ = s.wan.ping(count=20, interval=0.05)
                _, _, measured_loss = s.wan.ping(count=1000, interval=0.002) if loss else (0, 0, 0.0)
                results = {p: [] for p in PATHS}
                for _ in range(rounds):
                    for p in PATHS:
                        s.use(p)
                        results[p].append(s.commit_loop(seconds))
                rows.append((rtt, loss, ping_rtt, measured_loss, results))
                print(f"wan: rtt {rtt} ms (ping {ping_rtt:.2f}), loss {loss:.1%} each way "
                      f"(ping round trips lost {measured_loss:.2%}): done", file=sys.stderr, flush=True)
    finally:
        s.teardown()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"Sync commit over a lab WAN: {rounds} round(s) x {seconds:.0f} s per path, interleaved; "
          f"medians over rounds (min-max); {os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s total")
    print("| rtt / loss each way (ping rtt, round trips lost) | path | p50 ms | p99 ms | commits/s "
          "| p50 - direct | p99 / stunnel |")
    print("|---|---|---|---|---|---|---|")
    for rtt, loss, ping_rtt, measured_loss, results in rows:
        med = {p: {k: statistics.median(r[k] for r in results[p]) for k in ("p50", "p99", "n")} for p in PATHS}
        for p in PATHS:
            p50s = [r["p50"] for r in results[p]]
            label = f"{rtt} ms / {loss:.1%} ({ping_rtt:.1f} ms, {measured_loss:.2%})"
            print(f"| {label} | {p} | {med[p]['p50']:.2f} ({min(p50s):.2f}-{max(p50s):.2f}) | "
                  f"{med[p]['p99']:.2f} | {med[p]['n'] / seconds:.1f} | "
                  f"{med[p]['p50'] - med['direct']['p50']:+.2f} | "
                  f"{med[p]['p99'] / med['stunnel']['p99']:.2f}x |")


if __name__ == "__main__":
    main()
