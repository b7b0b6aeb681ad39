// The guard's netlink batches without root, parsed back message by message
// with libnftnl: one transaction each, never a gap in the table.
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

#include "firewall/batch.hpp"
#include "firewall/spec.hpp"
#include "firewall_fakes.hpp"

namespace tunneld::firewall {
namespace {

using test::P;

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

}  // namespace
}  // namespace tunneld::firewall
