// `tunneld certs ...`: each function is one subcommand. They print a short
// report to `out` and return the exit code; problems a user can fix arrive as
// StartupError (caught in main, one line, exit 1).
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "tunneld/config/duration.hpp"

namespace tunneld::certs {

struct InitCaOptions {
    std::string out;
    std::string name;  // "" = "tunneld CA <date> <random>": two CAs never share a name
    int days = 3650;
    std::string key_type = "ec-p256";
};
// Makes OUT/ca.key (0600) and OUT/ca.crt. Refuses to touch an existing CA.
int init_ca(const InitCaOptions& o, std::ostream& out);

struct IssueOptions {
    std::string ca;
    std::string name;
    std::vector<std::string> dns;
    std::vector<std::string> ips;
    int days = 90;
    std::string key_type;  // default: the CA's key type
    std::string csr;       // sign this CSR's key (for exactly name/dns/ips) instead of making a key
    bool accept_csr_sans = false;  // sign even when the CSR asks for other SANs than name/dns/ips
    std::string out;
};
// Makes OUT/NAME.key (0600), OUT/NAME.crt and a copy of the CA as OUT/ca.crt.
// With a CSR: only OUT/NAME.crt (and ca.crt); the key stays where the CSR was made.
int issue(const IssueOptions& o, std::ostream& out);

// Prints subject, SANs, issuer, serial, validity with days left, SPKI sha256,
// key type of every certificate in `files` (CRLs and keys are described too),
// and flags expired / not yet valid / not issued by a CA given alongside.
// Returns 1 when a problem was flagged.
int show(const std::vector<std::string>& files, std::ostream& out);

// Adds a serial to the CA's revoked list. `tunneld certs crl` publishes it.
int revoke(const std::string& ca_dir, const std::string& serial, std::ostream& out);
// Writes a CRL of every revoked serial, signed by the CA, valid for `days`.
int crl(const std::string& ca_dir, const std::string& out_path, int days, std::ostream& out);

struct RotateOptions {
    std::string peer;  // node config
    std::string ca;    // CA directory (rotate) — empty for install
    int days = 90;
    Duration verify_timeout = std::chrono::seconds(30);
};
// New key and certificate for the node's identity and SANs, validated against
// tls.ca, installed atomically over tls.key / tls.cert (old pair kept as .prev),
// then confirmed live: the running daemon reloads on its own (it watches its TLS
// files) and its inbound listener must present the new serial.
int rotate(const RotateOptions& o, std::ostream& out);

// Makes a new key next to tls.key ("<key>.next", 0600) and writes a CSR for the
// node's identity and SANs to `csr_path` ("-" = stdout). The key never leaves.
int csr(const std::string& peer, const std::string& csr_path, std::ostream& out);
// Installs `cert_path` (issued for the CSR) with "<key>.next" the same way
// rotate does, and confirms it live.
int install(const RotateOptions& o, const std::string& cert_path, std::ostream& out);

}  // namespace tunneld::certs
