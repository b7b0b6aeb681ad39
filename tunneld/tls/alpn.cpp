#include "tunneld/tls/alpn.hpp"

namespace tunneld {

std::string service_alpn(std::string_view name) {
    return std::string(kServiceAlpnPrefix) + std::string(name);
}

std::string_view service_of_alpn(std::string_view id) {
    if (id.size() <= kServiceAlpnPrefix.size() ||
        id.substr(0, kServiceAlpnPrefix.size()) != kServiceAlpnPrefix)
        return {};
    return id.substr(kServiceAlpnPrefix.size());
}

const AlpnPolicy::Entry* AlpnPolicy::find(std::string_view id) const {
    for (const auto& e : entries)
        if (e.id == id) return &e;
    return nullptr;
}

std::string AlpnPolicy::service_names() const {
    std::string out;
    for (const auto& e : entries)
        if (!e.service.empty()) out += (out.empty() ? "" : ", ") + e.service;
    return out.empty() ? "none" : out;
}

AlpnPolicy make_alpn_policy(const Config& cfg) {
    AlpnPolicy p;
    if (!cfg.inbound) return p;
    auto with_self = [&](std::vector<std::string> allow) {
        allow.push_back(cfg.node);
        return allow;
    };
    p.entries.push_back({kAlpnData, "", with_self(cfg.inbound->allow)});
    p.entries.push_back({kAlpnProbe, "", with_self(cfg.inbound->allow)});
    for (const auto& s : cfg.inbound->services)
        p.entries.push_back({service_alpn(s.name), s.name, with_self(s.allow)});
    return p;
}

}  // namespace tunneld
