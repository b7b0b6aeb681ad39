// The guard without root: prefixes, interval merging, the spec built from a
// config, and the firewall: block of the config (the netlink batches are in
// firewall_batch_test.cpp).
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>

#include "config_error.hpp"
#include "firewall/guard.hpp"
#include "firewall/spec.hpp"
#include "firewall_fakes.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/config/prefix.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall {
namespace {

using test::P;

std::string why_not(const char* text) {
    auto p = parse_prefix(text);
    EXPECT_FALSE(p) << text;
    return p ? "" : p.error().what;
}

std::string ip(const std::array<std::uint8_t, 16>& a, bool v6) {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(v6 ? AF_INET6 : AF_INET, a.data(), buf, sizeof buf);
    return buf;
}

std::string ranges(const std::vector<Interval>& v, bool v6) {
    std::string out;
    for (const auto& r : v)
        out += (out.empty() ? "" : " ") + ip(r.first, v6) + "-" + ip(r.last, v6);
    return out;
}

TEST(Prefix, ParsesAddressesAndPrefixes) {
    EXPECT_EQ(P("203.0.113.0/24").to_string(), "203.0.113.0/24");
    EXPECT_EQ(P("10.0.0.7").to_string(), "10.0.0.7/32");
    EXPECT_EQ(P("2001:db8::/32").to_string(), "2001:db8::/32");
    EXPECT_EQ(P("::1").to_string(), "::1/128");
    EXPECT_TRUE(P("fd00::/8").v6);
    EXPECT_EQ(P("0.0.0.0/0").length, 0);
}

TEST(Prefix, RefusesWithAReason) {
    EXPECT_EQ(why_not("10.0.0.1/24"), "'10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?");
    EXPECT_EQ(why_not("10.0.0.0/33"), "'10.0.0.0/33': prefix length must be 0 to 32");
    EXPECT_EQ(why_not("::/129"), "'::/129': prefix length must be 0 to 128");
    EXPECT_EQ(why_not("10.0.0.0/"), "'10.0.0.0/': prefix length must be 0 to 32");
    EXPECT_EQ(why_not("10.0.0.0/8x"), "'10.0.0.0/8x': prefix length must be 0 to 32");
    EXPECT_EQ(why_not("primary.example.net"),
              "'primary.example.net' is not an IP address or prefix (as in 203.0.113.0/24)");
}

TEST(Merge, JoinsOverlappingAndAdjacentKeepsGaps) {
    auto m =
        merge({P("10.0.1.0/24"), P("10.0.0.0/24"), P("10.0.0.7"), P("10.0.3.0/24"), P("fd00::/8")},
              false);
    EXPECT_EQ(ranges(m, false), "10.0.0.0-10.0.1.255 10.0.3.0-10.0.3.255");
}

TEST(Merge, ContainedPrefixDisappears) {
    EXPECT_EQ(ranges(merge({P("10.0.0.0/8"), P("10.1.2.3"), P("10.255.0.0/16")}, false), false),
              "10.0.0.0-10.255.255.255");
}

TEST(Merge, WholeSpaceAndTopOfRange) {
    EXPECT_EQ(ranges(merge({P("0.0.0.0/0"), P("1.2.3.4")}, false), false),
              "0.0.0.0-255.255.255.255");
    EXPECT_EQ(ranges(merge({P("255.255.255.255"), P("255.255.255.254")}, false), false),
              "255.255.255.254-255.255.255.255");
}

TEST(Merge, Ipv6) {
    auto m =
        merge({P("fd88:2::/64"), P("fd88:2:0:1::/64"), P("2001:db8::1"), P("10.0.0.0/8")}, true);
    EXPECT_EQ(ranges(m, true), "2001:db8::1-2001:db8::1 fd88:2::-fd88:2:0:1:ffff:ffff:ffff:ffff");
}

const char* kNode = R"(node: primary-1
tls: {ca: /c, cert: /n.crt, key: /n.key}
inbound:
  listen: ["0.0.0.0:8765", "[::]:8765"]
  backend: 127.0.0.1:5432
  allow: [standby-1]
peers:
  - {name: standby-1, connect: "standby.example.net:8765", local: "127.0.0.1:6432"}
)";

TEST(Spec, InboundPortAllowsPeersEvenWhenNotListed) {
    auto cfg = parse_config(
        std::string(kNode) + "firewall:\n  protect:\n    - {port: 5432, allow: []}\n", "/x.yaml");
    auto spec = make_spec(cfg, {P("198.51.100.7"), P("2001:db8::7")});
    EXPECT_EQ(spec.table, "tunneld");
    ASSERT_EQ(spec.ports.size(), 3u);
    EXPECT_EQ(spec.ports[0].port, 5432);  // sorted
    EXPECT_TRUE(spec.ports[0].v4.empty());
    EXPECT_TRUE(spec.ports[0].v6.empty());
    EXPECT_EQ(spec.ports[1].port, 6432);  // peers[].local: loopback only
    EXPECT_TRUE(spec.ports[1].v4.empty() && spec.ports[1].v6.empty());
    EXPECT_EQ(spec.ports[2].port, 8765);
    ASSERT_EQ(spec.ports[2].v4.size(), 1u);
    EXPECT_EQ(spec.ports[2].v4[0].to_string(), "198.51.100.7/32");
    ASSERT_EQ(spec.ports[2].v6.size(), 1u);
    EXPECT_EQ(spec.ports[2].v6[0].to_string(), "2001:db8::7/128");
}

TEST(Spec, ListingTheInboundPortAddsThePeersToItsPrefixes) {
    auto cfg = parse_config(std::string(kNode) +
                                "firewall:\n  table: guard_x\n  protect:\n"
                                "    - {port: 8765, allow: [203.0.113.0/24]}\n"
                                "    - {port: 5432, allow: [peers, '10.0.0.0/8']}\n",
                            "/x.yaml");
    auto spec = make_spec(cfg, {P("198.51.100.7")});
    EXPECT_EQ(spec.table, "guard_x");
    ASSERT_EQ(spec.ports.size(), 3u);
    ASSERT_EQ(spec.ports[0].v4.size(), 2u);  // 5432: peers + 10/8
    EXPECT_EQ(spec.ports[0].v4[0].to_string(), "198.51.100.7/32");
    EXPECT_EQ(spec.ports[0].v4[1].to_string(), "10.0.0.0/8");
    ASSERT_EQ(spec.ports[2].v4.size(), 2u);  // 8765: peers always, + the listed prefix
}

// With route_localnet=1 a neighbour reaches 127.0.0.1 listeners through eth0:
// every plaintext listener is loopback-only in the guard unless listed.
TEST(Spec, EveryPlaintextListenerIsLoopbackOnlyUnlessListed) {
    auto cfg = parse_config(R"(node: a
tls: {ca: /c, cert: /a.crt, key: /a.key}
inbound:
  listen: 0.0.0.0:8765
  backend: unix:/run/postgresql/.s.PGSQL.5432
  allow: [b]
  local: 127.0.0.1:6431
  services:
    patroni: {backend: 127.0.0.1:8008, local: 127.0.0.1:18001}
peers:
  - {name: b, connect: "192.0.2.2:8765", local: "127.0.0.1:6433", services: {patroni: 127.0.0.1:18002}}
  - {name: c, connect: "192.0.2.3:8765", local: "0.0.0.0:6434", public: true}
routes:
  - {local: 127.0.0.1:6432, to: primary}
health: {listen: 127.0.0.1:8766}
cluster: {quorum: none}
firewall:
  protect:
    - {port: 6434, allow: [10.1.0.0/16]}
)",
                            "/x.yaml");
    auto spec = make_spec(cfg, {P("192.0.2.2"), P("192.0.2.3")});
    std::map<int, std::string> got;
    for (const auto& g : spec.ports) {
        std::string allowed;
        for (const auto& p : g.v4) allowed += p.to_string() + " ";
        got[g.port] = allowed;
    }
    const std::map<int, std::string> want{{6431, ""}, {6432, ""},
                                          {6433, ""}, {6434, "10.1.0.0/16 "},
                                          {8008, ""}, {8765, "192.0.2.2/32 192.0.2.3/32 "},
                                          {8766, ""}, {18001, ""},
                                          {18002, ""}};
    EXPECT_EQ(got, want);
}

TEST(Spec, APublicListenerWithoutAnAllowListIsRefused) {
    const char* base = R"(node: a
tls: {ca: /c, cert: /a.crt, key: /a.key}
peers:
  - {name: c, connect: "192.0.2.3:8765", local: "0.0.0.0:6434", public: true}
)";
    auto err = tunneld::test::config_error_of(std::string(base) + "firewall: {}\n");
    EXPECT_NE(err.find("t.yaml:5:11: peers[c].local 0.0.0.0:6434 is public (no TLS): list port "
                       "6434 in firewall.protect with the sources allowed"),
              std::string::npos)
        << err;
    // Without the guard there is nothing to list it in; with the port listed it is fine.
    EXPECT_EQ(tunneld::test::config_error_of(base), "(no error)");
    EXPECT_EQ(tunneld::test::config_error_of(
                  std::string(base) + "firewall: {protect: [{port: 6434, allow: [10.0.0.0/8]}]}\n"),
              "(no error)");
    auto health = tunneld::test::config_error_of(
        std::string(base) +
        "health: {listen: 0.0.0.0:8766, public: true}\nfirewall: {protect: [{port: 6434, "
        "allow: []}]}\n");
    EXPECT_NE(health.find("health.listen 0.0.0.0:8766 is public"), std::string::npos) << health;
}

// Hermetic: literals and /etc/hosts only. An unresolvable name needs DNS, so
// that case is tested in a network namespace (test_firewall.py).
TEST(Spec, ResolvesPeersToHostPrefixesWithoutDuplicates) {
    auto cfg = parse_config(R"(node: a
tls: {ca: /c, cert: /n.crt, key: /n.key}
peers:
  - {name: b, connect: "192.0.2.10:8765", local: "127.0.0.1:6432"}
  - {name: c, connect: "[2001:db8::10]:8765", local: "127.0.0.1:6433"}
  - {name: d, connect: "localhost:8765", local: "127.0.0.1:6434"}
  - {name: e, connect: "127.0.0.1:8766", local: "127.0.0.1:6435"}
)",
                            "/x.yaml");
    auto [peers, errors] = resolve_peers(cfg);
    EXPECT_TRUE(errors.empty());
    ASSERT_GE(peers.size(), 3u);
    EXPECT_EQ(peers[0].to_string(), "192.0.2.10/32");
    EXPECT_EQ(peers[1].to_string(), "2001:db8::10/128");
    EXPECT_EQ(std::count(peers.begin(), peers.end(), P("127.0.0.1")), 1)
        << "localhost and 127.0.0.1: listed once";
}

// --- the firewall: block of the config
std::string error_of(const std::string& extra) {
    return tunneld::test::config_error_of(std::string(kNode) + extra);
}

TEST(FirewallConfig, DefaultsWhenTheBlockIsPresent) {
    auto c = parse_config(std::string(kNode) + "firewall: {}\n", "/x.yaml");
    ASSERT_TRUE(c.firewall);
    EXPECT_TRUE(c.firewall->enabled);
    EXPECT_EQ(c.firewall->table, "tunneld");
    EXPECT_FALSE(c.firewall->remove_on_exit);  // keep: fail closed
    EXPECT_EQ(c.firewall->resolve_interval, std::chrono::seconds(60));
    EXPECT_TRUE(c.firewall->protect.empty());
    EXPECT_FALSE(parse_config(kNode, "/x.yaml").firewall);
}

TEST(FirewallConfig, ParsesEveryKey) {
    auto c = parse_config(std::string(kNode) + R"(firewall:
  enabled: false
  table: tunneld_b
  on_exit: remove
  resolve_interval: 5m
  protect:
    - port: 5432
      allow: [peers, 10.0.0.0/8, "2001:db8::/32"]
)",
                          "/x.yaml");
    EXPECT_FALSE(c.firewall->enabled);
    EXPECT_EQ(c.firewall->table, "tunneld_b");
    EXPECT_TRUE(c.firewall->remove_on_exit);
    EXPECT_EQ(c.firewall->resolve_interval, std::chrono::minutes(5));
    ASSERT_EQ(c.firewall->protect.size(), 1u);
    EXPECT_TRUE(c.firewall->protect[0].peers);
    EXPECT_EQ(c.firewall->protect[0].prefixes,
              (std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32"}));
}

TEST(FirewallConfig, ErrorsNamePositionAndFix) {
    const std::pair<const char*, const char*> cases[] = {
        {"firewall:\n  protect:\n    - {port: 5432, allow: [10.0.0.1/8]}\n",
         "t.yaml:11:28: 'firewall.protect[].allow': '10.0.0.1/8' has host bits set; did you mean "
         "10.0.0.0/8?"},
        {"firewall:\n  protect:\n    - {port: 5432}\n",
         "missing required key 'firewall.protect[].allow' ([] = loopback only)"},
        {"firewall:\n  protect:\n    - {allow: []}\n",
         "missing required key 'firewall.protect[].port'"},
        {"firewall:\n  protect:\n    - {port: 70000, allow: []}\n",
         "'firewall.protect[].port' must be a whole number from 1 to 65535"},
        {"firewall:\n  protect:\n    - {port: 1, allow: []}\n    - {port: 1, allow: []}\n",
         "port 1 is listed twice"},
        {"firewall:\n  protect:\n    - {port: 1, allow: [db.example.net]}\n",
         "'db.example.net' is not an IP address or prefix"},
        {"firewall:\n  protect:\n    - {port: 1, allow: 10.0.0.0/8}\n",
         "'firewall.protect[].allow' must be a list"},
        {"firewall:\n  on_exit: delete\n", "'firewall.on_exit' must be keep or remove"},
        {"firewall:\n  enabled: yes\n", "'firewall.enabled' must be true or false"},
        {"firewall:\n  table: 'my table'\n", "'firewall.table' must be 1-32 letters"},
        {"firewall:\n  ports: [5432]\n", "unknown key 'firewall.ports'"},
        {"firewall:\n  resolve_interval: 100ms\n",
         "'firewall.resolve_interval' must be from 1s to 24h"},
    };
    for (const auto& [yaml, expected] : cases) {
        auto err = error_of(yaml);
        EXPECT_NE(err.find(expected), std::string::npos) << "config:\n" << yaml << "got: " << err;
    }
}

}  // namespace
}  // namespace tunneld::firewall
