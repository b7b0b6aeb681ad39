"""Helpers of the live monitoring test (test_patroni_api.py): the metrics and
labels a Prometheus exposition has, those the shipped rules and dashboard use,
and Prometheus' HTTP API inside the lab's app namespace."""
import json
import os
import re

import lab

MONITORING = os.path.join(lab.ROOT, "packaging", "monitoring")
TARGET_LABELS = {"instance", "job", "node"}  # added by Prometheus or the scrape config


def exposition_labels(text):
    """{family: {label, ...}} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ", line)
        if m and not line.startswith("#"):
            out.setdefault(m.group(1), set()).update(re.findall(r'(\w+)="', m.group(3) or ""))
    return out


def used_by_monitoring():
    """[(where, expr, {label, ...})] of every rule and dashboard query, with the
    labels each one names (matchers, by (...), {{label}}, $labels.label)."""
    import yaml
    out = []
    for group in yaml.safe_load(open(os.path.join(MONITORING, "tunneld-rules.yml")))["groups"]:
        for rule in group["rules"]:
            text = rule["expr"] + " " + " ".join(rule.get("annotations", {}).values())
            out.append((rule["alert"], rule["expr"], set(re.findall(r"\$labels\.(\w+)", text))))
    dash = json.load(open(os.path.join(MONITORING, "tunneld-dashboard.json")))
    for panel in dash["panels"]:
        for t in panel["targets"]:
            out.append((panel["title"], t["expr"], set(re.findall(r"\{\{(\w+)\}\}", t["legendFormat"]))))
    for i, (where, expr, labels) in enumerate(out):
        for m in re.finditer(r"\{([^}]*)\}", expr):
            labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", m.group(1)))
        for m in re.finditer(r"\bby \(([^)]*)\)", expr):
            labels |= {x.strip() for x in m.group(1).split(",")}
        out[i] = (where, expr, labels - TARGET_LABELS)
    return out


def prometheus_api(c, path):
    status, _, text = lab.http_request("127.0.0.1:9090", path, netns=c.ns["app"].name)
    assert status == 200, text
    return json.loads(text)["data"]
