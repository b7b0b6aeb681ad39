// Who may do what over a TLS connection: every authorization rule of tunneld
// in one pure function, decide(facts, policy) -> Verdict, tested as a table
// (tests/unit/authorize_test.cpp). TLS calls it twice with the same rules:
// from OpenSSL's verify callback, so a refused peer gets an alert during the
// handshake, and after every handshake (a resumed one skips the callback), so
// nothing is relayed that this function did not allow.
//
// The rules, in order:
//   1. the chain verified (CA, dates, CRL): else its verify result;
//   2. the peer names an identity allowed for the protocol agreed: a server
//      looks it up in the ALPN policy (no ALPN: the postgresql entry), a client
//      wants exactly the peer it dialled;
//   3. server with a policy: a client must send ALPN (tunneld peers always do);
//   4. server: this node's own identity may only probe (`certs rotate`);
//   5. client: the server agreed on the protocol asked for (after the handshake).
#pragma once
#include <string>
#include <vector>

#include "tunneld/base/handshake_failure.hpp"
#include "tunneld/tls/alpn.hpp"
#include "tunneld/tls/identity.hpp"

namespace tunneld {

// What one side of a handshake knows about the other.
struct AuthFacts {
    bool server = true;            // we accepted (server) or dialled (client)
    bool finished = false;         // the handshake is complete (false: in the verify callback)
    long chain_error = 0;          // X509_V_OK (0), or why OpenSSL refused the chain
    std::string chain_error_text;  // its text
    CertIdentities presented;      // the peer's leaf certificate names
    std::string alpn;              // the protocol agreed ("" = none)
};

// What this side allows.
struct AuthPolicy {
    // Server: protocols served and who may use each. Null (unit tests, tools):
    // `allow` for everything, ALPN not required.
    const AlpnPolicy* protocols = nullptr;
    std::vector<std::string> allow;  // client: the peer dialled; server without protocols
    std::string node;                // server: this node (may only probe); "" = no such rule
    std::string want_alpn;           // client: the protocol asked for ("" = any)
};

struct Verdict {
    enum class Use { refuse, relay, probe };
    Use use = Use::refuse;
    HandshakeFailure failure = HandshakeFailure::none;  // when refused
    std::string detail;                                 // when refused
    std::string identity;  // the allowed identity matched (as written in the policy)
    std::string service;   // inbound.services name; "" = postgresql or the probe
    bool ok() const { return use != Use::refuse; }
};

Verdict decide(const AuthFacts& facts, const AuthPolicy& policy);

}  // namespace tunneld
