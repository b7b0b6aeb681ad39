#include "firewall/guard.hpp"

#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <set>

#include "firewall/nft_socket.hpp"
#include "tunneld/c_ptr.hpp"

namespace tunneld::firewall {

namespace {

class SystemResolver final : public Resolver {
  public:
    Result<std::vector<Prefix>> resolve(const std::string& host) override {
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* raw = nullptr;
        int rc = getaddrinfo(host.c_str(), nullptr, &hints, &raw);
        AddrinfoPtr res(raw);
        if (rc != 0) return Problem{host + ": " + gai_strerror(rc)};
        std::vector<Prefix> out;
        for (addrinfo* a = res.get(); a; a = a->ai_next) {
            Prefix p;
            if (a->ai_family == AF_INET)
                p = host_prefix(false, reinterpret_cast<const std::uint8_t*>(
                                           &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr));
            else if (a->ai_family == AF_INET6)
                p = host_prefix(true, reinterpret_cast<const std::uint8_t*>(
                                          &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr));
            else
                continue;
            if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
        }
        if (out.empty()) return Problem{host + ": no IPv4 or IPv6 address"};
        return out;
    }
};

class KernelNetlink final : public Netlink {
  public:
    void commit(const Batch& batch) override { firewall::commit(batch); }
    bool table_exists(const std::string& table) override { return firewall::table_exists(table); }
};

std::string join(const std::vector<Prefix>& v) {
    std::string out;
    for (const auto& p : v) out += (out.empty() ? "" : ", ") + p.to_string();
    return out.empty() ? "(none)" : out;
}

}  // namespace

Resolver& system_resolver() {
    static SystemResolver r;
    return r;
}

Netlink& kernel_netlink() {
    static KernelNetlink n;
    return n;
}

ResolvedPeers resolve_peers(const Config& cfg, Resolver& resolver) {
    ResolvedPeers out;
    for (const auto& peer : cfg.peers) {
        auto found = resolver.resolve(peer.connect.host);
        if (!found) {
            out.errors.push_back(found.error().what);
            continue;
        }
        for (const auto& p : *found)
            if (std::find(out.addresses.begin(), out.addresses.end(), p) == out.addresses.end())
                out.addresses.push_back(p);
    }
    return out;
}

std::vector<Prefix> Guard::resolve(std::map<std::string, std::vector<Prefix>>& known) {
    resolve_errors_.clear();
    known = known_;
    std::vector<Prefix> out;
    for (const auto& peer : cfg_.peers) {
        const auto& host = peer.connect.host;
        auto resolved = resolver_.resolve(host);
        std::vector<Prefix> found;
        if (!resolved) {
            ++resolve_failures_;
            auto last = known_.find(host);
            resolve_errors_.push_back(resolved.error().what);
            if (last != known_.end()) {
                resolve_errors_.back() +=
                    "; keeping its last known address(es) " + join(last->second);
                found = last->second;
            }
        } else {
            found = *resolved;
            known[host] = found;
        }
        for (const auto& p : found)
            if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
    }
    return out;
}

void Guard::apply() {
    std::map<std::string, std::vector<Prefix>> known;
    auto peers = resolve(known);
    auto spec = make_spec(cfg_, peers);
    netlink_.commit(replace_table(spec, next_seq(1000)));
    // Recorded only now that the kernel has acknowledged the batch.
    spec_ = std::move(spec);
    peers_ = std::move(peers);
    known_ = std::move(known);
}

std::string Guard::refresh() {
    std::map<std::string, std::vector<Prefix>> known;
    auto peers = resolve(known);
    if (peers == peers_) {
        known_ = std::move(known);
        return {};
    }
    auto spec = make_spec(cfg_, peers);
    netlink_.commit(replace_elements(spec, next_seq(1000)));
    spec_ = std::move(spec);
    peers_ = std::move(peers);
    known_ = std::move(known);
    return "peer addresses are now " + join(peers_);
}

bool Guard::heal() {
    if (netlink_.table_exists(spec_.table)) return false;
    netlink_.commit(replace_table(spec_, next_seq(1000)));
    return true;
}

void Guard::reapply() { netlink_.commit(replace_table(spec_, next_seq(1000))); }

void Guard::remove() {
    netlink_.commit(delete_table(cfg_.firewall ? cfg_.firewall->table : "tunneld", next_seq(2)));
}

std::string describe(const GuardSpec& spec) {
    std::string out;
    for (const auto& g : spec.ports) {
        out += "  port " + std::to_string(g.port) + ": loopback";
        std::set<std::string> said;  // a peer's address may also be listed by hand
        for (const auto* list : {&g.v4, &g.v6})
            for (const auto& p : *list)
                if (said.insert(p.to_string()).second) out += ", " + p.to_string();
        out += "; everything else dropped and counted\n";
    }
    return out;
}

}  // namespace tunneld::firewall
