// Peer identity: which names a certificate claims, and whether one is allowed.
// Pure functions; the TLS layer calls them after chain verification.
#pragma once
#include <openssl/types.h>

#include <optional>
#include <string>
#include <vector>

namespace tunneld {

struct CertIdentities {
    std::vector<std::string> dns;   // subjectAltName DNS entries
    std::vector<std::string> uris;  // subjectAltName URI entries (e.g. spiffe://...)
    std::vector<std::string> ips;   // subjectAltName IP entries (text); never an identity
    std::string common_name;        // subject CN; used only when there is no SAN DNS/URI
};

// Text form of a SAN IP address (4 or 16 bytes); "" for anything else.
std::string ip_text(const ASN1_OCTET_STRING* ip);

// Reads the SAN DNS/URI/IP entries and the subject CN of `cert` (not owned).
CertIdentities extract_identities(X509* cert);

// Returns the entry of `allow` that one of `ids` names (as written in `allow`,
// so callers can compare it with configured names exactly), or nullopt.
// DNS names compare case-insensitively, URIs exactly. The CN is a fallback only
// for certificates with no SAN DNS/URI at all. A name containing '*' never
// matches: a wildcard certificate cannot stand for a specific node.
std::optional<std::string> match_identity(const CertIdentities& ids,
                                          const std::vector<std::string>& allow);

// A short description for logs: "dns:a,b uri:c" or "cn:x"; each name escaped
// and capped (printable.hpp), since a certificate field is outside text.
std::string describe_identities(const CertIdentities& ids);

}  // namespace tunneld
