// TLS material of one node: the SSL_CTXs used for new handshakes, built from
// the files in `tls:` and validated completely before anyone uses them.
// Reload builds a new TlsMaterial off to the side and swaps a shared_ptr;
// live connections keep the SSL objects (and thus the context) they were made with.
#pragma once
#include <openssl/ssl.h>
#include <openssl/types.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tunneld/config/config.hpp"
#include "tunneld/net/openssl_ptr.hpp"
#include "tunneld/tls/alpn.hpp"
#include "tunneld/tls/authorize.hpp"

namespace tunneld {

struct TlsMaterial {
    SslCtxPtr server;        // inbound: requires and verifies a client certificate
    SslCtxPtr client;        // outbound: presents our cert, verifies the server's
    std::string serial_hex;  // of this node's certificate
    std::chrono::system_clock::time_point not_after;  // of this node's certificate
    std::uint64_t generation = 0;                     // increases with every reload
    // Earliest nextUpdate of the loaded CRLs; unset without tls.crl. Past it,
    // OpenSSL refuses every peer, so it is watched like the certificate's expiry.
    std::optional<std::chrono::system_clock::time_point> crl_next_update;
    std::uint64_t rekey_bytes = 0;  // tls.rekey_bytes / tls.rekey_interval, for TlsStream
    std::chrono::milliseconds rekey_interval{0};

    int days_left() const;
};

// Loads and validates CA bundle, certificate chain, private key (permissions
// included) and optional CRL; checks that the key matches the certificate,
// that the certificate chains to the CA bundle, is currently valid and names
// `node` in its SAN, and that the CRL (if any) is not past its nextUpdate.
// Throws StartupError naming the file and the reason
// (with OpenSSL's error text).
std::shared_ptr<const TlsMaterial> load_tls_material(const TlsFiles& files, const std::string& node,
                                                     std::uint64_t generation);

// True when `cert` is listed on a CRL in `store` issued by the cert's issuer.
bool is_revoked(X509* cert, X509_STORE* store);

// Drains OpenSSL's thread error queue into "reason; reason" (empty if none).
std::string openssl_errors();

}  // namespace tunneld

namespace tunneld {

// One handshake's authorization: the policy it is held to (authorize.hpp) and
// what the verify and ALPN callbacks and the end of the handshake found.
struct PeerCheck {
    AuthPolicy auth;
    std::string protocol;              // server: the ALPN id the callback chose
    std::string unknown_service;       // server: a service id asked for that is not served
    Verdict verdict;                   // decide()'s last answer (after the handshake: final)
    bool refused_in_callback = false;  // the verify callback refused: the handshake failed on it
};
void attach_peer_check(SSL* ssl, PeerCheck* check);

// decide() after a completed handshake (full or resumed), from the peer's
// leaf certificate and the agreed ALPN; the verdict lands in `check.verdict`.
const Verdict& confirm_peer(SSL* ssl, PeerCheck& check);

// The newest TLS session for one outbound peer, for resumption. Thread-safe.
// A session from an older TlsMaterial generation is never offered.
class SessionSlot {
  public:
    SessionSlot() = default;
    SessionSlot(const SessionSlot&) = delete;
    SessionSlot& operator=(const SessionSlot&) = delete;
    void store(SslSessionPtr session, std::uint64_t generation);
    // Sets the stored session (if any, and of `generation`) on `ssl`.
    void offer(SSL* ssl, std::uint64_t generation);

  private:
    std::mutex mutex_;
    SslSessionPtr session_;
    std::uint64_t generation_ = 0;
};
// Makes new sessions of `ssl`'s handshake land in `slot` (with `generation`).
void attach_session_slot(SSL* ssl, SessionSlot* slot);

}  // namespace tunneld
