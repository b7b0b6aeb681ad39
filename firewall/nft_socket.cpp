#include "firewall/nft_socket.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <algorithm>
#include <charconv>
#include <deque>
#include <fstream>
#include <mutex>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

#include "firewall/nftnl_ptr.hpp"
#include "tunneld/c_ptr.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall {

void MnlSocketClose::operator()(mnl_socket* s) const { mnl_socket_close(s); }

namespace {

using Socket = MnlSocketPtr;

// Whether CAP_NET_ADMIN (bit 12) is in this process's capability bounding set:
// a container that does not grant it cannot be fixed from inside.
bool bounding_set_has_net_admin() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("CapBnd:", 0) == 0)
            return (std::stoull(line.substr(7), nullptr, 16) >> 12) & 1;
    return true;
}

std::string privilege_hint(int err) {
    if ((err == EPERM || err == EACCES) && !bounding_set_has_net_admin())
        return " (changing nftables needs CAP_NET_ADMIN, and this process's bounding set (CapBnd "
               "in "
               "/proc/self/status) does not contain it: the container or VPS this runs in does not "
               "grant it, "
               "and nothing inside can add it. Ask the provider / container config to keep "
               "CAP_NET_ADMIN "
               "(LXC: lxc.cap.keep; systemd-nspawn: --capability=CAP_NET_ADMIN), or set "
               "firewall.enabled: "
               "false and guard the ports elsewhere)";
    if (err == EPERM || err == EACCES)
        return " (changing nftables needs CAP_NET_ADMIN: run tunneld as root, or give it "
               "AmbientCapabilities=CAP_NET_ADMIN in its systemd unit)";
    if (err == EPROTONOSUPPORT || err == EAFNOSUPPORT)
        return " (this kernel has no nf_tables: modprobe nf_tables)";
    return "";
}

Socket open_socket() {
    Socket nl(mnl_socket_open(NETLINK_NETFILTER));
    if (!nl || mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) {
        int err = errno;
        throw StartupError(std::string("firewall: cannot open a netfilter netlink socket: ") +
                           std::strerror(err) + privilege_hint(err));
    }
    timeval tv{5, 0};
    setsockopt(mnl_socket_get_fd(nl.get()), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return nl;
}

// Reads replies until `done(nlh)` says so for every one; returns false on timeout.
template <class OnMessage>
void receive(mnl_socket* nl, OnMessage on_message) {
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE * 4);
    for (;;) {
        ssize_t n = mnl_socket_recvfrom(nl, buf.data(), buf.size());
        if (n < 0) {
            int err = errno;
            throw StartupError(std::string("firewall: no answer from nf_tables: ") +
                               std::strerror(err));
        }
        auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
        int len = static_cast<int>(n);
        while (len >= static_cast<int>(sizeof(nlmsghdr)) &&
               nlh->nlmsg_len <= static_cast<std::uint32_t>(len) &&
               mnl_nlmsg_ok(nlh, len)) {  // see parse_table_events for why the first two checks
            if (!on_message(nlh)) return;
            nlh = mnl_nlmsg_next(nlh, &len);
        }
    }
}

}  // namespace

std::uint32_t next_seq(std::uint32_t messages) {
    static std::atomic<std::uint32_t> seq{static_cast<std::uint32_t>(std::time(nullptr))};
    return seq.fetch_add(messages + 2);
}

namespace {

// The netlink port ids of this process's recent commit sockets. nf_tables
// stamps every event of a transaction with the committing socket's port id,
// which (unlike the pid it reports) is the same inside a PID namespace and on
// every thread, so this is how our own transactions are recognised.
class OwnPorts {
  public:
    void add(std::uint32_t port) {
        std::lock_guard lock(mutex_);
        ports_.push_back(port);
        if (ports_.size() > 64) ports_.pop_front();
    }
    bool contains(std::uint32_t port) {
        std::lock_guard lock(mutex_);
        return std::find(ports_.begin(), ports_.end(), port) != ports_.end();
    }

  private:
    std::mutex mutex_;
    std::deque<std::uint32_t> ports_;
};

OwnPorts& own_ports() {
    static OwnPorts p;
    return p;
}

}  // namespace

void commit(const Batch& batch) {
    auto nl = open_socket();
    own_ports().add(
        mnl_socket_get_portid(nl.get()));  // before sending: its events may be read at once
    if (mnl_socket_sendto(nl.get(), batch.bytes.data(), batch.bytes.size()) < 0) {
        int err = errno;
        throw StartupError(std::string("firewall: cannot send to nf_tables: ") +
                           std::strerror(err) + privilege_hint(err));
    }
    std::size_t pending = batch.acked.size();
    receive(nl.get(), [&](const nlmsghdr* nlh) {
        if (nlh->nlmsg_type != NLMSG_ERROR) return true;
        auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
        auto it = batch.acked.find(nlh->nlmsg_seq);
        if (err->error != 0) {
            int e = -err->error;
            std::string what =
                it != batch.acked.end() ? it->second : "message " + std::to_string(nlh->nlmsg_seq);
            throw StartupError("firewall: nf_tables refused '" + what + "': " + std::strerror(e) +
                               privilege_hint(e) + "; nothing was changed");
        }
        if (it != batch.acked.end() && --pending == 0) return false;
        return true;
    });
}

std::map<std::uint16_t, DropCounter> read_drop_counters(const std::string& table) {
    std::map<std::uint16_t, DropCounter> out;
    auto nl = open_socket();
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    std::uint32_t seq = next_seq(1);
    nlmsghdr* nlh =
        nftnl_rule_nlmsg_build_hdr(buf.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, seq);
    RulePtr filter(nftnl_rule_alloc());
    nftnl_rule_set_str(filter.get(), NFTNL_RULE_TABLE, table.c_str());
    nftnl_rule_nlmsg_build_payload(nlh, filter.get());
    if (mnl_socket_sendto(nl.get(), nlh, nlh->nlmsg_len) < 0) {
        int err = errno;
        throw StartupError(std::string("firewall: cannot query nf_tables: ") + std::strerror(err) +
                           privilege_hint(err));
    }
    receive(nl.get(), [&](const nlmsghdr* m) {
        if (m->nlmsg_type == NLMSG_DONE) return false;
        if (m->nlmsg_type == NLMSG_ERROR) {
            int e = -static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m))->error;
            if (e == ENOENT || e == 0) return false;  // no such table: no counters
            throw StartupError(std::string("firewall: cannot list rules: ") + std::strerror(e) +
                               privilege_hint(e));
        }
        RulePtr r(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(m, r.get()) < 0) return true;
        const char* rule_table = nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE);
        if (!rule_table || rule_table != table) return true;
        std::uint32_t len = 0;
        const void* udata = nftnl_rule_get_data(r.get(), NFTNL_RULE_USERDATA, &len);
        std::string comment;
        if (udata) {
            // The comment is a TLV: type (1 byte), length (1 byte), NUL-terminated text.
            auto* p = static_cast<const unsigned char*>(udata);
            if (len > 2 && p[0] == NFTNL_UDATA_RULE_COMMENT)
                comment.assign(reinterpret_cast<const char*>(p + 2),
                               strnlen(reinterpret_cast<const char*>(p + 2),
                                       std::min<std::size_t>(p[1], len - 2)));
        }
        const std::string prefix = "tunneld: drop ";
        if (comment.rfind(prefix, 0) != 0) return true;
        // The comment is ours, but the table can be edited from outside: parse
        // without exceptions and skip what is not a port number.
        unsigned port = 0;
        auto digits = comment.substr(prefix.size());
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
        if (ec != std::errc() || end != digits.data() + digits.size() || port == 0 || port > 65535)
            return true;
        ExprIterPtr it(nftnl_expr_iter_create(r.get()));
        while (nftnl_expr* e = nftnl_expr_iter_next(it.get())) {
            if (std::string(nftnl_expr_get_str(e, NFTNL_EXPR_NAME)) == "counter") {
                out[port].packets += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
                out[port].bytes += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
            }
        }
        return true;
    });
    return out;
}

TableEvents::TableEvents(std::string table)
    : table_(std::move(table)),
      nl_(mnl_socket_open2(NETLINK_NETFILTER, SOCK_NONBLOCK | SOCK_CLOEXEC)) {
    int group = NFNLGRP_NFTABLES;
    int rcvbuf = 1 << 20;
    if (!nl_ || mnl_socket_bind(nl_.get(), 0, MNL_SOCKET_AUTOPID) < 0 ||
        mnl_socket_setsockopt(nl_.get(), NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
        int err = errno;
        throw StartupError(std::string("firewall: cannot subscribe to nf_tables events: ") +
                           std::strerror(err) + privilege_hint(err));
    }
    setsockopt(mnl_socket_get_fd(nl_.get()), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
}

TableEvents::~TableEvents() = default;

int TableEvents::fd() const { return mnl_socket_get_fd(nl_.get()); }

std::vector<TableEvents::Change> TableEvents::read() {
    std::vector<Change> changes;
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE * 4);
    for (;;) {
        ssize_t n = recv(fd(), buf.data(), buf.size(), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == ENOBUFS) {  // the kernel dropped events: we cannot know what changed
                Change c;
                c.overrun = true;
                changes.push_back(c);
                touched_ = false;
                continue;
            }
            if (errno == EINTR) continue;
            return changes;  // EAGAIN: all read
        }
        parse_table_events(
            buf.data(), static_cast<std::size_t>(n), table_, touched_,
            [](std::uint32_t port) { return own_ports().contains(port); }, changes);
    }
}

void parse_table_events(const void* data, std::size_t size, const std::string& table, bool& touched,
                        const std::function<bool(std::uint32_t)>& own,
                        std::vector<TableEvents::Change>& out) {
    auto* nlh = static_cast<const nlmsghdr*>(data);
    int len = static_cast<int>(std::min<std::size_t>(size, INT32_MAX));
    // mnl_nlmsg_ok compares (int)nlmsg_len: a length of 2^31 or more passes it and
    // mnl_nlmsg_next then jumps outside the buffer (found by fuzz_nft_events).
    auto fits = [&] {
        return len >= static_cast<int>(sizeof(nlmsghdr)) &&
               nlh->nlmsg_len <= static_cast<std::uint32_t>(len);
    };
    for (; fits() && mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
        if ((nlh->nlmsg_type >> 8) != NFNL_SUBSYS_NFTABLES) continue;
        if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(nfgenmsg)))
            continue;  // too short for its header
        int type = nlh->nlmsg_type & 0xff;
        auto* gen = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh));
        auto* attr =
            static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
        auto* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
        auto room = [&] { return static_cast<int>(tail - reinterpret_cast<const char*>(attr)); };
        if (type == NFT_MSG_NEWGEN) {  // the end of one transaction
            TableEvents::Change c;
            for (; mnl_attr_ok(attr, room()); attr = mnl_attr_next(attr)) {
                if (mnl_attr_get_type(attr) == NFTA_GEN_PROC_PID &&
                    mnl_attr_get_payload_len(attr) >= 4)
                    c.pid = ntohl(mnl_attr_get_u32(attr));
                if (mnl_attr_get_type(attr) == NFTA_GEN_PROC_NAME)
                    c.process.assign(static_cast<const char*>(mnl_attr_get_payload(attr)),
                                     strnlen(static_cast<const char*>(mnl_attr_get_payload(attr)),
                                             mnl_attr_get_payload_len(attr)));
            }
            if (touched && !own(nlh->nlmsg_pid)) out.push_back(c);
            touched = false;
            continue;
        }
        if (gen->nfgen_family != NFPROTO_INET) continue;
        // Table, chain, rule, set and element messages all carry the table's
        // name as attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, ...).
        for (; mnl_attr_ok(attr, room()); attr = mnl_attr_next(attr))
            if (mnl_attr_get_type(attr) == 1 && mnl_attr_get_payload_len(attr) > 0 &&
                table == std::string(static_cast<const char*>(mnl_attr_get_payload(attr)),
                                     strnlen(static_cast<const char*>(mnl_attr_get_payload(attr)),
                                             mnl_attr_get_payload_len(attr))))
                touched = true;
    }
}

bool table_exists(const std::string& table) {
    auto nl = open_socket();
    std::vector<char> buf(MNL_SOCKET_BUFFER_SIZE);
    std::uint32_t seq = next_seq(1);
    nlmsghdr* nlh =
        nftnl_table_nlmsg_build_hdr(buf.data(), NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, seq);
    mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, table.c_str());
    if (mnl_socket_sendto(nl.get(), nlh, nlh->nlmsg_len) < 0) {
        int err = errno;
        throw StartupError(std::string("firewall: cannot query nf_tables: ") + std::strerror(err) +
                           privilege_hint(err));
    }
    bool exists = false;
    receive(nl.get(), [&](const nlmsghdr* m) {
        if (m->nlmsg_type == NLMSG_ERROR) {
            int e = -static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m))->error;
            if (e != 0 && e != ENOENT)
                throw StartupError(std::string("firewall: cannot query nf_tables: ") +
                                   std::strerror(e) + privilege_hint(e));
            return false;
        }
        exists = true;
        return true;  // the ACK follows
    });
    return exists;
}

}  // namespace tunneld::firewall
