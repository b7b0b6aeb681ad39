#include "tunneld/tls/context.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "tunneld/config/key_file.hpp"
#include "tunneld/error.hpp"
#include "tunneld/net/openssl_ptr.hpp"
#include "tunneld/tls/groups.hpp"
#include "tunneld/tls/identity.hpp"

namespace tunneld {

namespace {

constexpr const char* kCipherSuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

// What one read(2) of a busy connection takes in (as much as the relay's block,
// relay/buffers.hpp): 256 KiB rather than 64 moved 1.17x the bytes per second at
// 0.81x the CPU per GiB on loopback (fewer reads, writes and wakeups per byte).
// Held only while data flows (SSL_MODE_RELEASE_BUFFERS, SSL_free_buffers).
constexpr std::size_t kReadAheadBytes = 256 * 1024;

// A session ticket is good for one hour: far inside the 1-day expiry warning, so
// resumption never carries a session much past what a full handshake would allow
// (and every resumption re-checks notAfter and the CRL anyway).
constexpr long kTicketLifetimeSeconds = 3600;

// Sessions a server keeps for resumption, the least recently used dropped first.
// Every connection gets a new ticket (an OpenSSL client uses a TLS 1.3 ticket
// once), and a client keeps only its newest per peer and service, so a few per
// client slot are ever used again; each costs about a KiB (the certificates are
// shared, not copied).
constexpr long kSessionCacheSize = 256;

int peer_check_index() {
    static const int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return idx;
}
int session_slot_index() {
    static const int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return idx;
}
int generation_index() {
    static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return idx;
}

[[noreturn]] void fail(const std::string& what) {
    auto detail = openssl_errors();
    throw StartupError(detail.empty() ? what : what + ": " + detail);
}

void require_readable(const std::string& path, const char* key) {
    std::ifstream f(path);
    if (!f) throw StartupError(path + " (tls." + key + "): cannot read: " + std::strerror(errno));
}

// What the handshake of `ssl` knows so far: the peer's names and the agreed ALPN.
AuthFacts facts_of(SSL* ssl, X509* leaf, bool finished) {
    AuthFacts f;
    f.server = SSL_is_server(ssl) == 1;
    f.finished = finished;
    f.presented = extract_identities(leaf);
    const unsigned char* alpn = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &len);
    if (alpn) f.alpn.assign(reinterpret_cast<const char*>(alpn), len);
    return f;
}

// Verification: OpenSSL checks the chain, then at depth 0 decide() the rest
// (authorize.hpp), so a refused peer gets an alert during the handshake.
int verify_callback(int preverify_ok, X509_STORE_CTX* store) {
    if (!preverify_ok) return 0;  // the chain: SSL_get_verify_result says why
    if (X509_STORE_CTX_get_error_depth(store) != 0) return 1;
    auto* ssl =
        static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* check = ssl ? static_cast<PeerCheck*>(SSL_get_ex_data(ssl, peer_check_index())) : nullptr;
    if (!check) {  // fail closed: no policy attached means nobody is allowed
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    check->verdict =
        decide(facts_of(ssl, X509_STORE_CTX_get_current_cert(store), false), check->auth);
    if (check->verdict.ok()) return 1;
    check->refused_in_callback = true;
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

// The server's choice of protocol: the client's first id the policy serves
// (decide() rules on who may use it, at the certificate).
int alpn_select(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
    auto* check = static_cast<PeerCheck*>(SSL_get_ex_data(ssl, peer_check_index()));
    if (!check || !check->auth.protocols) {
        static const unsigned char ours[] = "\x0apostgresql\x0dtunneld-probe";
        unsigned char* selected = nullptr;
        if (SSL_select_next_proto(&selected, outlen, ours, sizeof ours - 1, in, inlen) !=
            OPENSSL_NPN_NEGOTIATED)
            return SSL_TLSEXT_ERR_ALERT_FATAL;
        *out = selected;
        return SSL_TLSEXT_ERR_OK;
    }
    for (unsigned int i = 0; i < inlen;) {
        unsigned int len = in[i];
        if (len == 0 || i + 1 + len > inlen) break;  // malformed: OpenSSL checked, but be sure
        std::string_view id(reinterpret_cast<const char*>(in + i + 1), len);
        if (const auto* entry = check->auth.protocols->find(id)) {
            check->protocol = entry->id;
            *out = in + i + 1;
            *outlen = static_cast<unsigned char>(len);
            return SSL_TLSEXT_ERR_OK;
        }
        if (auto name = std::string(service_of_alpn(id));
            check->unknown_service.empty() && !name.empty())  // the name is logged: only if clean
            check->unknown_service = is_valid_service_name(name) ? name : "(not a service name)";
        i += 1 + len;
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
}

int new_session(SSL* ssl, SSL_SESSION* session) {
    auto* slot = static_cast<SessionSlot*>(SSL_get_ex_data(ssl, session_slot_index()));
    if (!slot) return 0;
    auto* gen =
        static_cast<std::uint64_t*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), generation_index()));
    slot->store(SslSessionPtr(session), gen ? *gen : 0);
    return 1;
}

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME* t) {
    struct tm tm {};
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return {};
    return std::chrono::system_clock::from_time_t(timegm(&tm));
}

// Loads every CRL in `path` into `store`, turns on leaf revocation checks, and
// returns the earliest nextUpdate. A CRL already past its nextUpdate is refused:
// with it loaded, every peer would be refused.
std::chrono::system_clock::time_point load_crls(X509_STORE* store, const std::string& path) {
    BioPtr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio) fail(path + " (tls.crl): cannot open");
    int count = 0;
    auto earliest = std::chrono::system_clock::time_point::max();
    for (;;) {
        X509CrlPtr crl(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
        if (!crl) break;
        const ASN1_TIME* next = X509_CRL_get0_nextUpdate(crl.get());
        if (next && X509_cmp_current_time(next) <= 0)
            throw StartupError(
                path +
                " (tls.crl): this CRL expired (nextUpdate passed); with it every "
                "peer would be refused. Publish a fresh one: tunneld certs crl --ca DIR --out " +
                path);
        if (next) earliest = std::min(earliest, to_time_point(next));
        if (X509_STORE_add_crl(store, crl.get()) != 1) fail(path + " (tls.crl): cannot add CRL");
        ++count;
    }
    ERR_clear_error();  // the loop ends on "no start line"
    if (count == 0) fail(path + " (tls.crl): no PEM CRL found");
    // The whole chain, not only the leaf: an intermediate revoked by its CA counts too.
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    return earliest;
}

// OpenSSL fills a certificate's extension cache on first use, under that
// certificate's lock, while a verification on another thread may read the
// cache without it (ThreadSanitizer reports the race: two first outbound
// handshakes on two I/O threads). Filling it here, before any handshake, for
// every certificate a context shares between connections (its store's CAs,
// its own certificate and chain) leaves nothing to write later.
void fill_extension_caches(SSL_CTX* ctx) {
    STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx));
    for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i)
        if (X509* x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objects, i)))
            X509_check_purpose(x, -1, 0);
    if (X509* own = SSL_CTX_get0_certificate(ctx)) X509_check_purpose(own, -1, 0);
    STACK_OF(X509)* chain = nullptr;
    if (SSL_CTX_get0_chain_certs(ctx, &chain) == 1)
        for (int i = 0; i < sk_X509_num(chain); ++i)
            X509_check_purpose(sk_X509_value(chain, i), -1, 0);
}

void common_setup(SSL_CTX* ctx, const TlsFiles& files, EVP_PKEY* key,
                  const std::uint64_t* generation,
                  std::optional<std::chrono::system_clock::time_point>& crl_next_update) {
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1) fail("cannot require TLS 1.3");
    if (SSL_CTX_set_ciphersuites(ctx, kCipherSuites) != 1) fail("cannot set TLS 1.3 cipher suites");
    auto groups = available_groups(files.groups);
    std::string listed;
    for (const auto& g : files.groups) listed += (listed.empty() ? "" : ", ") + g;
    if (groups.empty())
        fail("none of tls.groups [" + listed + "] is available in " +
             OpenSSL_version(OPENSSL_VERSION) +
             " (the ML-KEM hybrids need OpenSSL 3.5 or later; add X25519)");
    if (!set_groups(ctx, groups)) fail("cannot set tls.groups [" + listed + "]");
    if (SSL_CTX_use_certificate_chain_file(ctx, files.cert.c_str()) != 1)
        fail(files.cert + " (tls.cert): not a PEM certificate chain");
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
        fail(files.key + " (tls.key) does not belong to the certificate in " + files.cert);
    if (SSL_CTX_load_verify_locations(ctx, files.ca.c_str(), nullptr) != 1)
        fail(files.ca + " (tls.ca): not a PEM CA bundle");
    if (!files.crl.empty()) crl_next_update = load_crls(SSL_CTX_get_cert_store(ctx), files.crl);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // Read ahead: one read(2) fetches several records, instead of two reads
    // (header, body) per 16 KiB record.
    SSL_CTX_set_read_ahead(ctx, 1);
    SSL_CTX_set_default_read_buffer_len(ctx, kReadAheadBytes);
    if (SSL_CTX_set_ex_data(ctx, generation_index(), const_cast<std::uint64_t*>(generation)) != 1)
        fail("cannot attach TLS context data");
}

EvpPkeyPtr read_private_key(const std::string& path) {
    BioPtr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio) fail(path + " (tls.key): cannot open");
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
    if (!key) fail(path + " (tls.key): not a PEM private key (or it is encrypted)");
    return key;
}

X509Ptr read_certificate(const std::string& path) {
    BioPtr bio(BIO_new_file(path.c_str(), "r"));
    if (!bio) fail(path + " (tls.cert): cannot open");
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) fail(path + " (tls.cert): no PEM certificate found");
    return cert;
}

// Our own certificate must chain to the configured CA bundle (otherwise every
// peer would refuse us, which is far harder to diagnose from the other side).
void verify_own_chain(SSL_CTX* ctx, X509* cert, const TlsFiles& files) {
    STACK_OF(X509)* extra = nullptr;
    SSL_CTX_get0_chain_certs(ctx, &extra);
    X509StoreCtxPtr vctx(X509_STORE_CTX_new());
    if (!vctx || X509_STORE_CTX_init(vctx.get(), SSL_CTX_get_cert_store(ctx), cert, extra) != 1)
        fail("cannot verify " + files.cert);
    X509_STORE_CTX_set_purpose(vctx.get(), X509_PURPOSE_SSL_CLIENT);
    if (X509_verify_cert(vctx.get()) != 1) {
        int err = X509_STORE_CTX_get_error(vctx.get());
        ERR_clear_error();
        throw StartupError(files.cert + " (tls.cert) does not verify against " + files.ca +
                           " (tls.ca): " + X509_verify_cert_error_string(err));
    }
}

}  // namespace

std::string openssl_errors() {
    std::string out;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        if (!out.empty()) out += "; ";
        out += buf;
    }
    return out;
}

bool is_revoked(X509* cert, X509_STORE* store) {
    if (!cert || !store) return false;
    STACK_OF(X509_OBJECT)* objects = X509_STORE_get0_objects(store);
    for (int i = 0; i < sk_X509_OBJECT_num(objects); ++i) {
        X509_CRL* crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objects, i));
        if (!crl || X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(cert)) != 0)
            continue;
        X509_REVOKED* entry = nullptr;
        if (X509_CRL_get0_by_cert(crl, &entry, cert) == 1) return true;
    }
    return false;
}

int TlsMaterial::days_left() const {
    auto left = not_after - std::chrono::system_clock::now();
    return static_cast<int>(std::chrono::duration_cast<std::chrono::hours>(left).count() / 24);
}

std::shared_ptr<const TlsMaterial> load_tls_material(const TlsFiles& files, const std::string& node,
                                                     std::uint64_t generation) {
    require_readable(files.ca, "ca");
    require_readable(files.cert, "cert");
    if (auto problem = key_file_problem(files.key); !problem.empty()) throw StartupError(problem);
    if (!files.crl.empty()) require_readable(files.crl, "crl");

    auto material = std::make_shared<TlsMaterial>();
    material->generation = generation;
    material->rekey_bytes = files.rekey_bytes;
    material->rekey_interval = files.rekey_interval;
    const std::uint64_t* gen = &material->generation;

    material->server.reset(SSL_CTX_new(TLS_server_method()));
    material->client.reset(SSL_CTX_new(TLS_client_method()));
    if (!material->server || !material->client) fail("cannot create TLS context");

    X509Ptr cert = read_certificate(files.cert);
    EvpPkeyPtr key = read_private_key(files.key);
    if (X509_check_private_key(cert.get(), key.get()) != 1) {
        ERR_clear_error();
        throw StartupError(files.key + " (tls.key) does not belong to the certificate in " +
                           files.cert + " (tls.cert); install the matching pair");
    }

    SSL_CTX* s = material->server.get();
    common_setup(s, files, key.get(), gen, material->crl_next_update);
    STACK_OF(X509_NAME)* ca_names = SSL_load_client_CA_file(files.ca.c_str());
    if (!ca_names) fail(files.ca + " (tls.ca): no CA certificate found");
    SSL_CTX_set_client_CA_list(s, ca_names);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_callback);
    static const unsigned char sid_ctx[] = "tunneld";
    if (SSL_CTX_set_session_id_context(s, sid_ctx, sizeof sid_ctx - 1) != 1 ||
        SSL_CTX_set_num_tickets(s, 1) != 1)
        fail("cannot enable TLS session resumption");
    SSL_CTX_set_timeout(s, kTicketLifetimeSeconds);
    // Resumption from the server's own session cache (TLS 1.3 "stateful" tickets:
    // the ticket is an id): a stateless ticket carries the whole session, and
    // OpenSSL 3.0 decodes it (the client's certificate and key with it) through
    // its provider decoders on every resumption, a fifth of the CPU time of a new
    // connection through a pair (perf, bench/run.py's connection loop). The
    // cache, like the ticket keys before, lives and dies with this context (a
    // reload starts afresh).
    SSL_CTX_set_options(s, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(s, kSessionCacheSize);
    SSL_CTX_set_alpn_select_cb(s, alpn_select, nullptr);

    SSL_CTX* c = material->client.get();
    common_setup(c, files, key.get(), gen, material->crl_next_update);
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, verify_callback);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(c, new_session);

    verify_own_chain(s, cert.get(), files);
    fill_extension_caches(s);
    fill_extension_caches(c);
    auto ids = extract_identities(cert.get());
    if (!match_identity(ids, {node}))
        throw StartupError(files.cert + " (tls.cert) does not name this node '" + node +
                           "' (it has " + describe_identities(ids) +
                           "); issue a certificate with SAN DNS:" + node);
    if (X509_cmp_current_time(X509_get0_notBefore(cert.get())) >= 0)
        throw StartupError(files.cert + " (tls.cert) is not valid yet");
    if (X509_cmp_current_time(X509_get0_notAfter(cert.get())) <= 0)
        throw StartupError(files.cert + " (tls.cert) has expired");

    BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr));
    OpensslString hex(bn ? BN_bn2hex(bn.get()) : nullptr);
    if (!hex) fail(files.cert + " (tls.cert): cannot read serial number");
    material->serial_hex = hex.get();
    material->not_after = to_time_point(X509_get0_notAfter(cert.get()));
    ERR_clear_error();
    return material;
}

void attach_peer_check(SSL* ssl, PeerCheck* check) {
    SSL_set_ex_data(ssl, peer_check_index(), check);
}

const Verdict& confirm_peer(SSL* ssl, PeerCheck& check) {
    X509* peer = SSL_get0_peer_certificate(ssl);
    if (!peer) {
        check.verdict = Verdict{};
        check.verdict.failure = HandshakeFailure::no_certificate;
        check.verdict.detail = "no peer certificate";
        return check.verdict;
    }
    auto facts = facts_of(ssl, peer, true);
    if (long v = SSL_get_verify_result(ssl); v != X509_V_OK) {
        facts.chain_error = v;
        facts.chain_error_text = X509_verify_cert_error_string(v);
    }
    check.verdict = decide(facts, check.auth);
    return check.verdict;
}

void SessionSlot::store(SslSessionPtr session, std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    session_ = std::move(session);
    generation_ = generation;
}

void SessionSlot::offer(SSL* ssl, std::uint64_t generation) {
    std::lock_guard lock(mutex_);
    if (session_ && generation_ == generation && SSL_SESSION_is_resumable(session_.get()))
        SSL_set_session(ssl, session_.get());
}

void attach_session_slot(SSL* ssl, SessionSlot* slot) {
    SSL_set_ex_data(ssl, session_slot_index(), slot);
}

}  // namespace tunneld
