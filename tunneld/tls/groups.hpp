// Key-exchange groups (tls.groups) as the running OpenSSL has them: the
// post-quantum hybrid X25519MLKEM768 exists in OpenSSL 3.5 and later (Debian 13,
// RHEL 10), the elliptic curves everywhere. One binary serves both: the list is
// filtered here, at run time, by what the loaded libssl accepts.
#pragma once
#include <openssl/ssl.h>

#include <string>
#include <vector>

namespace tunneld {

// The names of `wanted` (tls.groups, in order) that the running OpenSSL can
// negotiate; the others are dropped. Never throws.
std::vector<std::string> available_groups(const std::vector<std::string>& wanted);

// Sets `available` (non-empty, from available_groups) on `ctx` in order of
// preference. Where OpenSSL takes key-share marks (3.5 and later), a client
// sends key shares for the first post-quantum group and the first classic one,
// so that a peer without the hybrid (OpenSSL 3.0) picks the classic share at
// once instead of asking again (HelloRetryRequest: one more round trip); older
// OpenSSL sends its single share for the first group. Returns false when
// OpenSSL refuses the list.
bool set_groups(SSL_CTX* ctx, const std::vector<std::string>& available);

// The group the handshake of `ssl` agreed on, named as in tls.groups
// ("X25519MLKEM768", "X25519", "P-256", ...); "" before a handshake or without
// one (a session resumed without a key exchange).
std::string negotiated_group(SSL* ssl);

// The OpenSSL this binary was built with, the one it runs with, and whether
// the latter has the post-quantum hybrid, in three lines:
// "built with OpenSSL 3.0.17 1 Jul 2025\nrunning with OpenSSL 3.5.1 1 Jul 2025\n
// post-quantum key exchange: X25519MLKEM768".
std::string openssl_versions();

}  // namespace tunneld
