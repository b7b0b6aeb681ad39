#include "certs/commands.hpp"

#include <arpa/inet.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include <filesystem>
#include <fstream>
#include <set>

#include "certs/ca_dir.hpp"
#include "certs/pem_files.hpp"
#include "certs/pki.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/identity.hpp"

namespace tunneld::certs {

namespace fs = std::filesystem;

namespace {

void require_node_name(const std::string& name) {
    if (!is_valid_identity(name) || name.find("://") != std::string::npos)
        throw StartupError("'" + name +
                           "' is not a valid node name: use letters, digits, '-' and '.' "
                           "(it becomes the certificate's SAN DNS entry)");
}

void require_days(int days) {
    if (days < 1 || days > 36500) throw StartupError("--days must be from 1 to 36500");
}

void ensure_dir(const std::string& dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) throw StartupError(dir + ": cannot create directory: " + ec.message());
    if (::access(dir.c_str(), W_OK | X_OK) != 0)
        throw StartupError(dir + ": directory is not writable: " + std::strerror(errno));
}

int days_left(const X509* cert) {
    auto left = not_after(cert) - std::chrono::system_clock::now();
    return static_cast<int>(std::chrono::floor<std::chrono::hours>(left).count() / 24);
}

std::string utc(std::chrono::system_clock::time_point t) {
    std::time_t tt = std::chrono::system_clock::to_time_t(t);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&tt));
    return buf;
}

std::string name_text(X509_NAME* name) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

std::string key_description(EVP_PKEY* key) {
    if (!key)
        return "unreadable public key";  // a certificate whose key OpenSSL cannot decode (found by
                                         // fuzz_pem)
    if (auto t = key_type_of(key)) return to_string(*t);
    return std::string(EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown") +
           " " + std::to_string(EVP_PKEY_get_bits(key)) + " bits";
}

bool is_ca(X509* cert) { return X509_check_ca(cert) > 0; }

}  // namespace

// Every SAN of `cert`, as "DNS:a, IP:b".
static std::string san_list(X509* cert) {
    auto ids = extract_identities(cert);
    std::string out;
    for (const auto& d : ids.dns) out += (out.empty() ? "" : ", ") + ("DNS:" + d);
    for (const auto& u : ids.uris) out += (out.empty() ? "" : ", ") + ("URI:" + u);
    for (const auto& ip : ids.ips) out += (out.empty() ? "" : ", ") + ("IP:" + ip);
    return out.empty() ? "(none)" : out;
}

static std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

static int issue_from_csr(const IssueOptions& o, std::ostream& out);

int init_ca(const InitCaOptions& o, std::ostream& out) {
    auto type = parse_key_type(o.key_type);
    if (!type) throw StartupError("--key-type must be ec-p256 or ed25519");
    require_days(o.days);
    // Unique by default: during a rollover both CAs sit in one bundle, and
    // OpenSSL finds a CRL's (and a certificate's) issuer by name first.
    std::string name = o.name;
    if (name.empty()) {
        unsigned char r[3];
        if (RAND_bytes(r, sizeof r) != 1) throw StartupError("cannot make a random CA name");
        char buf[64];
        std::time_t now = std::time(nullptr);
        std::strftime(buf, sizeof buf, "%Y-%m-%d", std::gmtime(&now));
        char hex[8];
        std::snprintf(hex, sizeof hex, "%02x%02x%02x", r[0], r[1], r[2]);
        name = std::string("tunneld CA ") + buf + " " + hex;
    }
    ensure_dir(o.out);
    std::string key_path = o.out + "/ca.key", cert_path = o.out + "/ca.crt";
    if (fs::exists(key_path) || fs::exists(cert_path))
        throw StartupError(o.out +
                           " already holds a CA (ca.key/ca.crt); refusing to replace it. "
                           "For a new CA use another directory (see CA rollover in the README)");
    auto key = generate_key(*type);
    auto cert = make_ca_cert(name, o.days, key.get());
    write_file_atomic(key_path, to_pem(key.get()), 0600, false);
    write_file_atomic(cert_path, to_pem(cert.get()), 0644, false);
    out << "CA \"" << name << "\" (" << to_string(*type) << ", serial " << serial_hex(cert.get())
        << ", valid until " << utc(not_after(cert.get())) << ")\n"
        << "  " << cert_path << "  give to every node as tls.ca\n"
        << "  " << key_path << "  keep here (0600); never copy it to a node\n";
    return 0;
}

int issue(const IssueOptions& o, std::ostream& out) {
    if (!o.csr.empty()) return issue_from_csr(o, out);
    require_node_name(o.name);
    require_days(o.days);
    for (const auto& d : o.dns) require_node_name(d);
    for (const auto& ip : o.ips) {
        unsigned char buf[16];
        if (inet_pton(AF_INET, ip.c_str(), buf) != 1 && inet_pton(AF_INET6, ip.c_str(), buf) != 1)
            throw StartupError("--ip '" + ip + "' is not an IPv4 or IPv6 address");
    }
    auto ca = load_ca_dir(o.ca);
    auto type = o.key_type.empty() ? key_type_of(ca.key.get()) : parse_key_type(o.key_type);
    if (!type) throw StartupError("--key-type must be ec-p256 or ed25519");
    ensure_dir(o.out);
    auto key = generate_key(*type);
    auto cert =
        issue_node_cert({o.name, o.dns, o.ips}, key.get(), o.days, ca.cert.get(), ca.key.get());
    std::string key_path = o.out + "/" + o.name + ".key", cert_path = o.out + "/" + o.name + ".crt";
    write_file_atomic(key_path, to_pem(key.get()), 0600, true);
    write_file_atomic(cert_path, to_pem(cert.get()), 0644, true);
    if (fs::absolute(o.out) != fs::absolute(ca.dir))
        write_file_atomic(o.out + "/ca.crt", to_pem(ca.cert.get()), 0644, false);
    out << "issued " << o.name << " (serial " << serial_hex(cert.get()) << ", " << to_string(*type)
        << ", valid " << o.days << " days)\n"
        << "  SANs: " << san_list(cert.get()) << "\n"
        << "  " << cert_path << "  tls.cert\n"
        << "  " << key_path << "  tls.key (0600; chown it to the user tunneld runs as)\n"
        << "  " << o.out << "/ca.crt  tls.ca\n";
    return 0;
}

// Signs only the names the operator asked for (--name, --dns, --ip); the CSR
// contributes its public key, nothing else. A CSR asking for other names than
// those is refused (it may be a node trying to get a peer's identity) unless
// --accept-csr-sans says to sign the asked-for names anyway.
static int issue_from_csr(const IssueOptions& o, std::ostream& out) {
    require_days(o.days);
    if (o.name.empty())
        throw StartupError(
            "certs issue --csr: give --name NODE (and --dns/--ip for extra names): only the names "
            "you ask for are signed, never the ones a CSR asks for");
    NodeRequest want{o.name, o.dns, o.ips};
    validate_request(want);
    auto request = read_csr(o.csr);
    auto asked = read_csr_contents(request.get());
    if (lower(asked.cn) != lower(o.name))
        throw StartupError(o.csr + " is for '" + asked.cn + "', not '" + o.name +
                           "'; nothing signed");

    std::set<std::string> wanted_sans, csr_sans;
    for (const auto& d : request_dns(want)) wanted_sans.insert("DNS:" + lower(d));
    for (const auto& ip : want.ips) {
        Asn1OctetStringPtr bytes(a2i_IPADDRESS(ip.c_str()));
        wanted_sans.insert("IP:" + ip_text(bytes.get()));
    }
    for (const auto& d : asked.dns) csr_sans.insert("DNS:" + lower(d));
    for (const auto& ip : asked.ips) csr_sans.insert("IP:" + ip);
    for (const auto& x : asked.other) csr_sans.insert(x);
    std::string extra, missing;
    for (const auto& x : csr_sans)
        if (!wanted_sans.count(x)) extra += (extra.empty() ? "" : ", ") + x;
    for (const auto& x : wanted_sans)
        if (!csr_sans.count(x)) missing += (missing.empty() ? "" : ", ") + x;
    if (!extra.empty() || !missing.empty()) {
        std::string diff = (extra.empty() ? "" : "the CSR also asks for " + extra) +
                           (!extra.empty() && !missing.empty() ? "; " : "") +
                           (missing.empty() ? "" : "the CSR does not ask for " + missing);
        if (!o.accept_csr_sans)
            throw StartupError(
                o.csr + ": its subjectAltNames differ from what you asked for (" + diff +
                "); nothing signed. Check where this CSR came from; to sign exactly the names you "
                "gave (--name/--dns/--ip) anyway, add --accept-csr-sans");
        out << "--accept-csr-sans: " << diff << "; signing only the names asked for\n";
    }

    auto ca = load_ca_dir(o.ca);
    ensure_dir(o.out);
    auto cert = issue_node_cert(want, X509_REQ_get0_pubkey(request.get()), o.days, ca.cert.get(),
                                ca.key.get());
    std::string cert_path = o.out + "/" + o.name + ".crt";
    write_file_atomic(cert_path, to_pem(cert.get()), 0644, true);
    if (fs::absolute(o.out) != fs::absolute(ca.dir))
        write_file_atomic(o.out + "/ca.crt", to_pem(ca.cert.get()), 0644, false);
    out << "signed the CSR of " << o.name << " (serial " << serial_hex(cert.get()) << ", valid "
        << o.days << " days): " << cert_path << "\n  SANs: " << san_list(cert.get())
        << "\n  on the node: tunneld certs install --peer FILE --cert " << o.name << ".crt\n";
    return 0;
}

int show(const std::vector<std::string>& files, std::ostream& out) {
    struct Entry {
        std::string file;
        X509Ptr cert;
    };
    std::vector<Entry> certs;
    int problems = 0;
    for (const auto& file : files) {
        std::ifstream in(file);
        if (!in) throw StartupError(file + ": cannot read: " + std::strerror(errno));
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (text.find("PRIVATE KEY-----") != std::string::npos) {
            auto key = read_key(file);
            out << file << ": private key, " << key_description(key.get()) << "\n";
            continue;
        }
        if (text.find("-----BEGIN X509 CRL-----") != std::string::npos) {
            BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
            X509CrlPtr c(PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr));
            if (!c) throw StartupError(file + ": not a PEM CRL");
            auto* revoked = X509_CRL_get_REVOKED(c.get());
            out << file << ": CRL issued by " << name_text(X509_CRL_get_issuer(c.get())) << ", "
                << sk_X509_REVOKED_num(revoked) << " revoked serial(s)\n";
            for (int i = 0; i < sk_X509_REVOKED_num(revoked); ++i) {
                BignumPtr bn(ASN1_INTEGER_to_BN(
                    X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(revoked, i)), nullptr));
                OpensslString hex(BN_bn2hex(bn.get()));
                out << "  revoked  " << hex.get() << "\n";
            }
            continue;
        }
        for (auto& cert : read_certs(file)) certs.push_back({file, std::move(cert)});
    }
    std::vector<X509Ptr> cas;
    for (auto& e : certs)
        if (is_ca(e.cert.get())) cas.emplace_back(X509_dup(e.cert.get()));
    auto now = std::chrono::system_clock::now();
    for (auto& e : certs) {
        X509* c = e.cert.get();
        auto ids = extract_identities(c);
        out << e.file << ": " << (is_ca(c) ? "CA certificate" : "certificate") << "\n"
            << "  subject   " << name_text(X509_get_subject_name(c)) << "\n"
            << "  SANs      "
            << (ids.dns.empty() && ids.uris.empty() ? "(none)" : describe_identities(ids));
        for (const auto& ip : ids.ips) out << " ip:" << ip;
        out << "\n"
            << "  issuer    " << name_text(X509_get_issuer_name(c)) << "\n"
            << "  serial    " << serial_hex(c) << "\n"
            << "  valid     " << utc(not_before(c)) << " .. " << utc(not_after(c)) << " ("
            << days_left(c) << " days left)\n"
            << "  key       " << key_description(X509_get0_pubkey(c)) << "\n"
            << "  spki      sha256 " << spki_sha256(c) << "\n";
        if (not_after(c) <= now) {
            out << "  PROBLEM   expired\n";
            ++problems;
        }
        if (not_before(c) > now) {
            out << "  PROBLEM   not valid yet\n";
            ++problems;
        }
        if (!is_ca(c) && !cas.empty()) {
            auto err = verify_against(c, cas);
            if (err.empty()) {
                out << "  chain     issued by a CA given here: ok\n";
            } else {
                out << "  PROBLEM   not issued by any CA given here: " << err << "\n";
                ++problems;
            }
        }
    }
    return problems ? 1 : 0;
}

int revoke(const std::string& ca_dir, const std::string& serial, std::ostream& out) {
    auto ca = load_ca_dir(ca_dir);
    if (serial.empty() || !std::all_of(serial.begin(), serial.end(), ::isxdigit))
        throw StartupError(
            "--serial must be the certificate's serial in hex (see `tunneld certs show`)");
    bool added = add_revoked(ca, serial);
    out << (added ? "revoked " : "already revoked ") << serial << " in " << ca.revoked_path()
        << "; publish it with `tunneld certs crl --ca " << ca.dir
        << " --out FILE` and install FILE as tls.crl\n";
    return 0;
}

int crl(const std::string& ca_dir, const std::string& out_path, int days, std::ostream& out) {
    require_days(days);
    auto ca = load_ca_dir(ca_dir);
    auto revoked = read_revoked(ca);
    auto list = make_crl(ca.cert.get(), ca.key.get(), revoked, days);
    write_file_atomic(out_path, to_pem(list.get()), 0644, false);
    out << "CRL with " << revoked.size() << " revoked serial(s), valid " << days
        << " days: " << out_path << "\n";
    return 0;
}

}  // namespace tunneld::certs
