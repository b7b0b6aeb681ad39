#include "firewall/batch.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/if_arp.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <netinet/in.h>

#include <memory>

#include "firewall/nftnl_ptr.hpp"
#include "tunneld/c_ptr.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall {

namespace {

constexpr std::uint32_t kTypeIpv4Addr = 7;  // nftables datatype ids, as `nft` shows them
constexpr std::uint32_t kTypeIpv6Addr = 8;

// Accumulates netlink messages into one batch buffer.
class Builder {
  public:
    explicit Builder(std::uint32_t seq) : seq_(seq), buf_(4 << 20) {
        batch_ = mnl_nlmsg_batch_start(buf_.data(), buf_.size());
        nftnl_batch_begin(static_cast<char*>(mnl_nlmsg_batch_current(batch_)), seq_++);
        next();
    }
    ~Builder() { mnl_nlmsg_batch_stop(batch_); }

    // Header for one acknowledged message; the caller fills in the payload.
    nlmsghdr* header(std::uint16_t type, std::uint16_t flags, const std::string& what,
                     nlmsghdr* (*build)(char*, uint16_t, uint16_t, uint16_t, uint32_t)) {
        out_.acked[seq_] = what;
        return build(static_cast<char*>(mnl_nlmsg_batch_current(batch_)), type, NFPROTO_INET,
                     flags | NLM_F_ACK, seq_++);
    }
    void next() {
        if (!mnl_nlmsg_batch_next(batch_)) throw StartupError("firewall: netlink batch too large");
    }
    Batch finish() {
        nftnl_batch_end(static_cast<char*>(mnl_nlmsg_batch_current(batch_)), seq_++);
        next();
        auto* head = static_cast<char*>(mnl_nlmsg_batch_head(batch_));
        out_.bytes.assign(head, head + mnl_nlmsg_batch_size(batch_));
        return std::move(out_);
    }

  private:
    std::uint32_t seq_;
    std::vector<char> buf_;
    mnl_nlmsg_batch* batch_;
    Batch out_;
};

nlmsghdr* table_hdr(char* buf, uint16_t type, uint16_t family, uint16_t flags, uint32_t seq) {
    return nftnl_table_nlmsg_build_hdr(buf, type, family, flags, seq);
}
nlmsghdr* chain_hdr(char* buf, uint16_t type, uint16_t family, uint16_t flags, uint32_t seq) {
    return nftnl_chain_nlmsg_build_hdr(buf, type, family, flags, seq);
}
nlmsghdr* set_hdr(char* buf, uint16_t type, uint16_t family, uint16_t flags, uint32_t seq) {
    return nftnl_set_nlmsg_build_hdr(buf, type, family, flags, seq);
}
nlmsghdr* rule_hdr(char* buf, uint16_t type, uint16_t family, uint16_t flags, uint32_t seq) {
    return nftnl_rule_nlmsg_build_hdr(buf, type, family, flags, seq);
}

void add_table(Builder& b, const std::string& name, std::uint16_t type, const std::string& what) {
    TablePtr t(nftnl_table_alloc());
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    auto* nlh = b.header(type, type == NFT_MSG_NEWTABLE ? NLM_F_CREATE : 0, what, table_hdr);
    nftnl_table_nlmsg_build_payload(nlh, t.get());
    b.next();
}

SetPtr make_set(const std::string& table, bool v6, std::uint16_t port, std::uint32_t id) {
    SetPtr s(nftnl_set_alloc());
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, table.c_str());
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, set_name(v6, port).c_str());
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, v6 ? kTypeIpv6Addr : kTypeIpv4Addr);
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, v6 ? 16 : 4);
    nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_INTERVAL);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, id);
    return s;
}

void add_elements(nftnl_set* s, const std::vector<Interval>& ranges, bool v6) {
    std::size_t n = v6 ? 16 : 4;
    for (const auto& r : ranges) {
        nftnl_set_elem* start = nftnl_set_elem_alloc();
        nftnl_set_elem_set(start, NFTNL_SET_ELEM_KEY, r.first.data(), n);
        nftnl_set_elem_add(s, start);
        auto end = r.last;
        bool overflow = true;
        for (std::size_t i = n; i-- > 0;)
            if (++end[i] != 0) {
                overflow = false;
                break;
            }
        if (overflow) continue;  // the range runs to the last address: no end element
        nftnl_set_elem* stop = nftnl_set_elem_alloc();
        nftnl_set_elem_set(stop, NFTNL_SET_ELEM_KEY, end.data(), n);
        nftnl_set_elem_set_u32(stop, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
        nftnl_set_elem_add(s, stop);
    }
}

void emit_elements(Builder& b, nftnl_set* s, const std::string& what) {
    auto* nlh = b.header(NFT_MSG_NEWSETELEM, NLM_F_CREATE, what, set_hdr);
    nftnl_set_elems_nlmsg_build_payload(nlh, s);
    b.next();
}

// --- rule expressions
void meta(nftnl_rule* r, std::uint32_t key) {
    nftnl_expr* e = nftnl_expr_alloc("meta");
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
    nftnl_rule_add_expr(r, e);
}
void cmp_eq(nftnl_rule* r, const void* data, std::uint32_t len) {
    nftnl_expr* e = nftnl_expr_alloc("cmp");
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
    nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
    nftnl_rule_add_expr(r, e);
}
void payload(nftnl_rule* r, std::uint32_t base, std::uint32_t offset, std::uint32_t len) {
    nftnl_expr* e = nftnl_expr_alloc("payload");
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
    nftnl_rule_add_expr(r, e);
}
void verdict(nftnl_rule* r, int v) {
    nftnl_expr* e = nftnl_expr_alloc("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<std::uint32_t>(v));
    nftnl_rule_add_expr(r, e);
}
void tcp_dport(nftnl_rule* r, std::uint16_t port) {
    std::uint8_t tcp = IPPROTO_TCP;
    meta(r, NFT_META_L4PROTO);
    cmp_eq(r, &tcp, 1);
    std::uint16_t be = htons(port);
    payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
    cmp_eq(r, &be, 2);
}

RulePtr rule(const std::string& table) {
    RulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, kChain);
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    return r;
}

void emit_rule(Builder& b, nftnl_rule* r, const std::string& what) {
    auto* nlh = b.header(NFT_MSG_NEWRULE, NLM_F_APPEND | NLM_F_CREATE, what, rule_hdr);
    nftnl_rule_nlmsg_build_payload(nlh, r);
    b.next();
}

}  // namespace

std::string set_name(bool v6, std::uint16_t port) {
    return std::string(v6 ? "allow_v6_" : "allow_v4_") + std::to_string(port);
}

std::string drop_comment(std::uint16_t port) { return "tunneld: drop " + std::to_string(port); }

Batch replace_table(const GuardSpec& spec, std::uint32_t first_seq) {
    Builder b(first_seq);
    add_table(b, spec.table, NFT_MSG_NEWTABLE, "create table inet " + spec.table);
    add_table(b, spec.table, NFT_MSG_DELTABLE, "replace table inet " + spec.table);
    add_table(b, spec.table, NFT_MSG_NEWTABLE, "create table inet " + spec.table);

    std::uint32_t set_id = 1;
    std::map<std::string, std::uint32_t> ids;
    for (const auto& g : spec.ports) {
        for (bool v6 : {false, true}) {
            auto s = make_set(spec.table, v6, g.port, set_id);
            ids[set_name(v6, g.port)] = set_id++;
            auto* nlh = b.header(NFT_MSG_NEWSET, NLM_F_CREATE, "create set " + set_name(v6, g.port),
                                 set_hdr);
            nftnl_set_nlmsg_build_payload(nlh, s.get());
            b.next();
            auto ranges = merge(v6 ? g.v6 : g.v4, v6);
            if (!ranges.empty()) {
                add_elements(s.get(), ranges, v6);
                emit_elements(b, s.get(), "add elements to " + set_name(v6, g.port));
            }
        }
    }

    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, spec.table.c_str());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, kChain);
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_PRE_ROUTING);
    nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, -300);  // raw: before conntrack and DNAT
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    auto* nlh = b.header(NFT_MSG_NEWCHAIN, NLM_F_CREATE,
                         "create chain guard (prerouting, priority raw)", chain_hdr);
    nftnl_chain_nlmsg_build_payload(nlh, c.get());
    b.next();

    {
        auto r = rule(spec.table);
        std::uint16_t loopback = ARPHRD_LOOPBACK;
        meta(r.get(), NFT_META_IIFTYPE);
        cmp_eq(r.get(), &loopback, sizeof loopback);
        verdict(r.get(), NF_ACCEPT);
        emit_rule(b, r.get(), "rule: loopback accept");
    }
    for (const auto& g : spec.ports) {
        for (bool v6 : {false, true}) {
            auto r = rule(spec.table);
            tcp_dport(r.get(), g.port);
            std::uint8_t family = v6 ? NFPROTO_IPV6 : NFPROTO_IPV4;
            meta(r.get(), NFT_META_NFPROTO);
            cmp_eq(r.get(), &family, 1);
            payload(r.get(), NFT_PAYLOAD_NETWORK_HEADER, v6 ? 8 : 12, v6 ? 16 : 4);
            nftnl_expr* lookup = nftnl_expr_alloc("lookup");
            nftnl_expr_set_u32(lookup, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
            nftnl_expr_set_str(lookup, NFTNL_EXPR_LOOKUP_SET, set_name(v6, g.port).c_str());
            nftnl_expr_set_u32(lookup, NFTNL_EXPR_LOOKUP_SET_ID, ids[set_name(v6, g.port)]);
            nftnl_rule_add_expr(r.get(), lookup);
            verdict(r.get(), NF_ACCEPT);
            emit_rule(b, r.get(),
                      "rule: port " + std::to_string(g.port) + " accept @" + set_name(v6, g.port));
        }
        auto r = rule(spec.table);
        tcp_dport(r.get(), g.port);
        nftnl_rule_add_expr(r.get(), nftnl_expr_alloc("counter"));
        verdict(r.get(), NF_DROP);
        UdataPtr udata(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
        nftnl_udata_put_strz(udata.get(), NFTNL_UDATA_RULE_COMMENT, drop_comment(g.port).c_str());
        nftnl_rule_set_data(r.get(), NFTNL_RULE_USERDATA, nftnl_udata_buf_data(udata.get()),
                            nftnl_udata_buf_len(udata.get()));
        emit_rule(b, r.get(), "rule: port " + std::to_string(g.port) + " counter drop");
    }
    return b.finish();
}

Batch replace_elements(const GuardSpec& spec, std::uint32_t first_seq) {
    Builder b(first_seq);
    for (const auto& g : spec.ports) {
        for (bool v6 : {false, true}) {
            auto s = make_set(spec.table, v6, g.port, 0);
            nftnl_set_unset(s.get(), NFTNL_SET_ID);
            auto* nlh =
                b.header(NFT_MSG_DELSETELEM, 0, "flush set " + set_name(v6, g.port), set_hdr);
            nftnl_set_elems_nlmsg_build_payload(nlh, s.get());  // no elements: flush
            b.next();
            auto ranges = merge(v6 ? g.v6 : g.v4, v6);
            if (!ranges.empty()) {
                add_elements(s.get(), ranges, v6);
                emit_elements(b, s.get(), "add elements to " + set_name(v6, g.port));
            }
        }
    }
    return b.finish();
}

Batch delete_table(const std::string& table, std::uint32_t first_seq) {
    Builder b(first_seq);
    add_table(b, table, NFT_MSG_NEWTABLE, "create table inet " + table);
    add_table(b, table, NFT_MSG_DELTABLE, "delete table inet " + table);
    return b.finish();
}

}  // namespace tunneld::firewall
