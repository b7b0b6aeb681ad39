"""Helpers of the firewall tests: a "host" namespace with a good and a bad
client namespace, TCP probes from inside a namespace, and a guarded tunneld."""

import os
import subprocess
import textwrap

import pytest

import lab


class Site:
    """A "host" namespace joined to two client namespaces: `good` (10.88.2.2,
    fd88:2::2) and `bad` (10.88.1.2, fd88:1::2)."""

    def __init__(self):
        self.host = lab.Netns("host")
        self.good = lab.Netns("good")
        self.bad = lab.Netns("bad")
        for ns, net in ((self.bad, 1), (self.good, 2)):
            a, b = lab.veth(self.host, f"10.88.{net}.1", ns, f"10.88.{net}.2")
            self.host.exec(["ip", "addr", "add", f"fd88:{net}::1/64", "dev", a, "nodad"])
            ns.exec(["ip", "addr", "add", f"fd88:{net}::2/64", "dev", b, "nodad"])
            ns.exec(["ip", "route", "add", "default", "via", f"10.88.{net}.1"])
            ns.exec(["ip", "-6", "route", "add", "default", "via", f"fd88:{net}::1"])
        self.host.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"])

    def delete(self):
        for ns in (self.bad, self.good, self.host):
            ns.delete()


def can_connect(ns, host, port, timeout=1.5):
    """TCP connect from inside `ns` (a subprocess, so the socket lives in that namespace)."""
    code = ("import socket,sys\n"
            f"s=socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)\n"
            f"s.settimeout({timeout})\n"
            f"try:\n s.connect(('{host}', {port})); print('connected')\n"
            "except Exception as e: print(type(e).__name__)\n")
    return ns.exec(["/usr/bin/python3", "-c", code], check=False).stdout.strip() == "connected"


def listener(ns, port, host="0.0.0.0"):
    """A TCP server inside `ns` that accepts and holds connections (a stand-in for postgres)."""
    code = ("import socket,time\n"
            f"s=socket.socket(socket.AF_INET6 if ':' in '{host}' else socket.AF_INET)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{host}', {port})); s.listen(64); print('up', flush=True)\nconns=[]\n"
            "while True:\n c,_=s.accept(); conns.append(c)\n")
    p = ns.popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    return p


def until_stdin_closes(ns, setup, body, report):
    """A Python loop inside `ns`: runs `setup`, prints "up", repeats `body` until the
    test closes its stdin, then prints `report` (an expression). Returns the Popen."""
    code = (f"import os,select,socket,time\n{setup}\nos.set_blocking(0, False)\nprint('up', flush=True)\n"
            "while True:\n try:\n  if os.read(0, 1) == b'': break\n except BlockingIOError: pass\n"
            + textwrap.indent(body, " ") + f"\nprint({report}, flush=True)\n")
    p = ns.popen(["/usr/bin/python3", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"
    return p


def guard_daemon(site, workdir, ca, protect, **kwargs):
    """A tunneld (not started) in the host namespace, guarding `protect`; its
    config is the file guard_config() writes."""
    cfg = guard_config(workdir, ca, protect, **kwargs)
    return lab.Tunneld(workdir, "host", open(cfg).read(), netns=site.host.name)


@pytest.fixture
def site():
    s = Site()
    yield s
    s.delete()


def guard_config(workdir, ca, protect, extra="", inbound=None, peers=()):
    cert, key, _ = ca.issue("host-1", os.path.join(workdir, "host"))
    text = lab.node_config("host-1", ca.cert_path, cert, key, inbound=inbound, peers=peers or
                           ([] if inbound else [{"name": "p", "connect": "10.88.9.9:1", "local": "127.0.0.1:16432"}]))
    text += "firewall:\n  protect:\n"
    for port, allow in protect:
        text += f"    - port: {port}\n      allow: {lab.yaml_list(allow)}\n"
    path = os.path.join(workdir, "host.yaml")
    with open(path, "w") as f:
        f.write(text + extra)
    return path
