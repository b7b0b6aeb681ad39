"""The running guard's keeper, in namespaces made here: a table changed or
deleted from outside is put back; config management flushing in a loop leaves
it missing only for the short pause (and every signal says so meanwhile); two
daemons sharing a table stop fighting; own transactions are recognised inside
a PID namespace."""

import os
import re
import signal
import time

import pytest

import lab
from firewall_lab import can_connect, guard_config, guard_daemon, listener

pytestmark = pytest.mark.skipif(not lab.is_root(), reason="needs root: network namespaces and nftables")


def test_a_table_changed_or_deleted_from_outside_is_put_back_at_once(site, workdir, ca, cleanup):
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    daemon = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])])
    daemon.start()
    cleanup.append(daemon.stop)
    # Someone lets themselves in by hand: the element goes at once.
    site.host.exec(["nft", "add", "element", "inet", "tunneld", "allow_v4_5432", "{ 10.88.1.2 }"])
    daemon.wait_log(r"firewall: table inet tunneld was changed by nft \(pid \d+\); put back .*\(1 time", timeout=1)
    assert "10.88.1.2" not in site.host.exec(["nft", "list", "set", "inet", "tunneld", "allow_v4_5432"]).stdout
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    # What a reload of nftables.service does.
    site.host.exec(["nft", "flush", "ruleset"])
    daemon.wait_log(r"firewall: table inet tunneld was changed by nft \(pid \d+\); put back .*\(2 time", timeout=1)
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    assert can_connect(site.good, "10.88.2.1", 5432)
    # Another table, and our own SIGHUP refresh, are not "changes" to repair.
    site.host.exec(["nft", "add", "table", "inet", "other"])
    daemon.signal(signal.SIGHUP)
    daemon.wait_log(r"reload \(SIGHUP\)", count=1)
    # A sentinel change by hand: events are handled in order, so when its repair
    # is logged, anything the two above had set off would have been logged first.
    site.host.exec(["nft", "add", "element", "inet", "tunneld", "allow_v4_5432", "{ 10.88.1.3 }"])
    daemon.wait_log(r"was changed by nft \(pid \d+\); put back .*\(3 time", timeout=2)
    assert len(daemon.log_lines(r"was changed by")) == 3


def test_two_daemons_sharing_one_table_stop_fighting_and_say_why(site, workdir, ca, cleanup):
    first = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])]).start()
    cleanup.append(first.stop)
    # A second instance, same table, a different allow list: each start/repair undoes the other.
    text = open(first.config_path).read().replace("127.0.0.1:16432", "127.0.0.1:16442").replace("10.88.2.0/24", "10.88.1.0/24")
    text = text.replace(first.health_address, f"127.0.0.1:{lab.free_port()}")
    second = lab.Tunneld(workdir, "host2", text, netns=site.host.name).start()
    cleanup.append(second.stop)
    rx = r"keeps being changed by tunneld \(pid \d+\) \(5 times in 10 s\); is another tunneld using the same " \
         r"firewall.table\? Repairs paused for 3s"
    lab.wait_for(lambda: first.log_lines(rx) or second.log_lines(rx), timeout=10, what="the fight to be noticed")
    # The fight is over: the pause ends (3 s) with the other daemon's table in
    # place, which is a guard too, so nobody undoes it and nothing restarts.
    both = (first, second)
    tunneld_repairs = lambda: sum(len(d.log_lines(r"was changed by tunneld")) for d in both)
    lab.wait_for(lambda: all(d.log_lines(r"repairs of table inet tunneld resumed") or not d.log_lines(rx) for d in both),
                 timeout=6, what="the pause to end")
    baseline = tunneld_repairs()
    ended = time.monotonic()
    lab.wait_for(lambda: time.monotonic() - ended > 4 or tunneld_repairs() != baseline, timeout=6)
    assert tunneld_repairs() == baseline, "the two daemons are still undoing each other"
    # A pause never leaves the host unguarded: a flush now is put back by one of them.
    site.host.exec(["nft", "flush", "ruleset"])
    lab.wait_for(lambda: site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0,
                 timeout=5, what="the table back after a flush")


def test_six_flushes_in_ten_seconds_leave_no_guard_only_until_the_pause_ends(site, workdir, ca, cleanup):
    """Config management restarting nftables.service in a loop (six `nft flush
    ruleset` 0.4 s apart). The old keeper paused for a minute after five repairs,
    nothing re-checked, and the node stayed unguarded while /readiness said 200,
    /status said applied and STATUS= said "firewall applied"."""
    pg = listener(site.host, 5432)
    cleanup.append(pg.kill)
    daemon = guard_daemon(site, workdir, ca, [(5432, ["10.88.2.0/24"])],
                          inbound={"listen": "0.0.0.0:8765", "backend": "127.0.0.1:5432", "allow": ["x"]})
    daemon.start()
    cleanup.append(daemon.stop)
    assert daemon.http("/readiness")[0] == 200
    table_present = lambda: site.host.exec(["nft", "list", "table", "inet", "tunneld"], check=False).returncode == 0
    for i in range(6):
        if i:
            time.sleep(0.4)  # the pace of the outside loop, not a wait for tunneld
        site.host.exec(["nft", "flush", "ruleset"])
    last_flush = time.monotonic()
    daemon.wait_log(r"keeps being changed by nft \(pid \d+\) \(5 times in 10 s\).*Repairs paused for 3s", timeout=3)
    # While the table is missing every signal says so.
    lab.wait_for(lambda: daemon.http("/readiness")[0] == 503, timeout=2.5, what="/readiness 503 while the table is missing")
    assert not table_present()
    status = daemon.status()["firewall"]
    assert status["applied"] is False and "is missing" in status["error"], status
    assert status["missing"] >= 1
    metrics = daemon.http("/metrics")[2]
    assert re.search(r"^tunneld_firewall_applied\{table=\"tunneld\"\} 0$", metrics, re.M), metrics
    assert re.search(r"^tunneld_firewall_missing_total [1-9]", metrics, re.M), metrics
    lab.wait_for(lambda: "firewall NOT applied" in daemon.poll_notifications(), timeout=3, what="STATUS= says so")
    assert daemon.log_lines(r"warning firewall: table inet tunneld is missing .*nothing is guarded meanwhile")
    # Back within a few seconds of the last flush, and every signal with it.
    lab.wait_for(table_present, timeout=5, what="the table back after the pause")
    back_after = time.monotonic() - last_flush
    assert back_after < 5, back_after
    daemon.wait_log(r"was found missing by the end of the pause; put back")
    lab.wait_for(lambda: daemon.http("/readiness")[0] == 200, timeout=5, what="/readiness 200 again")
    assert daemon.status()["firewall"]["applied"] is True
    assert not can_connect(site.bad, "10.88.1.1", 5432)
    assert can_connect(site.good, "10.88.2.1", 5432)


def test_own_transactions_are_recognised_inside_a_pid_namespace(site, workdir, ca, cleanup):
    """On container VPSes (LXC, OpenVZ, nspawn) the pid nf_tables reports is not
    ours: own commits must still not look like tampering, and real tampering must."""
    cfg = guard_config(workdir, ca, [(5432, ["10.88.2.0/24"])])
    daemon = lab.Tunneld(workdir, "pidns", open(cfg).read(), netns=site.host.name,
                         wrapper=["unshare", "--pid", "--fork", "--kill-child=SIGTERM"])
    daemon.start()
    cleanup.append(daemon.stop)
    pid = daemon.proc.pid  # unshare's; the daemon is its child (pid 1 in the new namespace)
    child = int(open(f"/proc/{pid}/task/{pid}/children").read().split()[0])
    os.kill(child, signal.SIGHUP)  # a refresh commit of our own, too
    daemon.wait_log(r"reload \(SIGHUP\)")
    site.host.exec(["nft", "add", "table", "inet", "unrelated"])
    # A sentinel tampering: handled after the events above, and it must be the first repair.
    site.host.exec(["nft", "add", "element", "inet", "tunneld", "allow_v4_5432", "{ 10.88.1.2 }"])
    daemon.wait_log(r"firewall: table inet tunneld was changed by nft \(pid \d+\); put back .*\(1 time", timeout=2)
    assert len(daemon.log_lines(r"was changed by|keeps being changed")) == 1, daemon.read_log()
    os.kill(child, signal.SIGTERM)  # unshare does not pass signals on; it exits with its child
    daemon.proc.wait(timeout=15)
