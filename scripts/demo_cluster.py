"""The cluster demo (scripts/demo.sh --cluster): three PostgreSQL 15 nodes and an
application host, each a network namespace with its own tunneld, on one switch.
Replication and the application use routes. Under a write load the primary's
host dies and standby-1 is promoted; nothing is edited. Prints who streams from
whom before and after, and the measured switch times."""

import argparse
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import lab  # noqa: E402
from cluster_lab import ClusterLab  # noqa: E402


def step(text):
    print(f"\033[1m==>\033[0m {text}", flush=True)


def topology(c, nodes):
    for n in nodes:
        up = c.streaming_from(n)
        role = c.pg[n].sql("SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END",
                           check=False) or "down"
        print(f"    {n:10} {role:8} streams to: {', '.join(up) if up else '-'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", action="store_true", help="(how demo.sh gets here)")
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = lab.tmpdir("tunneld-cluster-demo-")
    c = ClusterLab(workdir, probe_interval="500ms")
    try:
        c.setup(log=step)
        step("who streams from whom")
        topology(c, ("primary-1", "standby-1", "standby-2"))
        r = c.route("app")
        step(f"the app host's route 127.0.0.1:6432 (to primary) -> {r['target']}")

        step("an application writing a row every 50 ms through the app host's route")
        ok, failed, stop = [], [], threading.Event()

        def write():
            while not stop.is_set():
                rc, _ = c.app_sql("INSERT INTO ticks DEFAULT VALUES", timeout=2)
                (ok if rc == 0 else failed).append(time.monotonic())
                time.sleep(0.05)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        time.sleep(3)
        step("primary-1's host dies: its link is cut and postgres killed (-m immediate)")
        c.cut("primary-1")
        lab.as_postgres([lab.PG_BIN + "/pg_ctl", "-D", c.pg["primary-1"].data, "-m", "immediate", "stop"],
                        netns=c.ns["primary-1"], check=False)
        step("promoting standby-1 (SELECT pg_promote()); no tunneld or postgres config is edited")
        promoted = time.monotonic()
        c.pg["standby-1"].sql("SELECT pg_promote(wait => true)")
        lab.wait_for(lambda: c.streaming_from("standby-1") == ["standby2"], timeout=60,
                     what="standby-2 streaming from standby-1")
        to_stream = time.monotonic() - promoted
        lab.wait_for(lambda: any(t > promoted for t in ok), timeout=60, what="a write on the new primary")
        to_write = next(t for t in ok if t > promoted) - promoted
        time.sleep(1)
        stop.set()
        writer.join()
        step("who streams from whom now")
        topology(c, ("standby-1", "standby-2"))
        r = c.route("app")
        step(f"the app host's route -> {r['target']} (last switch: {r['last_switch']['cause']})")
        for line in c.tunnels["standby-2"].log_lines(r"route .* switched"):
            print("    standby-2:", line.split(" ", 2)[2])
        rows = c.pg["standby-1"].sql("SELECT count(*) FROM ticks")
        print(f"\n  promote -> standby-2 streaming from the new primary: {to_stream:.2f} s")
        print(f"  promote -> the application's writes succeed:         {to_write:.2f} s")
        print(f"  writes: {len(ok)} committed ({rows} rows on the new primary), {len(failed)} refused or "
              f"failed while there was no primary")
        if args.keep:
            step("running; Ctrl-C to stop and clean up")
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        step("cleaning up (processes by PID, namespaces)")
        c.teardown()


if __name__ == "__main__":
    main()
