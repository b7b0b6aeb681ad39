#include "certs/pki.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/identity.hpp"

namespace tunneld::certs {

namespace {

[[noreturn]] void fail(const std::string& what) {
    auto detail = openssl_errors();
    throw StartupError(detail.empty() ? what : what + ": " + detail);
}

void random_serial(X509* cert) {
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof bytes) != 1) fail("cannot make a random serial");
    bytes[0] &= 0x7f;  // positive
    bytes[0] |= 0x01;  // full 128 bits, no leading zero byte
    BignumPtr bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
    if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert)))
        fail("cannot set serial");
}

void add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
    if (!ext || X509_add_ext(cert, ext.get(), -1) != 1)
        fail("cannot add extension " + std::string(OBJ_nid2sn(nid)) + "=" + value);
}

X509NamePtr cn_name(const std::string& cn) {
    X509NamePtr name(X509_NAME_new());
    if (!name || X509_NAME_add_entry_by_txt(name.get(), "CN", MBSTRING_UTF8,
                                            reinterpret_cast<const unsigned char*>(cn.c_str()), -1,
                                            -1, 0) != 1)
        fail("cannot build name CN=" + cn);
    return name;
}

void set_validity(X509* cert, int days) {
    if (!X509_gmtime_adj(X509_getm_notBefore(cert), -300) ||
        !X509_time_adj_ex(X509_getm_notAfter(cert), days, 0, nullptr))
        fail("cannot set validity");
}

// EdDSA signs without a separate digest; everything else with SHA-256.
const EVP_MD* digest_for(EVP_PKEY* key) {
    return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
}

// The subjectAltName of `req` as GENERAL_NAMES built one name at a time: no
// name is ever parsed back out of a config string, so a value like
// "y,URI:spiffe://x/admin" can only ever be one (invalid, refused) DNS name.
GeneralNamesPtr san_names(const NodeRequest& req) {
    validate_request(req);
    GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
    if (!names) fail("cannot build subjectAltName");
    // Each value is owned until the stack holds the name that holds it.
    auto push = [&](int type, auto value) {
        GeneralNamePtr gn(GENERAL_NAME_new());
        if (!gn || !value) fail("cannot build subjectAltName");
        GENERAL_NAME_set0_value(gn.get(), type, value.release());
        if (!sk_GENERAL_NAME_push(names.get(), gn.get())) fail("cannot build subjectAltName");
        gn.release();
    };
    for (const auto& d : request_dns(req)) {
        Asn1Ia5StringPtr s(ASN1_IA5STRING_new());
        if (!s || ASN1_STRING_set(s.get(), d.data(), static_cast<int>(d.size())) != 1)
            fail("cannot build subjectAltName");
        push(GEN_DNS, std::move(s));
    }
    for (const auto& ip : req.ips) push(GEN_IPADD, Asn1OctetStringPtr(a2i_IPADDRESS(ip.c_str())));
    return names;
}

std::chrono::system_clock::time_point to_time_point(const ASN1_TIME* t) {
    struct tm tm {};
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return {};
    return std::chrono::system_clock::from_time_t(timegm(&tm));
}

}  // namespace

std::vector<std::string> request_dns(const NodeRequest& req) {
    std::vector<std::string> out{req.name};
    for (const auto& d : req.dns)
        if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
    return out;
}

void validate_request(const NodeRequest& req) {
    for (const auto& d : request_dns(req))
        if (!is_valid_identity(d) || d.find("://") != std::string::npos)
            throw StartupError("'" + d +
                               "' is not a valid node name: use letters, digits, '-' and '.' "
                               "(it becomes a SAN DNS entry)");
    for (const auto& ip : req.ips) {
        Asn1OctetStringPtr bytes(a2i_IPADDRESS(ip.c_str()));
        if (!bytes) throw StartupError("'" + ip + "' is not an IPv4 or IPv6 address");
    }
}

std::optional<KeyType> parse_key_type(std::string_view text) {
    if (text == "ec-p256") return KeyType::ec_p256;
    if (text == "ed25519") return KeyType::ed25519;
    return std::nullopt;
}

const char* to_string(KeyType t) { return t == KeyType::ec_p256 ? "ec-p256" : "ed25519"; }

std::optional<KeyType> key_type_of(EVP_PKEY* key) {
    if (!key) return std::nullopt;
    if (EVP_PKEY_get_id(key) == EVP_PKEY_ED25519) return KeyType::ed25519;
    if (EVP_PKEY_get_id(key) == EVP_PKEY_EC) {
        char group[64] = {};
        std::size_t len = 0;
        if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof group, &len) == 1 &&
            std::string(group) == "prime256v1")
            return KeyType::ec_p256;
    }
    return std::nullopt;
}

EvpPkeyPtr generate_key(KeyType type) {
    EvpPkeyPtr key(type == KeyType::ec_p256 ? EVP_EC_gen("P-256")
                                            : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    if (!key) fail(std::string("cannot generate a ") + to_string(type) + " key");
    return key;
}

X509Ptr make_ca_cert(const std::string& name, int days, EVP_PKEY* key) {
    X509Ptr cert(X509_new());
    if (!cert || X509_set_version(cert.get(), 2) != 1) fail("cannot create certificate");
    random_serial(cert.get());
    X509NamePtr subject = cn_name(name);
    if (X509_set_subject_name(cert.get(), subject.get()) != 1 ||
        X509_set_issuer_name(cert.get(), subject.get()) != 1 ||
        X509_set_pubkey(cert.get(), key) != 1)
        fail("cannot set CA subject");
    set_validity(cert.get(), days);
    add_ext(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_ext(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(cert.get(), cert.get(), NID_subject_key_identifier, "hash");
    add_ext(cert.get(), cert.get(), NID_authority_key_identifier, "keyid:always");
    if (X509_sign(cert.get(), key, digest_for(key)) <= 0) fail("cannot sign CA certificate");
    return cert;
}

X509Ptr issue_node_cert(const NodeRequest& req, EVP_PKEY* subject_key, int days, X509* ca_cert,
                        EVP_PKEY* ca_key) {
    X509Ptr cert(X509_new());
    if (!cert || X509_set_version(cert.get(), 2) != 1) fail("cannot create certificate");
    random_serial(cert.get());
    if (X509_set_subject_name(cert.get(), cn_name(req.name).get()) != 1 ||
        X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert)) != 1 ||
        X509_set_pubkey(cert.get(), subject_key) != 1)
        fail("cannot set certificate names");
    set_validity(cert.get(), days);
    add_ext(cert.get(), ca_cert, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert.get(), ca_cert, NID_key_usage, "critical,digitalSignature");
    add_ext(cert.get(), ca_cert, NID_ext_key_usage, "serverAuth,clientAuth");
    auto sans = san_names(req);
    if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) != 1)
        fail("cannot add subjectAltName");
    add_ext(cert.get(), ca_cert, NID_subject_key_identifier, "hash");
    add_ext(cert.get(), ca_cert, NID_authority_key_identifier, "keyid:always");
    if (X509_sign(cert.get(), ca_key, digest_for(ca_key)) <= 0) fail("cannot sign certificate");
    return cert;
}

X509ReqPtr make_csr(const NodeRequest& req, EVP_PKEY* key) {
    X509ReqPtr csr(X509_REQ_new());
    if (!csr || X509_REQ_set_version(csr.get(), 0) != 1) fail("cannot create CSR");
    if (X509_REQ_set_subject_name(csr.get(), cn_name(req.name).get()) != 1 ||
        X509_REQ_set_pubkey(csr.get(), key) != 1)
        fail("cannot set CSR subject");
    auto sans = san_names(req);
    ExtensionStack exts(sk_X509_EXTENSION_new_null());
    STACK_OF(X509_EXTENSION)* raw = exts.get();
    if (!exts ||
        X509V3_add1_i2d(&raw, NID_subject_alt_name, sans.get(), 0, X509V3_ADD_DEFAULT) != 1)
        fail("cannot build CSR extensions");
    if (X509_REQ_add_extensions(csr.get(), exts.get()) != 1 ||
        X509_REQ_sign(csr.get(), key, digest_for(key)) <= 0)
        fail("cannot sign CSR");
    return csr;
}

CsrContents read_csr_contents(X509_REQ* csr) {
    EVP_PKEY* key = X509_REQ_get0_pubkey(csr);
    if (!key || X509_REQ_verify(csr, key) != 1) fail("the CSR's signature does not verify");
    CsrContents c;
    X509_NAME* subject = X509_REQ_get_subject_name(csr);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (idx < 0) fail("the CSR has no CN (node name)");
    const ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
    c.cn.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)),
                static_cast<std::size_t>(ASN1_STRING_length(cn)));
    ExtensionStack exts(X509_REQ_get_extensions(csr));
    for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts.get()); ++i) {
        X509_EXTENSION* ext = sk_X509_EXTENSION_value(exts.get(), i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) != NID_subject_alt_name) continue;
        GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(X509V3_EXT_d2i(ext)));
        if (!names) fail("the CSR's subjectAltName cannot be parsed");
        for (int j = 0; j < sk_GENERAL_NAME_num(names.get()); ++j) {
            const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), j);
            if (gn->type == GEN_DNS) {
                c.dns.emplace_back(
                    reinterpret_cast<const char*>(ASN1_STRING_get0_data(gn->d.dNSName)),
                    static_cast<std::size_t>(ASN1_STRING_length(gn->d.dNSName)));
            } else if (gn->type == GEN_IPADD) {
                auto text = ip_text(gn->d.iPAddress);
                if (text.empty())
                    c.other.push_back("IP:(malformed)");
                else
                    c.ips.push_back(text);
            } else if (gn->type == GEN_URI) {
                c.other.emplace_back(
                    "URI:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(
                                             gn->d.uniformResourceIdentifier)),
                                         static_cast<std::size_t>(
                                             ASN1_STRING_length(gn->d.uniformResourceIdentifier))));
            } else {
                c.other.push_back("type " + std::to_string(gn->type));
            }
        }
    }
    return c;
}

X509CrlPtr make_crl(X509* ca_cert, EVP_PKEY* ca_key, const std::vector<Revoked>& revoked,
                    int days) {
    X509CrlPtr crl(X509_CRL_new());
    if (!crl || X509_CRL_set_version(crl.get(), 1) != 1 ||
        X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca_cert)) != 1)
        fail("cannot create CRL");
    Asn1TimePtr last(X509_gmtime_adj(nullptr, 0));
    Asn1TimePtr next(X509_time_adj_ex(nullptr, days, 0, nullptr));
    if (!last || !next || X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
        X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1)
        fail("cannot set CRL dates");
    for (const auto& r : revoked) {
        BIGNUM* raw = nullptr;
        if (BN_hex2bn(&raw, r.serial_hex.c_str()) == 0) fail("bad serial '" + r.serial_hex + "'");
        BignumPtr bn(raw);
        Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
        Asn1TimePtr when(ASN1_TIME_set(nullptr, static_cast<time_t>(r.revoked_at)));
        X509RevokedPtr entry(X509_REVOKED_new());
        if (!serial || !when || !entry ||
            X509_REVOKED_set_serialNumber(entry.get(), serial.get()) != 1 ||
            X509_REVOKED_set_revocationDate(entry.get(), when.get()) != 1 ||
            X509_CRL_add0_revoked(crl.get(), entry.get()) != 1)
            fail("cannot add revoked serial " + r.serial_hex);
        entry.release();  // now owned by the CRL
    }
    X509_CRL_sort(crl.get());
    // AKI names the CA key that signed (several CAs may share a bundle during a
    // rollover); cRLNumber increases with every CRL published (the time of issue).
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ca_cert, nullptr, nullptr, crl.get(), 0);
    X509ExtPtr aki(
        X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
    if (!aki || X509_CRL_add_ext(crl.get(), aki.get(), -1) != 1)
        fail("cannot add the CRL's authority key identifier");
    Asn1IntegerPtr number(ASN1_INTEGER_new());
    if (!number ||
        ASN1_INTEGER_set_int64(number.get(), static_cast<std::int64_t>(std::time(nullptr))) != 1 ||
        X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, number.get(), 0, X509V3_ADD_DEFAULT) != 1)
        fail("cannot add the CRL number");
    if (X509_CRL_sign(crl.get(), ca_key, digest_for(ca_key)) <= 0) fail("cannot sign CRL");
    return crl;
}

std::string serial_hex(const X509* cert) {
    BignumPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
    OpensslString hex(bn ? BN_bn2hex(bn.get()) : nullptr);
    return hex ? std::string(hex.get()) : std::string();
}

std::string spki_sha256(X509* cert) {
    unsigned char* der = nullptr;
    int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
    if (len <= 0) return {};
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(der, static_cast<std::size_t>(len), md, &mdlen, EVP_sha256(), nullptr);
    OpensslString owned(reinterpret_cast<char*>(der));
    std::string out;
    char hex[4];
    for (unsigned i = 0; i < mdlen; ++i) {
        std::snprintf(hex, sizeof hex, i ? ":%02X" : "%02X", md[i]);
        out += hex;
    }
    return out;
}

std::chrono::system_clock::time_point not_after(const X509* cert) {
    return to_time_point(X509_get0_notAfter(cert));
}
std::chrono::system_clock::time_point not_before(const X509* cert) {
    return to_time_point(X509_get0_notBefore(cert));
}

std::string verify_against(X509* cert, const std::vector<X509Ptr>& ca_certs) {
    X509StorePtr store(X509_STORE_new());
    for (const auto& ca : ca_certs) X509_STORE_add_cert(store.get(), ca.get());
    X509StoreCtxPtr ctx(X509_STORE_CTX_new());
    if (!store || !ctx || X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) != 1)
        return "cannot set up verification";
    if (X509_verify_cert(ctx.get()) == 1) return {};
    std::string err = X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));
    ERR_clear_error();
    return err;
}

}  // namespace tunneld::certs
