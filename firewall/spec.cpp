#include "firewall/spec.hpp"

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
        for (int bit = p.length; bit < static_cast<int>(n * 8); ++bit)
            r.last[bit / 8] |= 0x80 >> (bit % 8);
        ranges.push_back(r);
    }
    std::sort(ranges.begin(), ranges.end(),
              [](const Interval& a, const Interval& b) { return a.first < b.first; });
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

std::vector<Endpoint> plaintext_listeners(const Config& cfg) {
    std::vector<Endpoint> out;
    if (cfg.inbound) {
        if (cfg.inbound->local.port) out.push_back(cfg.inbound->local);
        for (const auto& sc : cfg.inbound->services)
            if (sc.local.port) out.push_back(sc.local);
    }
    for (const auto& p : cfg.peers) {
        if (p.has_local()) out.push_back(p.local);
        for (const auto& s : p.services) out.push_back(s.local);
    }
    for (const auto& r : cfg.routes) out.push_back(r.local);
    if (cfg.health.enabled)
        for (const auto& ep : cfg.health.listen) out.push_back(ep);
    return out;
}

GuardSpec make_spec(const Config& cfg, const std::vector<Prefix>& peer_addresses) {
    GuardSpec spec;
    spec.table = cfg.firewall ? cfg.firewall->table : "tunneld";
    std::map<std::uint16_t, std::pair<bool, std::vector<std::string>>>
        wanted;  // port -> (peers, prefixes)
    if (cfg.firewall)
        for (const auto& p : cfg.firewall->protect) wanted[p.port] = {p.peers, p.prefixes};
    if (cfg.inbound) {
        for (const auto& ep : cfg.inbound->listen) wanted[ep.port].first = true;
        // The local backends the tunnel port stands in front of (postgres and
        // every service), when they are on this host: loopback only unless
        // firewall.protect lists the port, so the tunnel port is the way in.
        auto backend = [&](const Endpoint& be) {
            if (!be.is_unix() && is_loopback(be)) wanted.try_emplace(be.port);
        };
        backend(cfg.inbound->backend);
        for (const auto& sc : cfg.inbound->services) backend(sc.backend);
    }
    // Every plaintext listener of our own: loopback-only unless listed. They
    // bind loopback addresses, but with route_localnet=1 (kube-proxy, Docker
    // without the userland proxy) a neighbour can send to 127.0.0.1 through
    // eth0, and inbound.local is postgres without TLS, a route or a peer's
    // local port postgres with this node's identity. A public one is listed
    // in firewall.protect (the config loader insists).
    for (const auto& ep : plaintext_listeners(cfg))
        if (!ep.is_unix()) wanted.try_emplace(ep.port);
    for (const auto& [port, allow] : wanted) {
        PortGuard g;
        g.port = port;
        auto add = [&](const Prefix& p) { (p.v6 ? g.v6 : g.v4).push_back(p); };
        if (allow.first)
            for (const auto& p : peer_addresses) add(p);
        for (const auto& text : allow.second)
            if (auto p = parse_prefix(text)) add(*p);  // validated by the config parser
        spec.ports.push_back(std::move(g));
    }
    return spec;
}

}  // namespace tunneld::firewall
