#include "firewall/spec.hpp"

#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <map>

namespace tunneld::firewall {

namespace {

using Bytes = std::array<std::uint8_t, 16>;

// Adds one to a big-endian number of `n` bytes; returns false on overflow.
bool increment(Bytes& b, std::size_t n) {
    for (std::size_t i = n; i-- > 0;)
        if (++b[i] != 0) return true;
    return false;
}

}  // namespace

std::vector<Interval> merge(const std::vector<Prefix>& prefixes, bool v6) {
    std::size_t n = v6 ? 16 : 4;
    std::vector<Interval> ranges;
    for (const auto& p : prefixes) {
        if (p.v6 != v6) continue;
        Interval r;
        r.first = p.addr;
        r.last = p.addr;
        for (int bit = p.length; bit < static_cast<int>(n * 8); ++bit) r.last[bit / 8] |= 0x80 >> (bit % 8);
        ranges.push_back(r);
    }
    std::sort(ranges.begin(), ranges.end(), [](const Interval& a, const Interval& b) { return a.first < b.first; });
    std::vector<Interval> out;
    for (const auto& r : ranges) {
        if (!out.empty()) {
            Bytes next = out.back().last;
            bool fits = !increment(next, n) || r.first <= next;  // overlapping or adjacent
            if (fits) {
                out.back().last = std::max(out.back().last, r.last);
                continue;
            }
        }
        out.push_back(r);
    }
    return out;
}

GuardSpec make_spec(const Config& cfg, const std::vector<Prefix>& peer_addresses) {
    GuardSpec spec;
    spec.table = cfg.firewall ? cfg.firewall->table : "tunneld";
    std::map<std::uint16_t, std::pair<bool, std::vector<std::string>>> wanted;  // port -> (peers, prefixes)
    if (cfg.firewall)
        for (const auto& p : cfg.firewall->protect) wanted[p.port] = {p.peers, p.prefixes};
    if (cfg.inbound)
        for (const auto& ep : cfg.inbound->listen) wanted[ep.port].first = true;
    for (const auto& [port, allow] : wanted) {
        PortGuard g;
        g.port = port;
        auto add = [&](const Prefix& p) { (p.v6 ? g.v6 : g.v4).push_back(p); };
        if (allow.first)
            for (const auto& p : peer_addresses) add(p);
        for (const auto& text : allow.second) {
            std::string why;
            if (auto p = parse_prefix(text, why)) add(*p);  // validated by the config parser
        }
        spec.ports.push_back(std::move(g));
    }
    return spec;
}

std::vector<Prefix> resolve_peers(const Config& cfg, std::vector<std::string>& errors) {
    std::vector<Prefix> out;
    for (const auto& peer : cfg.peers) {
        addrinfo hints{};
        hints.ai_socktype = SOCK_STREAM;
        addrinfo* res = nullptr;
        int rc = getaddrinfo(peer.connect.host.c_str(), nullptr, &hints, &res);
        if (rc != 0) {
            errors.push_back(peer.connect.host + ": " + gai_strerror(rc));
            continue;
        }
        for (addrinfo* a = res; a; a = a->ai_next) {
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
        freeaddrinfo(res);
    }
    return out;
}

}  // namespace tunneld::firewall
