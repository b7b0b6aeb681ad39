// The application protocols of the inbound port, named by ALPN: "postgresql"
// (inbound.backend), "tunneld-probe" (the health probe) and one id per
// inbound.services entry, "tunneld-svc/<name>". Neither fixed id contains '/',
// so no service id can ever be one of them. The server picks by the policy
// below during the ClientHello, before any certificate is looked at; the policy
// also says who may use each protocol, so a peer allowed one service only fails
// the handshake (alert, identity_not_allowed) on any other.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "tunneld/config/config.hpp"

namespace tunneld {

inline constexpr const char* kAlpnData = "postgresql";
inline constexpr const char* kAlpnProbe = "tunneld-probe";
inline constexpr std::string_view kServiceAlpnPrefix = "tunneld-svc/";

// "patroni" -> "tunneld-svc/patroni".
std::string service_alpn(std::string_view name);
// "tunneld-svc/patroni" -> "patroni"; "" for an id that is not a service's.
std::string_view service_of_alpn(std::string_view id);

struct AlpnPolicy {
    struct Entry {
        std::string id;                  // the ALPN id
        std::string service;             // "" for postgresql and the probe
        std::vector<std::string> allow;  // identities that may use it
    };
    std::vector<Entry> entries;

    const Entry* find(std::string_view id) const;
    // "etcd-client, patroni", or "none" (for messages).
    std::string service_names() const;
};

// postgresql and tunneld-probe: inbound.allow; each service: its own allow (or
// inbound.allow). This node's own identity is added to every entry: it may
// probe itself (`certs rotate`); the inbound side refuses it anything else.
AlpnPolicy make_alpn_policy(const Config& cfg);

}  // namespace tunneld
