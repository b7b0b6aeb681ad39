// Why a TLS handshake failed, as logged (`handshake failed ... reason=`) and
// counted. Plain data: the health endpoint's counters use it without TLS.
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
const char* to_string(HandshakeFailure f);

// How OpenSSL's certificate verification result (X509_V_ERR_*) and its error
// reasons (SSL_R_*, alerts received) map to the reasons tunneld logs.
HandshakeFailure classify_verify_result(long x509_v_err);
HandshakeFailure classify_ssl_reason(int reason);

struct HandshakeResult {
    HandshakeFailure failure = HandshakeFailure::none;
    std::string detail;  // OpenSSL's reason, or the identity presented
    bool ok() const { return failure == HandshakeFailure::none; }
};

}  // namespace tunneld
