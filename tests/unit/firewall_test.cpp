// The guard without root: prefixes, interval merging, the spec built from a
// config, and the netlink batches parsed back with libnftnl.
#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <memory>

#include "config_error.hpp"
#include "firewall/batch.hpp"
#include "firewall/guard.hpp"
#include "firewall/spec.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/config/prefix.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall {
namespace {

Prefix P(const char* text) {
    std::string why;
    auto p = parse_prefix(text, why);
    EXPECT_TRUE(p) << text << ": " << why;
    return p.value_or(Prefix{});
}

std::string why_not(const char* text) {
    std::string why;
    EXPECT_FALSE(parse_prefix(text, why)) << text;
    return why;
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
    ASSERT_EQ(spec.ports.size(), 2u);
    EXPECT_EQ(spec.ports[0].port, 5432);  // sorted
    EXPECT_TRUE(spec.ports[0].v4.empty());
    EXPECT_TRUE(spec.ports[0].v6.empty());
    EXPECT_EQ(spec.ports[1].port, 8765);
    ASSERT_EQ(spec.ports[1].v4.size(), 1u);
    EXPECT_EQ(spec.ports[1].v4[0].to_string(), "198.51.100.7/32");
    ASSERT_EQ(spec.ports[1].v6.size(), 1u);
    EXPECT_EQ(spec.ports[1].v6[0].to_string(), "2001:db8::7/128");
}

TEST(Spec, ListingTheInboundPortAddsThePeersToItsPrefixes) {
    auto cfg = parse_config(std::string(kNode) +
                                "firewall:\n  table: guard_x\n  protect:\n"
                                "    - {port: 8765, allow: [203.0.113.0/24]}\n"
                                "    - {port: 5432, allow: [peers, '10.0.0.0/8']}\n",
                            "/x.yaml");
    auto spec = make_spec(cfg, {P("198.51.100.7")});
    EXPECT_EQ(spec.table, "guard_x");
    ASSERT_EQ(spec.ports.size(), 2u);
    ASSERT_EQ(spec.ports[0].v4.size(), 2u);  // 5432: peers + 10/8
    EXPECT_EQ(spec.ports[0].v4[0].to_string(), "198.51.100.7/32");
    EXPECT_EQ(spec.ports[0].v4[1].to_string(), "10.0.0.0/8");
    ASSERT_EQ(spec.ports[1].v4.size(), 2u);  // 8765: peers always, + the listed prefix
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
    std::vector<std::string> errors;
    auto peers = resolve_peers(cfg, errors);
    EXPECT_TRUE(errors.empty());
    ASSERT_GE(peers.size(), 3u);
    EXPECT_EQ(peers[0].to_string(), "192.0.2.10/32");
    EXPECT_EQ(peers[1].to_string(), "2001:db8::10/128");
    EXPECT_EQ(std::count(peers.begin(), peers.end(), P("127.0.0.1")), 1)
        << "localhost and 127.0.0.1: listed once";
}

// --- batches, parsed back message by message
struct Msg {
    int type;  // NFT_MSG_*, or -1 for batch begin/end
    std::string table, name;
    std::uint32_t hook = 0, elements = 0, exprs = 0;
    std::int32_t prio = 0;
    std::string comment;
};

// Set element messages are read with libmnl directly: libnftnl numbers the
// element nests 1, 2, 3... when building (the kernel takes any) but its parser
// accepts only NFTA_LIST_ELEM (1), so it cannot read its own output back.
void parse_elements(const nlmsghdr* nlh, Msg& m) {
    auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
    auto* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
    for (; mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr)));
         attr = mnl_attr_next(attr)) {
        switch (mnl_attr_get_type(attr)) {
            case NFTA_SET_ELEM_LIST_TABLE:
                m.table = mnl_attr_get_str(attr);
                break;
            case NFTA_SET_ELEM_LIST_SET:
                m.name = mnl_attr_get_str(attr);
                break;
            case NFTA_SET_ELEM_LIST_ELEMENTS: {
                auto* end = reinterpret_cast<const char*>(attr) + mnl_attr_get_len(attr);
                auto* e = static_cast<const nlattr*>(mnl_attr_get_payload(attr));
                for (; mnl_attr_ok(e, static_cast<int>(end - reinterpret_cast<const char*>(e)));
                     e = mnl_attr_next(e))
                    ++m.elements;
                break;
            }
            default:
                break;
        }
    }
}

std::vector<Msg> parse(const Batch& b) {
    std::vector<Msg> out;
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(b.bytes.data());
    int len = static_cast<int>(b.bytes.size());
    for (; mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
        Msg m;
        if (nlh->nlmsg_type == NFNL_MSG_BATCH_BEGIN || nlh->nlmsg_type == NFNL_MSG_BATCH_END) {
            m.type = -1;
            out.push_back(m);
            continue;
        }
        EXPECT_EQ(nlh->nlmsg_type >> 8, NFNL_SUBSYS_NFTABLES);
        EXPECT_TRUE(nlh->nlmsg_flags & NLM_F_ACK) << "every change must be acknowledged";
        EXPECT_TRUE(b.acked.count(nlh->nlmsg_seq))
            << "seq " << nlh->nlmsg_seq << " has no description";
        m.type = nlh->nlmsg_type & 0xff;
        switch (m.type) {
            case NFT_MSG_NEWTABLE:
            case NFT_MSG_DELTABLE: {
                auto* t = nftnl_table_alloc();
                EXPECT_EQ(nftnl_table_nlmsg_parse(nlh, t), 0);
                m.name = nftnl_table_get_str(t, NFTNL_TABLE_NAME);
                nftnl_table_free(t);
                break;
            }
            case NFT_MSG_NEWSET: {
                auto* s = nftnl_set_alloc();
                EXPECT_EQ(nftnl_set_nlmsg_parse(nlh, s), 0);
                m.table = nftnl_set_get_str(s, NFTNL_SET_TABLE);
                m.name = nftnl_set_get_str(s, NFTNL_SET_NAME);
                EXPECT_EQ(nftnl_set_get_u32(s, NFTNL_SET_FLAGS) & NFT_SET_INTERVAL,
                          NFT_SET_INTERVAL);
                nftnl_set_free(s);
                break;
            }
            case NFT_MSG_NEWSETELEM:
            case NFT_MSG_DELSETELEM:
                parse_elements(nlh, m);
                break;
            case NFT_MSG_NEWCHAIN: {
                auto* c = nftnl_chain_alloc();
                EXPECT_EQ(nftnl_chain_nlmsg_parse(nlh, c), 0);
                m.table = nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE);
                m.name = nftnl_chain_get_str(c, NFTNL_CHAIN_NAME);
                m.hook = nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM);
                m.prio = nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO);
                nftnl_chain_free(c);
                break;
            }
            case NFT_MSG_NEWRULE: {
                auto* r = nftnl_rule_alloc();
                EXPECT_EQ(nftnl_rule_nlmsg_parse(nlh, r), 0);
                m.table = nftnl_rule_get_str(r, NFTNL_RULE_TABLE);
                m.name = nftnl_rule_get_str(r, NFTNL_RULE_CHAIN);
                auto* it = nftnl_expr_iter_create(r);
                while (nftnl_expr_iter_next(it)) ++m.exprs;
                nftnl_expr_iter_destroy(it);
                std::uint32_t ulen = 0;
                if (const auto* u = static_cast<const char*>(
                        nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &ulen)))
                    m.comment.assign(u + 2, u + ulen - 1);  // one TLV: type, len, "text\0"
                nftnl_rule_free(r);
                break;
            }
            default:
                ADD_FAILURE() << "unexpected message type " << m.type;
        }
        out.push_back(m);
    }
    EXPECT_EQ(len, 0) << "trailing bytes in the batch";
    return out;
}

GuardSpec two_ports() {
    GuardSpec spec;
    spec.table = "tunneld";
    spec.ports.push_back({5432, {}, {}});
    spec.ports.push_back(
        {8765, {P("10.77.0.2"), P("10.77.0.3"), P("192.0.2.0/24")}, {P("fd77::2")}});
    return spec;
}

TEST(Batch, ReplaceTableIsOneTransactionThatNeverLeavesAGap) {
    auto msgs = parse(replace_table(two_ports(), 100));
    ASSERT_GE(msgs.size(), 5u);
    EXPECT_EQ(msgs.front().type, -1);
    EXPECT_EQ(msgs.back().type, -1);
    // add (so the delete cannot fail on a first run), delete, create: all inside one begin/end.
    EXPECT_EQ(msgs[1].type, NFT_MSG_NEWTABLE);
    EXPECT_EQ(msgs[2].type, NFT_MSG_DELTABLE);
    EXPECT_EQ(msgs[3].type, NFT_MSG_NEWTABLE);
    for (int i : {1, 2, 3}) EXPECT_EQ(msgs[i].name, "tunneld");
    int begins = 0, sets = 0, chains = 0, rules = 0;
    std::map<std::string, std::uint32_t> elements;
    std::vector<std::string> comments;
    for (const auto& m : msgs) {
        begins += m.type == -1;
        if (m.type == NFT_MSG_NEWSET) ++sets;
        if (m.type == NFT_MSG_NEWSETELEM) elements[m.name] = m.elements;
        if (m.type == NFT_MSG_NEWCHAIN) {
            ++chains;
            EXPECT_EQ(m.name, "guard");
            EXPECT_EQ(m.hook, static_cast<std::uint32_t>(NF_INET_PRE_ROUTING));
            EXPECT_EQ(m.prio, -300) << "priority raw: before conntrack and any DNAT";
        }
        if (m.type == NFT_MSG_NEWRULE) {
            ++rules;
            EXPECT_EQ(m.name, "guard");
            if (!m.comment.empty()) comments.push_back(m.comment);
        }
    }
    EXPECT_EQ(begins, 2);  // exactly one transaction
    EXPECT_EQ(sets, 4);    // v4 and v6 per port
    EXPECT_EQ(chains, 1);
    EXPECT_EQ(rules, 1 + 2 * 3);  // loopback; per port: v4 accept, v6 accept, counter drop
    EXPECT_EQ(comments, (std::vector<std::string>{"tunneld: drop 5432", "tunneld: drop 8765"}));
    // Intervals: 10.77.0.2-10.77.0.3 (start+end) and 192.0.2.0/24 (start+end); fd77::2 (start+end).
    EXPECT_EQ(elements["allow_v4_8765"], 4u);
    EXPECT_EQ(elements["allow_v6_8765"], 2u);
    EXPECT_FALSE(elements.count("allow_v4_5432")) << "an empty set gets no element message";
}

TEST(Batch, ReplaceElementsFlushesAndRefillsEverySetInOneTransaction) {
    auto msgs = parse(replace_elements(two_ports(), 7));
    std::vector<std::string> seen;
    for (const auto& m : msgs) {
        if (m.type == -1) continue;
        ASSERT_TRUE(m.type == NFT_MSG_DELSETELEM || m.type == NFT_MSG_NEWSETELEM)
            << "only set contents change; rules and counters stay";
        seen.push_back((m.type == NFT_MSG_DELSETELEM ? "flush " : "add ") + m.name);
    }
    EXPECT_EQ(seen, (std::vector<std::string>{"flush allow_v4_5432", "flush allow_v6_5432",
                                              "flush allow_v4_8765", "add allow_v4_8765",
                                              "flush allow_v6_8765", "add allow_v6_8765"}));
    EXPECT_EQ(msgs.front().type, -1);
    EXPECT_EQ(msgs.back().type, -1);
}

TEST(Batch, DeleteTableToleratesAMissingTable) {
    auto msgs = parse(delete_table("tunneld", 1));
    ASSERT_EQ(msgs.size(), 4u);
    EXPECT_EQ(msgs[1].type, NFT_MSG_NEWTABLE);
    EXPECT_EQ(msgs[2].type, NFT_MSG_DELTABLE);
}

// --- the firewall: block of the config
std::string error_of(const std::string& extra) {
    return test::config_error_of(std::string(kNode) + extra);
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
