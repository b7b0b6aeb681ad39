// Private-CA operations on OpenSSL 3 objects, without files or I/O: keys, the
// CA certificate, node certificates, CSRs and CRLs. Every function throws
// StartupError with OpenSSL's reason when OpenSSL refuses.
#pragma once
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tunneld/net/openssl_ptr.hpp"

namespace tunneld::certs {

enum class KeyType { ec_p256, ed25519 };
std::optional<KeyType> parse_key_type(std::string_view text);  // "ec-p256" | "ed25519"
const char* to_string(KeyType t);
// The type of an existing key (EC P-256 or Ed25519), nullopt for anything else.
std::optional<KeyType> key_type_of(EVP_PKEY* key);

EvpPkeyPtr generate_key(KeyType type);

// What a node certificate (or CSR) says: its name (CN and first SAN DNS), extra
// SAN DNS names and SAN IP addresses.
struct NodeRequest {
    std::string name;
    std::vector<std::string> dns;  // besides `name`
    std::vector<std::string> ips;  // literal IPv4/IPv6
};

// Self-signed CA: basicConstraints critical CA:TRUE pathlen:0, keyUsage critical
// keyCertSign+cRLSign, subject key identifier, random 128-bit serial.
X509Ptr make_ca_cert(const std::string& name, int days, EVP_PKEY* key);

// Node certificate for `subject_key`, signed by the CA: SAN DNS = name + dns,
// SAN IP = ips, EKU serverAuth+clientAuth, keyUsage digitalSignature,
// CA:FALSE, SKI and AKI, random 128-bit serial, valid from now-5min for `days`.
X509Ptr issue_node_cert(const NodeRequest& req, EVP_PKEY* subject_key, int days, X509* ca_cert,
                        EVP_PKEY* ca_key);

// The SAN DNS names of `req`: its name first, then `dns` without repeats.
std::vector<std::string> request_dns(const NodeRequest& req);
// Throws StartupError unless every DNS name is a valid node name (letters,
// digits, '-', '.') and every IP a literal address. issue_node_cert and
// make_csr call it too, so no unvalidated name is ever signed.
void validate_request(const NodeRequest& req);

// CSR with CN = name and the SANs of `req`, signed by `key`.
X509ReqPtr make_csr(const NodeRequest& req, EVP_PKEY* key);

// What a CSR asks for, exactly as written in it (nothing validated or dropped):
// the CN, every SAN DNS and IP, and a description of any other SAN ("URI:...").
struct CsrContents {
    std::string cn;
    std::vector<std::string> dns;
    std::vector<std::string> ips;
    std::vector<std::string> other;
};
// Reads a CSR after checking its signature. Throws StartupError when the
// signature is wrong or it has no CN.
CsrContents read_csr_contents(X509_REQ* csr);

struct Revoked {
    std::string serial_hex;
    std::int64_t revoked_at = 0;  // unix seconds
};
// CRL v2 signed by the CA, with lastUpdate now and nextUpdate now + days.
X509CrlPtr make_crl(X509* ca_cert, EVP_PKEY* ca_key, const std::vector<Revoked>& revoked, int days);

// Serial as upper-case hex of whole bytes ("0A1B..."), as tunneld logs it.
std::string serial_hex(const X509* cert);
// SHA-256 of the SubjectPublicKeyInfo, hex with colons.
std::string spki_sha256(X509* cert);
std::chrono::system_clock::time_point not_after(const X509* cert);
std::chrono::system_clock::time_point not_before(const X509* cert);

// Verifies `cert` against a store holding `ca_certs` (and CRLs when given).
// Returns "" or OpenSSL's verification error text.
std::string verify_against(X509* cert, const std::vector<X509Ptr>& ca_certs);

}  // namespace tunneld::certs
