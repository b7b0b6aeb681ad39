"""A WAN in the lab, for tests and benchmarks (bench/wan.py): two hosts, each a
network namespace, joined through a middle namespace where bench's l2delay
holds every frame for half the round trip (plus jitter), both ways. This kernel
has no sch_netem; loss is nftables `numgen random` on each host's input, so a
fraction `loss` of the packets is dropped in each direction.

    host a (10.77.0.1) --veth-- [middle: l2delay] --veth-- host b (10.77.0.2)
"""
import os
import re
import signal
import subprocess

import lab

L2DELAY = os.path.join(lab.ROOT, "build", "bench", "l2delay")
A, B = "10.77.0.1", "10.77.0.2"


class Wan:
    def __init__(self, rtt_ms, loss=0.0, jitter_ms=0.0, label="wan"):
        self.rtt_ms = rtt_ms
        self.jitter_ms = jitter_ms
        self.label = label
        self.a = self.b = self.mid = None
        self.bridge = None
        self.loss = 0.0

    def setup(self):
        """Builds the WAN; on any failure, takes down what was made and re-raises."""
        try:
            return self._setup()
        except BaseException:
            self.teardown()
            raise

    def _setup(self):
        self.a = lab.Netns(self.label + "a")
        self.b = lab.Netns(self.label + "b")
        self.mid = lab.Netns(self.label + "m")
        self.ports = []
        for host, addr in ((self.a, A), (self.b, B)):
            end, port = lab.veth(host, addr, self.mid, "192.0.2.1")
            self.mid.exec(["ip", "addr", "flush", "dev", port])  # the middle only forwards frames
            # Frames must be wire-sized and carry real checksums: an AF_PACKET
            # forwarder sees offloaded super-frames and partial checksums otherwise.
            for ns, dev in ((host, end), (self.mid, port)):
                ns.exec(["ethtool", "-K", dev, "gro", "off", "gso", "off", "tso", "off", "tx", "off",
                         "rx", "off"])
            self.ports.append(port)
        self.start_bridge(self.rtt_ms, self.jitter_ms)
        return self

    def start_bridge(self, rtt_ms, jitter_ms=0.0):
        """(Re)starts the delay line with a new round trip."""
        self.stop_bridge()
        self.rtt_ms, self.jitter_ms = rtt_ms, jitter_ms
        self.bridge_log = open(os.path.join(lab.tmpdir("tunneld-wan-"), "l2delay.log"), "w")
        self.bridge = self.mid.popen([L2DELAY, self.ports[0], self.ports[1], str(rtt_ms / 2),
                                      str(jitter_ms / 2)], stdout=self.bridge_log, stderr=subprocess.STDOUT)
        lab.wait_for(lambda: self.a.exec(["ping", "-c", "1", "-W", "1", B], check=False).returncode == 0,
                     timeout=10, what="the delay line forwarding")

    def stop_bridge(self):
        if self.bridge and self.bridge.poll() is None:
            self.bridge.send_signal(signal.SIGTERM)
            self.bridge.wait(timeout=10)
        self.bridge = None

    def set_loss(self, fraction):
        """Drops `fraction` of the IP packets arriving at each host (so, each way)."""
        self.loss = fraction
        for ns in (self.a, self.b):
            ns.exec(["nft", "delete", "table", "inet", "wanloss"], check=False)
            if fraction > 0:
                n = int(round(fraction * 1_000_000))
                ns.exec(["nft", "-f", "-"], input=(
                    "table inet wanloss {\n"
                    "  chain input { type filter hook input priority -300; policy accept;\n"
                    f"    iif lo accept; numgen random mod 1000000 < {n} counter drop; }}\n"
                    "}\n"))

    def ping(self, count=20, interval=0.05, size=56):
        """(avg rtt ms, mdev ms, loss fraction) of `count` pings a -> b."""
        r = self.a.exec(["ping", "-q", "-n", "-c", str(count), "-i", str(interval), "-s", str(size), "-W", "2", B],
                        check=False, timeout=count * interval + 60)
        loss = float(re.search(r"([\d.]+)% packet loss", r.stdout).group(1)) / 100
        m = re.search(r"= [\d.]+/([\d.]+)/[\d.]+/([\d.]+) ms", r.stdout)
        return (float(m.group(1)) if m else None, float(m.group(2)) if m else None, loss)

    def teardown(self):
        try:
            self.stop_bridge()
        finally:
            if self.bridge and self.bridge.poll() is None:  # it ignored SIGTERM
                self.bridge.kill()
            for ns in (self.a, self.b, self.mid):
                if ns:
                    ns.delete()
            self.a = self.b = self.mid = None
