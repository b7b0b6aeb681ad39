#include "tunneld/tls/identity.hpp"

#include <openssl/x509v3.h>

#include <arpa/inet.h>

#include <memory>

#include <strings.h>
#include "tunneld/net/openssl_ptr.hpp"

#include "tunneld/base/printable.hpp"

namespace tunneld {
namespace {

std::string asn1_string(const ASN1_STRING* s) {
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
}

bool usable(const std::string& name) {
    return !name.empty() && name.find('*') == std::string::npos &&
           name.find('\0') == std::string::npos;
}

}  // namespace

std::string ip_text(const ASN1_OCTET_STRING* ip) {
    char buf[INET6_ADDRSTRLEN] = {};
    int len = ip ? ASN1_STRING_length(ip) : 0;
    const unsigned char* data = ip ? ASN1_STRING_get0_data(ip) : nullptr;
    if (len == 4 && inet_ntop(AF_INET, data, buf, sizeof buf)) return buf;
    if (len == 16 && inet_ntop(AF_INET6, data, buf, sizeof buf)) return buf;
    return {};
}

CertIdentities extract_identities(X509* cert) {
    CertIdentities ids;
    if (!cert) return ids;
    GeneralNamesPtr names(static_cast<GENERAL_NAMES*>(
        X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
    if (names) {
        for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
            const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
            if (gn->type == GEN_DNS) ids.dns.push_back(asn1_string(gn->d.dNSName));
            if (gn->type == GEN_URI)
                ids.uris.push_back(asn1_string(gn->d.uniformResourceIdentifier));
            if (gn->type == GEN_IPADD) ids.ips.push_back(ip_text(gn->d.iPAddress));
        }
    }
    X509_NAME* subject = X509_get_subject_name(cert);
    int idx = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
    if (idx >= 0)
        ids.common_name = asn1_string(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
    return ids;
}

std::optional<std::string> match_identity(const CertIdentities& ids,
                                          const std::vector<std::string>& allow) {
    for (const auto& name : ids.dns) {
        if (!usable(name)) continue;
        for (const auto& a : allow)
            if (a.size() == name.size() && strcasecmp(a.c_str(), name.c_str()) == 0) return a;
    }
    for (const auto& uri : ids.uris) {
        if (!usable(uri)) continue;
        for (const auto& a : allow)
            if (a == uri) return uri;
    }
    if (ids.dns.empty() && ids.uris.empty() && usable(ids.common_name)) {
        for (const auto& a : allow)
            if (a.size() == ids.common_name.size() &&
                strcasecmp(a.c_str(), ids.common_name.c_str()) == 0)
                return a;
    }
    return std::nullopt;
}

std::string describe_identities(const CertIdentities& ids) {
    std::string out;
    auto add = [&](const char* tag, const std::vector<std::string>& v) {
        if (v.empty()) return;
        if (!out.empty()) out += ' ';
        out += tag;
        for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + printable(v[i], 256);
    };
    add("dns:", ids.dns);
    add("uri:", ids.uris);
    if (out.empty())
        out = "cn:" +
              (ids.common_name.empty() ? std::string("(none)") : printable(ids.common_name, 256));
    return out;
}

}  // namespace tunneld
