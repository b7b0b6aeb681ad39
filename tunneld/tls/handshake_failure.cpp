// Naming and classifying TLS handshake failures (handshake_failure.hpp).
#include "tunneld/tls/handshake_failure.hpp"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

namespace tunneld {

HandshakeFailure classify_verify_result(long v) {
    switch (v) {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            return HandshakeFailure::expired;
        case X509_V_ERR_CERT_NOT_YET_VALID:
            return HandshakeFailure::not_yet_valid;
        case X509_V_ERR_CERT_REVOKED:
            return HandshakeFailure::revoked;
        case X509_V_ERR_CRL_HAS_EXPIRED:
        case X509_V_ERR_CRL_NOT_YET_VALID:
            return HandshakeFailure::crl_expired;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        case X509_V_ERR_CERT_SIGNATURE_FAILURE:
            return HandshakeFailure::unknown_ca;
        default:
            return HandshakeFailure::bad_certificate;
    }
}

HandshakeFailure classify_ssl_reason(int reason) {
    switch (reason) {
        case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
            return HandshakeFailure::no_certificate;
        case SSL_R_UNSUPPORTED_PROTOCOL:
        case SSL_R_NO_PROTOCOLS_AVAILABLE:
        case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
        case SSL_R_WRONG_SSL_VERSION:
            return HandshakeFailure::protocol_version;
        case SSL_R_WRONG_VERSION_NUMBER:
        case SSL_R_HTTP_REQUEST:
        case SSL_R_HTTPS_PROXY_REQUEST:
        case SSL_R_PACKET_LENGTH_TOO_LONG:
        case SSL_R_UNKNOWN_PROTOCOL:
        case SSL_R_RECORD_LENGTH_MISMATCH:
        case SSL_R_UNEXPECTED_MESSAGE:
        case SSL_R_UNEXPECTED_RECORD:
            return HandshakeFailure::not_tls;
        case SSL_R_NO_APPLICATION_PROTOCOL:
        case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
            return HandshakeFailure::no_alpn;
        case SSL_R_UNEXPECTED_EOF_WHILE_READING:
            return HandshakeFailure::closed;
        case SSL_R_NO_SHARED_GROUPS:
        case SSL_R_NO_SUITABLE_KEY_SHARE:
            return HandshakeFailure::no_shared_group;
        default:
            break;
    }
    // Alerts the peer sent us: reason codes are SSL_AD_REASON_OFFSET + alert.
    if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
        return HandshakeFailure::peer_rejected;
    return HandshakeFailure::bad_certificate;
}

}  // namespace tunneld
