#include "tunneld/tls/authorize.hpp"

#include "tunneld/tls/handshake_failure.hpp"

namespace tunneld {

namespace {

Verdict refuse(HandshakeFailure f, std::string detail, std::string identity = {}) {
    Verdict v;
    v.failure = f;
    v.detail = std::move(detail);
    v.identity = std::move(identity);
    return v;
}

// Who may use the agreed protocol, and how to name it in a refusal.
struct Allowed {
    const std::vector<std::string>* names;
    std::string what;  // " (not allowed to use service X)" or ""
};

Allowed allowed_for(const AuthFacts& f, const AuthPolicy& p) {
    if (!f.server || !p.protocols) return {&p.allow, ""};
    const auto* entry = p.protocols->find(f.alpn.empty() ? std::string(kAlpnData) : f.alpn);
    if (!entry) return {nullptr, ""};
    std::string what;
    if (p.protocols->service_names() != "none")  // with services, say which protocol
        what = " (not allowed to use " +
               (entry->service.empty() ? entry->id : "service " + entry->service) + ")";
    return {&entry->allow, what};
}

}  // namespace

Verdict decide(const AuthFacts& f, const AuthPolicy& p) {
    if (f.chain_error != 0)
        return refuse(classify_verify_result(f.chain_error), f.chain_error_text);
    auto allowed = allowed_for(f, p);
    const auto presented = describe_identities(f.presented);
    if (!allowed.names)  // an ALPN id the policy does not serve (its callback picks served ones)
        return refuse(HandshakeFailure::no_alpn, "protocol '" + f.alpn + "' is not served here");
    auto matched = match_identity(f.presented, *allowed.names);
    if (!matched) return refuse(HandshakeFailure::identity_not_allowed, presented + allowed.what);
    if (f.server && p.protocols && f.alpn.empty())
        return refuse(HandshakeFailure::no_alpn,
                      "the client sent no ALPN; tunneld peers send 'postgresql'", *matched);
    if (f.server && !p.node.empty() && *matched == p.node && f.alpn != kAlpnProbe)
        return refuse(HandshakeFailure::identity_not_allowed,
                      "this node's own identity may only probe", *matched);
    if (!f.server && f.finished && !p.want_alpn.empty() && f.alpn != p.want_alpn)
        return refuse(HandshakeFailure::no_alpn,
                      "the peer agreed on '" + f.alpn + "', not '" + p.want_alpn + "'", *matched);
    Verdict v;
    v.identity = *matched;
    v.use = f.alpn == kAlpnProbe ? Verdict::Use::probe : Verdict::Use::relay;
    v.service = std::string(service_of_alpn(f.alpn));
    return v;
}

}  // namespace tunneld
