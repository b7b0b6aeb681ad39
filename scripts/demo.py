"""The two-node demo (see scripts/demo.sh): builds a primary and a standby host
as network namespaces, replicates PostgreSQL 15 through a tunneld pair under a
pgbench load, and prints what an operator would check."""

import argparse
import os
import shutil
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import lab  # noqa: E402


def step(text):
    print(f"\033[1m==>\033[0m {text}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    parser.add_argument("--seconds", type=int, default=15, help="pgbench load duration")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = lab.tmpdir("tunneld-demo-")
    rl = lab.ReplicationLab(workdir, keepalive="{idle: 10s, interval: 5s, count: 3, user_timeout: 30s}",
                            firewall=True, health=True)
    try:
        rl.setup(log=step)
        step(f"pgbench write load on the primary for {args.seconds}s (4 clients)")
        result = rl.load(seconds=args.seconds)
        tps = [line for line in result.stdout.splitlines() if line.startswith("tps")]
        step("waiting for the standby to replay everything")
        lab.wait_for(rl.caught_up, timeout=60, what="standby caught up")

        step("rotating both nodes' certificates (tunneld certs rotate) under a second write load")
        opens_before = len(rl.standby_tunnel.log_lines(r"outbound open"))
        load = lab.threading.Thread(target=rl.load, kwargs={"seconds": 4})
        load.start()
        rotations = [lab.tunneld_cli("certs", "rotate", "--peer", t.config_path, "--ca", rl.ca_dir, netns=ns)
                     for t, ns in ((rl.primary_tunnel, rl.primary_ns), (rl.standby_tunnel, rl.standby_ns))]
        load.join()
        lab.wait_for(rl.caught_up, timeout=60, what="standby caught up after rotation")
        kept = len(rl.standby_tunnel.log_lines(r"outbound open")) == opens_before

        print("\n------------------------------------------------------------------ summary")
        print("primary: pg_stat_replication (the walsender sees the local tunnel, not the network):")
        print("  " + rl.primary.sql(
            "SELECT 'application_name=' || application_name || ' client_addr=' || client_addr || "
            "' state=' || state || ' sent_lsn=' || sent_lsn || ' replay_lsn=' || replay_lsn "
            "FROM pg_stat_replication"))
        print("standby: pg_stat_wal_receiver:")
        print("  " + rl.standby.sql(
            "SELECT 'status=' || status || ' sender=' || sender_host || ':' || sender_port "
            "FROM pg_stat_wal_receiver"))
        fp_primary, fp_standby = rl.fingerprint(rl.primary), rl.fingerprint(rl.standby)
        print(f"load: {tps[0] if tps else result.stdout.strip()[-200:]}")
        print(f"data: primary  {fp_primary}")
        print(f"      standby  {fp_standby}")
        print("      -> " + ("EQUAL" if fp_primary == fp_standby else "DIFFERENT (this is a bug)"))
        print("certificate rotation under load:")
        for r in rotations:
            for line in (r.stdout + r.stderr).strip().splitlines():
                print("  " + line)
        print("  -> replication connection " + ("KEPT (no reconnect)" if kept else "reconnected"))
        direct = rl.direct_replication_attempt()
        refusal = (direct.stderr.strip().splitlines() or ["(no error?)"])[-1]
        print(f"direct replication from the standby host to {lab.PRIMARY_ADDR}:5432 (bypassing the tunnel):")
        how = "dropped by the guard before postgres saw it" if "timeout" in refusal else "refused by pg_hba.conf"
        print(f"  {how}: {refusal}")
        attempts = {port: rl.outsider_attempt(port) for port in (lab.TLS_PORT, 5432)}
        print(f"firewall guard on the primary (nft list table inet tunneld):")
        for port, result in attempts.items():
            print(f"  outsider {lab.OUTSIDER_ADDR} -> {lab.PRIMARY_ADDR}:{port}: "
                  + ("CONNECTED (this is a bug)" if result == "connected" else f"blocked ({result}: SYNs dropped)"))
        for line in rl.firewall_show().strip().splitlines():
            print("  " + line)
        blocked = all(r != "connected" for r in attempts.values())
        print("health endpoints (Patroni paths; what HAProxy / monitors read):")
        healthy = True
        for name, t, want in (("primary", rl.primary_tunnel, {"/primary": 200, "/replica": 503}),
                              ("standby", rl.standby_tunnel, {"/primary": 503, "/replica?lag=16MB": 200})):
            codes = {path: t.http(path)[0] for path in ("/readiness", "/health", *want)}
            healthy = healthy and codes == {"/readiness": 200, "/health": 200, **want}
            status = t.status()
            peer = status["peers"][0]
            print(f"  {name}: " + "  ".join(f"{p} {c}" for p, c in codes.items()))
            print(f"    {status['summary']}")
            print(f"    peer {peer['name']}: {peer['state']}, rtt {peer['rtt_ms']['smoothed']:.2f} ms, "
                  f"{peer['summary']}")
        print("tunnel (standby side):")
        for line in rl.standby_tunnel.log_lines(r"outbound (open|close)")[-3:]:
            print("  " + line)
        print("tunnel (primary side):")
        for line in rl.primary_tunnel.log_lines(r"inbound (open|close)")[-3:]:
            print("  " + line)
        print(f"configs: {rl.primary_tunnel.config_path}\n         {rl.standby_tunnel.config_path}")
        print("--------------------------------------------------------------------------")
        if args.keep:
            step("running; press Ctrl-C to stop and clean up")
            while True:
                time.sleep(3600)
        ok = (fp_primary == fp_standby and kept and blocked and healthy
              and all(r.returncode == 0 for r in rotations))
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted")
        return 130
    finally:
        step("cleaning up: stopping tunneld and PostgreSQL, deleting namespaces")
        devnull = open(os.devnull, "w")
        stdout, sys.stdout = sys.stdout, devnull  # Tunneld.stop() prints its log for tests
        try:
            rl.teardown()
        finally:
            sys.stdout = stdout
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
