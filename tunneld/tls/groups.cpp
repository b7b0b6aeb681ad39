// See groups.hpp.
#include "tunneld/tls/groups.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/opensslv.h>

#include <cstring>

#include "tunneld/net/openssl_ptr.hpp"

namespace tunneld {
namespace {

bool post_quantum(const std::string& name) { return name.find("MLKEM") != std::string::npos; }

std::string joined(const std::vector<std::string>& names, bool mark_key_shares) {
    std::string out;
    bool pq_marked = false, classic_marked = false;
    for (const auto& n : names) {
        if (!out.empty()) out += ':';
        bool& marked = post_quantum(n) ? pq_marked : classic_marked;
        if (mark_key_shares && !marked) {
            out += '*';
            marked = true;
        }
        out += n;
    }
    return out;
}

}  // namespace

std::vector<std::string> available_groups(const std::vector<std::string>& wanted) {
    std::vector<std::string> out;
    SslCtxPtr probe(SSL_CTX_new(TLS_method()));
    if (!probe) return out;
    for (const auto& g : wanted)
        if (SSL_CTX_set1_groups_list(probe.get(), g.c_str()) == 1) out.push_back(g);
    ERR_clear_error();  // the refusals of unknown names are not errors here
    return out;
}

bool set_groups(SSL_CTX* ctx, const std::vector<std::string>& available) {
    // Key-share marks only help when both kinds are offered; OpenSSL before 3.5
    // refuses the '*' syntax, which is the test for it.
    bool both = false, pq = false, classic = false;
    for (const auto& g : available) (post_quantum(g) ? pq : classic) = true;
    both = pq && classic;
    if (both && SSL_CTX_set1_groups_list(ctx, joined(available, true).c_str()) == 1) return true;
    ERR_clear_error();
    return SSL_CTX_set1_groups_list(ctx, joined(available, false).c_str()) == 1;
}

std::string negotiated_group(SSL* ssl) {
    // Before the handshake OpenSSL 3.0 has no session to read it from (and crashes).
    if (!SSL_is_init_finished(ssl) || !SSL_get_session(ssl)) return "";
    int id = SSL_get_negotiated_group(ssl);
    if (id == 0) return "";
    const char* name = SSL_group_to_name(ssl, id);
    if (!name) return "";
    // OpenSSL's names for the curves (x25519, secp256r1) in tls.groups' spelling.
    static const struct {
        const char* openssl;
        const char* ours;
    } names[] = {{"x25519", "X25519"},    {"x448", "X448"},       {"secp256r1", "P-256"},
                 {"prime256v1", "P-256"}, {"secp384r1", "P-384"}, {"secp521r1", "P-521"}};
    for (const auto& n : names)
        if (strcasecmp(name, n.openssl) == 0) return n.ours;
    return name;
}

std::string openssl_versions() {
    // Appended piece by piece: GCC 12 reports a + chain of literals and strings
    // as out of bounds (-Warray-bounds, a known false positive).
    std::string out = "built with ";
    out.append(OPENSSL_VERSION_TEXT)
        .append("\nrunning with ")
        .append(OpenSSL_version(OPENSSL_VERSION));
    out.append("\npost-quantum key exchange: ");
    if (available_groups({"X25519MLKEM768"}).empty())
        out.append("not available (X25519MLKEM768 needs OpenSSL 3.5 or later)");
    else
        out.append("X25519MLKEM768");
    return out;
}

}  // namespace tunneld
