// How OpenSSL's verification results and error reasons map to the reasons
// tunneld logs (base/handshake_failure.hpp).
#pragma once
#include <string>

#include "tunneld/base/handshake_failure.hpp"

namespace tunneld {

// How OpenSSL's certificate verification result (X509_V_ERR_*) and its error
// reasons (SSL_R_*, alerts received) map to the reasons tunneld logs.
HandshakeFailure classify_verify_result(long x509_v_err);
HandshakeFailure classify_ssl_reason(int reason);

}  // namespace tunneld
