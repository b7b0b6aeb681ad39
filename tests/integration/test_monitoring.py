"""The shipped monitoring files (packaging/monitoring/, installed under
/usr/share/tunneld/monitoring/): the Prometheus rules pass `promtool check
rules` and their unit tests (`promtool test rules`: every alert fires and
clears), and those tests catch a broken rule. The live half (a real Prometheus
scraping the tunnelds of a cluster, every metric and label the rules and the
dashboard use present in live /metrics) is in test_patroni_api.py."""
import json
import os
import re
import shutil
import subprocess

import yaml

import lab

from monitoring_lab import MONITORING
ALERTS = ("TunneldDown", "TunneldPeerDown", "TunneldFirewallNotApplied", "TunneldCertificateExpiresIn14Days",
          "TunneldCertificateExpiresIn3Days", "TunneldReplicationLagHigh", "TunneldSplitBrainRefused",
          "TunneldRouteWithoutTarget", "TunneldTlsHandshakeFailuresRising", "TunneldReloadFailing")


def promtool(*args, cwd=MONITORING):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


def test_rules_check_and_every_alert_is_unit_tested_firing_and_clearing():
    r = promtool("check", "rules", "tunneld-rules.yml")
    assert r.returncode == 0 and "SUCCESS: 10 rules found" in r.stdout, r.stdout + r.stderr
    rules = [rule["alert"] for g in yaml.safe_load(open(os.path.join(MONITORING, "tunneld-rules.yml")))["groups"]
             for rule in g["rules"]]
    assert sorted(rules) == sorted(ALERTS)
    tests = yaml.safe_load(open(os.path.join(MONITORING, "tunneld-rules.test.yml")))["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for alert in ALERTS:
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in cases), f"{alert} never fires in the tests"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in cases), f"{alert} never clears"
    r = promtool("test", "rules", "tunneld-rules.test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_the_rule_tests_catch_a_broken_rule(tmp_path):
    for name in ("tunneld-rules.yml", "tunneld-rules.test.yml"):
        shutil.copy(os.path.join(MONITORING, name), tmp_path / name)
    rules = tmp_path / "tunneld-rules.yml"
    text = rules.read_text()
    rules.write_text(text.replace("tunneld_peer_up == 0", "tunneld_peer_up == 2"))
    r = promtool("test", "rules", "tunneld-rules.test.yml", cwd=tmp_path)
    assert r.returncode != 0 and "TunneldPeerDown" in r.stdout + r.stderr, r.stdout + r.stderr


def test_dashboard_is_grafana_json_over_tunneld_metrics_only():
    dash = json.load(open(os.path.join(MONITORING, "tunneld-dashboard.json")))
    assert dash["uid"] == "tunneld" and dash["__inputs"][0]["pluginId"] == "prometheus"
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 18
    for e in exprs:
        assert re.search(r"\btunneld_[a-z_]+", e) and 'instance=~"$instance"' in e, e
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    r = promtool("check", "config", "prometheus.yml")
    assert "tunneld-rules.yml" in r.stdout + r.stderr  # parsed; only the installed rule path is missing here
