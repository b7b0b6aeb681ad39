// decide() (tls/authorize.hpp) as a table: every authorization rule of tunneld,
// server side and client side, in the order the rules apply.
#include <gtest/gtest.h>

#include "tunneld/tls/authorize.hpp"

namespace tunneld {
namespace {

CertIdentities dns(std::string name) { return CertIdentities{{std::move(name)}, {}, {}, ""}; }

struct Row {
    const char* what;
    AuthFacts facts;
    bool use_policy;  // the server's ALPN policy below
    HandshakeFailure failure;
    Verdict::Use use;
    const char* identity;
    const char* service;
};

AlpnPolicy policy() {
    AlpnPolicy p;
    p.entries.push_back({kAlpnData, "", {"standby-1", "primary-1"}});
    p.entries.push_back({kAlpnProbe, "", {"standby-1", "primary-1"}});
    p.entries.push_back({service_alpn("patroni"), "patroni", {"app-1", "primary-1"}});
    return p;
}

AuthFacts server(CertIdentities ids, std::string alpn, bool finished = true, long chain = 0) {
    AuthFacts f;
    f.server = true;
    f.finished = finished;
    f.presented = std::move(ids);
    f.alpn = std::move(alpn);
    f.chain_error = chain;
    f.chain_error_text = chain ? "certificate has expired" : "";
    return f;
}

using F = HandshakeFailure;
using U = Verdict::Use;

TEST(Decide, ServerRulesAsATable) {
    auto p = policy();
    AuthPolicy pol{&p, {}, "primary-1", ""};
    const std::vector<Row> rows = {
        {"a peer on postgresql", server(dns("standby-1"), "postgresql"), true, F::none, U::relay,
         "standby-1", ""},
        {"names compare like DNS: case-insensitive", server(dns("STANDBY-1"), "postgresql"), true,
         F::none, U::relay, "standby-1", ""},
        {"a peer's probe", server(dns("standby-1"), "tunneld-probe"), true, F::none, U::probe,
         "standby-1", ""},
        {"a service its allow names", server(dns("app-1"), "tunneld-svc/patroni"), true, F::none,
         U::relay, "app-1", "patroni"},
        {"a service peer on postgresql", server(dns("app-1"), "postgresql"), true,
         F::identity_not_allowed, U::refuse, "", ""},
        {"a data peer on a service it is not allowed",
         server(dns("standby-1"), "tunneld-svc/patroni"), true, F::identity_not_allowed, U::refuse,
         "", ""},
        {"a stranger", server(dns("mallory"), "postgresql"), true, F::identity_not_allowed,
         U::refuse, "", ""},
        {"the chain failed first", server(dns("standby-1"), "postgresql", true, 10), true,
         F::expired, U::refuse, "", ""},
        {"no ALPN, in the verify callback", server(dns("standby-1"), "", false), true, F::no_alpn,
         U::refuse, "standby-1", ""},
        {"no ALPN, after a resumed handshake", server(dns("standby-1"), ""), true, F::no_alpn,
         U::refuse, "standby-1", ""},
        {"own identity probing (certs rotate)", server(dns("primary-1"), "tunneld-probe"), true,
         F::none, U::probe, "primary-1", ""},
        {"own identity on postgresql", server(dns("PRIMARY-1"), "postgresql"), true,
         F::identity_not_allowed, U::refuse, "primary-1", ""},
        {"own identity on a service", server(dns("primary-1"), "tunneld-svc/patroni"), true,
         F::identity_not_allowed, U::refuse, "primary-1", ""},
        {"an id the policy does not serve", server(dns("standby-1"), "tunneld-svc/nope"), true,
         F::no_alpn, U::refuse, "", ""},
        {"a wildcard never stands for a node", server(dns("*"), "postgresql"), true,
         F::identity_not_allowed, U::refuse, "", ""},
    };
    for (const auto& r : rows) {
        auto v = decide(r.facts, pol);
        EXPECT_EQ(v.failure, r.failure) << r.what << ": " << v.detail;
        EXPECT_EQ(v.use, r.use) << r.what;
        EXPECT_EQ(v.identity, r.identity) << r.what;
        EXPECT_EQ(v.service, r.service) << r.what;
        EXPECT_EQ(v.ok(), r.failure == F::none) << r.what;
        if (!v.ok()) {
            EXPECT_FALSE(v.detail.empty()) << r.what;
        }
    }
    // The messages operators read.
    EXPECT_EQ(decide(server(dns("primary-1"), "postgresql"), pol).detail,
              "this node's own identity may only probe");
    EXPECT_EQ(decide(server(dns("standby-1"), ""), pol).detail,
              "the client sent no ALPN; tunneld peers send 'postgresql'");
    EXPECT_EQ(decide(server(dns("standby-1"), "tunneld-svc/patroni"), pol).detail,
              "dns:standby-1 (not allowed to use service patroni)");
}

TEST(Decide, WithoutAPolicyTheAllowListAloneDecides) {
    AuthPolicy pol{nullptr, {"b"}, "", ""};
    EXPECT_TRUE(decide(server(dns("b"), ""), pol).ok());  // tools and tests: ALPN not required
    EXPECT_EQ(decide(server(dns("c"), "postgresql"), pol).failure, F::identity_not_allowed);
}

TEST(Decide, ClientRulesAsATable) {
    AuthPolicy pol{nullptr, {"primary-1"}, "", "postgresql"};
    auto client = [](std::string name, std::string alpn, bool finished, long chain = 0) {
        auto f = server(dns(std::move(name)), std::move(alpn), finished, chain);
        f.server = false;
        return f;
    };
    EXPECT_TRUE(decide(client("primary-1", "postgresql", true), pol).ok());
    EXPECT_EQ(decide(client("primary-1", "postgresql", true), pol).use, U::relay);
    // The server must be the peer dialled.
    EXPECT_EQ(decide(client("standby-1", "postgresql", true), pol).failure,
              F::identity_not_allowed);
    EXPECT_EQ(decide(client("primary-1", "postgresql", true, 23), pol).failure, F::revoked);
    // It must agree on the protocol asked for: checked once the handshake is done.
    EXPECT_TRUE(decide(client("primary-1", "", false), pol).ok());
    auto v = decide(client("primary-1", "", true), pol);
    EXPECT_EQ(v.failure, F::no_alpn);
    EXPECT_EQ(v.detail, "the peer agreed on '', not 'postgresql'");
    EXPECT_EQ(decide(client("primary-1", "tunneld-probe", true), pol).failure, F::no_alpn);
    // The probe asks for tunneld-probe, and a self probe is fine on the client side.
    AuthPolicy probe{nullptr, {"primary-1"}, "", "tunneld-probe"};
    EXPECT_EQ(decide(client("primary-1", "tunneld-probe", true), probe).use, U::probe);
}

}  // namespace
}  // namespace tunneld
