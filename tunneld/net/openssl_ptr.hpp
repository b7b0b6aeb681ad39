// One RAII owner per OpenSSL handle type. Nothing outside these owners calls
// a *_free function.
#pragma once
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tunneld/c_ptr.hpp"

namespace tunneld {

template <class T, auto Free>
using OpensslFree = CFree<T, Free>;

using SslCtxPtr = std::unique_ptr<SSL_CTX, OpensslFree<SSL_CTX, SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OpensslFree<SSL, SSL_free>>;
using SslSessionPtr = std::unique_ptr<SSL_SESSION, OpensslFree<SSL_SESSION, SSL_SESSION_free>>;
using X509Ptr = std::unique_ptr<X509, OpensslFree<X509, X509_free>>;
using X509ReqPtr = std::unique_ptr<X509_REQ, OpensslFree<X509_REQ, X509_REQ_free>>;
using X509CrlPtr = std::unique_ptr<X509_CRL, OpensslFree<X509_CRL, X509_CRL_free>>;
using X509StoreCtxPtr =
    std::unique_ptr<X509_STORE_CTX, OpensslFree<X509_STORE_CTX, X509_STORE_CTX_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, OpensslFree<X509_STORE, X509_STORE_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, OpensslFree<X509_NAME, X509_NAME_free>>;
using X509RevokedPtr = std::unique_ptr<X509_REVOKED, OpensslFree<X509_REVOKED, X509_REVOKED_free>>;
using X509ExtPtr =
    std::unique_ptr<X509_EXTENSION, OpensslFree<X509_EXTENSION, X509_EXTENSION_free>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, OpensslFree<EVP_PKEY, EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, OpensslFree<BIO, BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpensslFree<BIGNUM, BN_free>>;
using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, OpensslFree<ASN1_INTEGER, ASN1_INTEGER_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, OpensslFree<ASN1_TIME, ASN1_TIME_free>>;
using Asn1OctetStringPtr =
    std::unique_ptr<ASN1_OCTET_STRING, OpensslFree<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>>;
using Asn1Ia5StringPtr =
    std::unique_ptr<ASN1_IA5STRING, OpensslFree<ASN1_IA5STRING, ASN1_IA5STRING_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, OpensslFree<GENERAL_NAME, GENERAL_NAME_free>>;
using GeneralNamesPtr =
    std::unique_ptr<GENERAL_NAMES, OpensslFree<GENERAL_NAMES, GENERAL_NAMES_free>>;

struct ExtensionStackFree {
    void operator()(STACK_OF(X509_EXTENSION) * s) const {
        sk_X509_EXTENSION_pop_free(s, X509_EXTENSION_free);
    }
};
using ExtensionStack = std::unique_ptr<STACK_OF(X509_EXTENSION), ExtensionStackFree>;

struct OpensslStringFree {
    void operator()(char* p) const { OPENSSL_free(p); }
};
using OpensslString = std::unique_ptr<char, OpensslStringFree>;

}  // namespace tunneld
