// A CA directory as `tunneld certs init-ca` makes it:
//   ca.crt        the CA certificate (give it to every node as tls.ca)
//   ca.key        the CA private key, 0600; never leaves this directory
//   revoked.txt   one revoked serial per line: "<SERIAL-HEX> <unix-seconds>"
#pragma once
#include <string>
#include <vector>

#include "certs/pki.hpp"

namespace tunneld::certs {

struct CaDir {
    std::string dir;
    X509Ptr cert;
    EvpPkeyPtr key;

    std::string cert_path() const { return dir + "/ca.crt"; }
    std::string key_path() const { return dir + "/ca.key"; }
    std::string revoked_path() const { return dir + "/revoked.txt"; }
};

// Loads ca.crt and ca.key from `dir`, checking the key's permissions and that
// the two belong together. Throws StartupError saying what is missing or wrong
// (e.g. "…/ca.key: cannot read private key: No such file or directory — is this
// a directory made by `tunneld certs init-ca`?").
CaDir load_ca_dir(const std::string& dir);

// Reads revoked.txt (missing file = nothing revoked). Throws on a malformed line.
std::vector<Revoked> read_revoked(const CaDir& ca);
// Appends `serial_hex` (if not already there) and rewrites revoked.txt atomically.
// Returns false when it was already revoked.
bool add_revoked(const CaDir& ca, const std::string& serial_hex);

}  // namespace tunneld::certs
