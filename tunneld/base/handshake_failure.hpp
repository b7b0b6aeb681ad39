// Why a TLS handshake failed, as logged (`handshake failed ... reason=`) and
// counted: vocabulary every floor uses (the health endpoint's counters, the
// connection log), with no TLS in it. tls/handshake_failure.hpp maps OpenSSL's
// results onto it.
#pragma once
#include <string>

namespace tunneld {

enum class HandshakeFailure {
    none,
    timeout,               // no complete handshake within timeouts.handshake
    not_tls,               // plaintext or garbage where a ClientHello was expected
    protocol_version,      // peer cannot do TLS 1.3
    no_certificate,        // client sent no certificate
    unknown_ca,            // chain does not lead to a CA in tls.ca
    expired,               // certificate expired
    not_yet_valid,         // certificate not valid yet
    revoked,               // certificate is on the CRL
    crl_expired,           // our tls.crl is past its nextUpdate: publish a fresh CRL
    identity_not_allowed,  // chain fine, identity not in inbound.allow / peers[].name
    bad_certificate,       // other certificate problem
    peer_rejected,         // the peer sent an alert (it refused us)
    no_alpn,               // no common application protocol
    no_shared_group,  // the client offers no key-exchange group of tls.groups (e.g. only ffdhe8192)
    unknown_service,  // the client asked for a service (ALPN tunneld-svc/...) not served here
    closed,           // the peer closed the connection during the handshake
    io_error,         // socket error
};

inline const char* to_string(HandshakeFailure f) {
    switch (f) {
        case HandshakeFailure::none:
            return "ok";
        case HandshakeFailure::timeout:
            return "handshake_timeout";
        case HandshakeFailure::not_tls:
            return "not_tls";
        case HandshakeFailure::protocol_version:
            return "protocol_version";
        case HandshakeFailure::no_certificate:
            return "no_certificate";
        case HandshakeFailure::unknown_ca:
            return "unknown_ca";
        case HandshakeFailure::expired:
            return "expired";
        case HandshakeFailure::not_yet_valid:
            return "not_yet_valid";
        case HandshakeFailure::revoked:
            return "revoked";
        case HandshakeFailure::crl_expired:
            return "crl_expired";
        case HandshakeFailure::identity_not_allowed:
            return "identity_not_allowed";
        case HandshakeFailure::bad_certificate:
            return "bad_certificate";
        case HandshakeFailure::peer_rejected:
            return "peer_rejected";
        case HandshakeFailure::no_alpn:
            return "no_alpn";
        case HandshakeFailure::unknown_service:
            return "unknown_service";
        case HandshakeFailure::no_shared_group:
            return "no_shared_group";
        case HandshakeFailure::closed:
            return "closed";
        case HandshakeFailure::io_error:
            return "io_error";
    }
    return "unknown";
}

struct HandshakeResult {
    HandshakeFailure failure = HandshakeFailure::none;
    std::string detail;  // OpenSSL's reason, or the identity presented
    bool ok() const { return failure == HandshakeFailure::none; }
};

}  // namespace tunneld
