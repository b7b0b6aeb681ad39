#include "tunneld/tls/identity.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include <memory>

namespace tunneld {
namespace {

struct X509Free {
    void operator()(X509* x) const { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;

// A self-signed certificate with the given SAN ("DNS:a,URI:b") and CN.
X509Ptr make_cert(const std::string& san, const std::string& cn) {
    std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_EC_gen("P-256"), EVP_PKEY_free);
    X509Ptr cert(X509_new());
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 3600);
    X509_set_pubkey(cert.get(), key.get());
    X509_NAME* name = X509_get_subject_name(cert.get());
    if (!cn.empty())
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(cert.get(), name);
    if (!san.empty()) {
        X509V3_CTX ctx;
        X509V3_set_ctx_nodb(&ctx);
        X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_subject_alt_name, san.c_str());
        X509_add_ext(cert.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    X509_sign(cert.get(), key.get(), EVP_sha256());
    return cert;
}

std::optional<std::string> match(const std::string& san, const std::string& cn,
                                 std::vector<std::string> allow) {
    auto cert = make_cert(san, cn);
    return match_identity(extract_identities(cert.get()), allow);
}

TEST(Identity, ExtractsSanDnsUriAndCn) {
    auto cert =
        make_cert("DNS:standby-1,DNS:db.example.net,URI:spiffe://example.org/standby", "standby-1");
    auto ids = extract_identities(cert.get());
    EXPECT_EQ(ids.dns, (std::vector<std::string>{"standby-1", "db.example.net"}));
    EXPECT_EQ(ids.uris, (std::vector<std::string>{"spiffe://example.org/standby"}));
    EXPECT_EQ(ids.common_name, "standby-1");
    EXPECT_EQ(describe_identities(ids),
              "dns:standby-1,db.example.net uri:spiffe://example.org/standby");
}

TEST(Identity, MatchesSanDnsCaseInsensitively) {
    // The configured spelling comes back, so "is this our own node?" compares like matching does.
    EXPECT_EQ(match("DNS:Standby-1", "", {"primary-1", "standby-1"}), "standby-1");
}

TEST(Identity, MatchesUriExactly) {
    EXPECT_EQ(match("URI:spiffe://example.org/a", "", {"spiffe://example.org/a"}),
              "spiffe://example.org/a");
    EXPECT_FALSE(match("URI:spiffe://example.org/a", "", {"spiffe://example.org/A"}));
}

TEST(Identity, RefusesNameNotInAllowList) {
    EXPECT_FALSE(match("DNS:intruder-1", "standby-1", {"standby-1"}));
}

TEST(Identity, CommonNameIsOnlyAFallbackWithoutSan) {
    EXPECT_EQ(match("", "standby-1", {"standby-1"}), "standby-1");
    // A SAN is present: the CN is not consulted, even if it would match.
    EXPECT_FALSE(match("DNS:other", "standby-1", {"standby-1"}));
}

TEST(Identity, WildcardCertificatesNeverMatch) {
    EXPECT_FALSE(match("DNS:*.example.net", "", {"db.example.net"}));
    EXPECT_FALSE(match("DNS:*", "", {"standby-1"}));
    EXPECT_FALSE(match("", "*", {"standby-1"}));
    // Not even against a literal "*" in the allow list.
    EXPECT_FALSE(match("DNS:*.example.net", "", {"*.example.net"}));
}

TEST(Identity, SuffixOrPrefixIsNotAMatch) {
    EXPECT_FALSE(match("DNS:standby-10", "", {"standby-1"}));
    EXPECT_FALSE(match("DNS:standby-1.evil.net", "", {"standby-1"}));
}

TEST(Identity, NoCertificateHasNoIdentity) {
    auto ids = extract_identities(nullptr);
    EXPECT_FALSE(match_identity(ids, {"x"}));
    EXPECT_EQ(describe_identities(ids), "cn:(none)");
}

}  // namespace
}  // namespace tunneld
