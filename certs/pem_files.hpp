// PEM files: reading with errors that name the file, and writing atomically
// (temporary file in the same folder, fsync, rename, fsync of the folder), so a
// reader (the daemon's file watch) never sees half a file.
#pragma once
#include <sys/types.h>

#include <string>
#include <vector>

#include "tunneld/net/openssl_ptr.hpp"

namespace tunneld::certs {

// Each throws StartupError naming `path` when it cannot be read or parsed.
X509Ptr read_cert(const std::string& path);
std::vector<X509Ptr> read_certs(const std::string& path);  // every certificate in the file
EvpPkeyPtr read_key(const std::string& path);
X509ReqPtr read_csr(const std::string& path);

std::string to_pem(X509* cert);
std::string to_pem(EVP_PKEY* key);  // PKCS#8, unencrypted
std::string to_pem(X509_REQ* csr);
std::string to_pem(X509_CRL* crl);

// Writes `data` to `path` atomically with `mode` (and, when replacing a file,
// that file's owner and group). With keep_previous, an
// existing file is first hard-linked to "<path>.prev" (replacing an older .prev).
// Throws StartupError naming the path and the system error.
void write_file_atomic(const std::string& path, const std::string& data, mode_t mode,
                       bool keep_previous);

}  // namespace tunneld::certs
