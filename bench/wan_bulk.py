"""Bulk over the lab WAN (bench/wan.py --bulk): per path, a pg_basebackup of a
database of at least 2 GB, and the catch-up of a standby that was away for 60 s
while pgbench wrote on the primary.

Each path has its own standby on host b (copies of the one bench/wan.py's
Setup made), so one away period per configuration leaves all three the same
backlog: pgbench stops when the away period ends, then the standbys reconnect
one after the other, each through its path, and each is timed until its replay
is within 1 MB. One away period instead of one per path keeps the run under 15
minutes, and every path fetches exactly the same WAL.
"""
import os
import shutil
import statistics
import subprocess
import sys
import time

import lab
from wan_lab import A

PATHS = ("direct", "stunnel", "tunneld")
LOCAL = {"stunnel": 7432, "tunneld": 6432}
BULK_BUFFER = 33554432  # tcp_[rw]mem maximum (32 MiB: 1 Gbit/s at 100 ms needs 12.5 MB)
WITHIN = 1 << 20  # caught up: replay within 1 MB of the primary


def endpoint(path):
    """(host, port) host b's walreceiver or pg_basebackup dials for `path`."""
    return (A, 5432) if path == "direct" else ("127.0.0.1", LOCAL[path])


def conninfo(path):
    host, port = endpoint(path)
    return f"host={host} port={port} user=postgres sslmode=disable"


def lags(s):
    """{application_name: bytes the replay is behind the primary's WAL} of the connected standbys."""
    out = s.primary.sql("SELECT application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) "
                        "FROM pg_stat_replication", check=False)
    rows = [line.split("|") for line in out.splitlines()] if out else []
    return {name: float(lag) if lag else float("inf") for name, lag in rows}


def point(standby, path, name):
    """The standby's walreceiver to `path` ("" = nowhere), as application `name`, without waiting."""
    info = f"{conninfo(path)} application_name={name}" if path else ""
    standby.sql(f"ALTER SYSTEM SET primary_conninfo = '{info}'")
    standby.sql("SELECT pg_reload_conf()")


def standbys_per_path(s, workdir):
    """{path: (Postgres, application name)}: s.standby for direct, copies of it for the tunnels."""
    s.standby.stop()
    with open(os.path.join(s.standby.data, "postgresql.conf"), "a") as f:
        # A reconnect is timed from the conninfo change: the walreceiver starts
        # within 0.1 s of it instead of up to 1 s.
        f.write("\nwal_retrieve_retry_interval = 100ms\n")
    out = {"direct": (s.standby, "bulk-direct")}
    for i, path in enumerate(PATHS[1:], start=1):
        pg = lab.Postgres(os.path.join(workdir, f"standby-{path}"), 5432 + i, s.wan.b)
        subprocess.run(["cp", "-a", s.standby.data, pg.data], check=True)
        with open(os.path.join(pg.data, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {pg.port}\nunix_socket_directories = '{pg.dir}'\ncluster_name = '{path}'\n")
        s.extra_standbys.append(pg)
        out[path] = (pg, f"bulk-{path}")
    for path, (pg, name) in out.items():
        pg.start()
        point(pg, "direct", name)
    lab.wait_for(lambda: len([v for v in lags(s).values() if v < WITHIN]) == len(PATHS), timeout=300,
                 interval=0.5, what="three standbys streaming")
    return out


def basebackup_seconds(s, path):
    """pg_basebackup of the whole cluster from host b through `path`, the tar to
    a byte counter (-X none: the data files alone). Returns (bytes, seconds)."""
    t0 = time.monotonic()
    r = lab.as_postgres(["sh", "-c", f"{lab.PG_BIN}/pg_basebackup -d '{conninfo(path)}' "
                         "-D - -Ft -X none -c fast --no-manifest | wc -c"], netns=s.wan.b, timeout=3600)
    return int(r.stdout.split()[0]), time.monotonic() - t0


def catch_ups(s, standbys, order, away, load_clients=2):
    """Every standby disconnected for `away` seconds while pgbench writes on the
    primary; then, with the load stopped, each reconnected through its path in
    `order`: {path: seconds until its replay is within 1 MB}, and the WAL each had
    to fetch (bytes, the same for all)."""
    for path, (pg, name) in standbys.items():
        point(pg, "", name)
    lab.wait_for(lambda: not lags(s), timeout=30, interval=0.2, what="the walreceivers gone")
    start_lsn = s.primary.sql("SELECT pg_current_wal_lsn()")
    lab.as_postgres(["pgbench", "-h", s.primary.dir, "-p", "5432", "-U", "postgres", "-n", "-N",
                     "-c", str(load_clients), "-T", str(int(away))], netns=s.wan.a, timeout=away + 120)
    behind = float(s.primary.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')"))
    seconds = {}
    for path in order:
        pg, name = standbys[path]
        t0 = time.monotonic()
        point(pg, path, name)
        lab.wait_for(lambda: lags(s).get(name, float("inf")) < WITHIN, timeout=1800, interval=0.1,
                     what=f"{name} back within 1 MB via {path}")
        seconds[path] = time.monotonic() - t0
    return seconds, behind


def bulk_run(s, workdir, scale, away, rounds, rtts=(20, 100)):
    """pg_basebackup of a pgbench database of `scale` and catch-up after `away`
    seconds disconnected, per path, at each of `rtts` with 0% and 0.5% loss."""
    # The socket buffer maxima the README recommends for long-haul links, in the
    # lab's two hosts only (net.ipv4.tcp_[rw]mem are per network namespace):
    # with Debian's 4 MiB tcp_wmem every path stalls at ~2 MB in flight.
    for ns in (s.wan.a, s.wan.b):
        ns.exec(["sysctl", "-qw", f"net.ipv4.tcp_wmem=4096 16384 {BULK_BUFFER}",
                 f"net.ipv4.tcp_rmem=4096 131072 {BULK_BUFFER}"])
    s.wan.start_bridge(1)
    s.wan.set_loss(0)
    s.primary.sql("ALTER SYSTEM SET synchronous_standby_names = ''")  # the load must not wait for them
    s.primary.sql("ALTER SYSTEM SET max_wal_size = '4GB'")
    s.primary.sql("ALTER SYSTEM SET wal_keep_size = '12GB'")  # the waiting standbys' WAL stays
    s.primary.sql("SELECT pg_reload_conf()")
    t0 = time.monotonic()
    lab.as_postgres(["pgbench", "-h", s.primary.dir, "-p", "5432", "-U", "postgres", "-i", "-q",
                     "-s", str(scale), "-I", "dtGp"], netns=s.wan.a, timeout=3600)
    size = int(s.primary.sql("SELECT sum(pg_database_size(datname)) FROM pg_database"))
    lab.wait_for(lambda: all(v < WITHIN for v in lags(s).values()) and lags(s), timeout=1800, interval=0.5,
                 what="the standby caught up with the load")
    standbys = standbys_per_path(s, workdir)
    print(f"wan bulk: {size / 1e9:.2f} GB of databases made, replicated and copied to one standby per path "
          f"in {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    rows, turn = [], 0
    for rtt in rtts:
        for loss in (0.0, 0.005):
            s.wan.start_bridge(rtt)
            s.wan.set_loss(loss)
            ping_rtt, _, _ = s.wan.ping(count=20, interval=0.05)
            results = {p: [] for p in PATHS}
            for _ in range(rounds):
                order = PATHS[turn % len(PATHS):] + PATHS[:turn % len(PATHS)]  # no path always first
                turn += 1
                backups = {p: basebackup_seconds(s, p) for p in order}
                catch, behind = catch_ups(s, standbys, order, away)
                for p in PATHS:
                    nbytes, secs = backups[p]
                    results[p].append((nbytes, secs, catch[p], behind))
                    print(f"wan bulk: {rtt} ms / {loss:.1%} {p}: base backup {nbytes / 1e9:.2f} GB in "
                          f"{secs:.1f} s; {behind / 1e6:.0f} MB behind after {away:g} s away, "
                          f"caught up in {catch[p]:.1f} s", file=sys.stderr, flush=True)
            rows.append((rtt, loss, ping_rtt, results))
    return size, rows


def print_bulk(size, rows, away, rounds, elapsed):
    print()
    print(f"Bulk over a lab WAN: pg_basebackup (-Ft -X none, to a byte counter) of {size / 1e9:.2f} GB, then "
          f"catch-up of one standby per path after all were away {away:g} s under pgbench (-N, 2 clients), the "
          f"same WAL for each; {rounds} round(s), paths interleaved; libpq sslmode=disable on every path (direct "
          f"= plain TCP); tcp_wmem/tcp_rmem max {BULK_BUFFER >> 20} MiB on both hosts; {elapsed:.0f} s total")
    print("| rtt / loss each way (ping) | path | base backup MB/s | vs direct | vs stunnel "
          "| WAL behind MB | catch-up s | catch-up vs direct | catch-up vs stunnel |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rtt, loss, ping_rtt, results in rows:
        def med(p, f):
            return statistics.median(f(x) for x in results[p])
        rate = {p: med(p, lambda x: x[0] / x[1] / 1e6) for p in PATHS}
        catch_rate = {p: med(p, lambda x: x[3] / x[2] / 1e6) for p in PATHS}
        for p in PATHS:
            print(f"| {rtt} ms / {loss:.1%} ({ping_rtt:.1f} ms) | {p} | {rate[p]:.1f} | "
                  f"{rate[p] / rate['direct']:.2f}x | {rate[p] / rate['stunnel']:.2f}x | "
                  f"{med(p, lambda x: x[3]) / 1e6:.0f} | {med(p, lambda x: x[2]):.1f} | "
                  f"{catch_rate[p] / catch_rate['direct']:.2f}x | {catch_rate[p] / catch_rate['stunnel']:.2f}x |")


def main(Setup, args):
    workdir = lab.tmpdir("tunneld-wan-bench-")
    started = time.monotonic()
    rounds = 1 if args.quick else max(1, args.rounds // 3)
    s = Setup(workdir)
    try:
        size, rows = bulk_run(s, workdir, args.scale, args.away, rounds, tuple(args.rtt or (20, 100)))
    finally:
        s.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
    print_bulk(size, rows, args.away, rounds, time.monotonic() - started)
