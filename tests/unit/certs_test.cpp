#include <gtest/gtest.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>

#include "certs/pem_files.hpp"
#include "certs/pki.hpp"
#include "tunneld/error.hpp"
#include "tunneld/tls/context.hpp"
#include "tunneld/tls/file_watch.hpp"
#include "tunneld/tls/identity.hpp"

namespace tunneld::certs {
namespace {

struct Ca {
    EvpPkeyPtr key;
    X509Ptr cert;
};

Ca make_ca(KeyType t = KeyType::ec_p256) {
    Ca ca{generate_key(t), nullptr};
    ca.cert = make_ca_cert("unit CA", 10, ca.key.get());
    return ca;
}

TEST(Pki, CaCertificateIsAConstrainedCa) {
    auto ca = make_ca();
    EXPECT_EQ(X509_check_ca(ca.cert.get()), 1);
    EXPECT_EQ(X509_get_pathlen(ca.cert.get()), 0);
    EXPECT_TRUE(X509_get_key_usage(ca.cert.get()) & KU_KEY_CERT_SIGN);
    EXPECT_TRUE(X509_get_key_usage(ca.cert.get()) & KU_CRL_SIGN);
    EXPECT_NE(X509_get0_subject_key_id(ca.cert.get()), nullptr);
    EXPECT_EQ(serial_hex(ca.cert.get()).size(), 32u);  // 128 random bits, no leading zero byte
}

TEST(Pki, NodeCertificateCarriesNameSansAndUsages) {
    auto ca = make_ca();
    auto key = generate_key(KeyType::ec_p256);
    auto cert = issue_node_cert({"standby-1", {"db2.example.net"}, {"10.0.0.2", "2001:db8::2"}},
                                key.get(), 90, ca.cert.get(), ca.key.get());
    auto ids = extract_identities(cert.get());
    EXPECT_EQ(ids.dns, (std::vector<std::string>{"standby-1", "db2.example.net"}));
    EXPECT_EQ(ids.ips, (std::vector<std::string>{"10.0.0.2", "2001:db8::2"}));
    EXPECT_EQ(X509_check_ca(cert.get()), 0);
    EXPECT_TRUE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_SERVER);
    EXPECT_TRUE(X509_get_extended_key_usage(cert.get()) & XKU_SSL_CLIENT);
    EXPECT_NE(X509_get0_authority_key_id(cert.get()), nullptr);
    std::vector<X509Ptr> cas;
    cas.emplace_back(X509_dup(ca.cert.get()));
    EXPECT_EQ(verify_against(cert.get(), cas), "");
    auto days = std::chrono::duration_cast<std::chrono::hours>(not_after(cert.get()) -
                                                               not_before(cert.get()))
                    .count() /
                24;
    EXPECT_EQ(days, 90);
}

TEST(Pki, Ed25519WorksEndToEnd) {
    auto ca = make_ca(KeyType::ed25519);
    auto key = generate_key(KeyType::ed25519);
    EXPECT_EQ(key_type_of(key.get()), KeyType::ed25519);
    auto cert = issue_node_cert({"n1", {}, {}}, key.get(), 1, ca.cert.get(), ca.key.get());
    std::vector<X509Ptr> cas;
    cas.emplace_back(X509_dup(ca.cert.get()));
    EXPECT_EQ(verify_against(cert.get(), cas), "");
}

TEST(Pki, ForeignCaDoesNotVerify) {
    auto ca = make_ca(), other = make_ca();
    auto key = generate_key(KeyType::ec_p256);
    auto cert = issue_node_cert({"n1", {}, {}}, key.get(), 1, other.cert.get(), other.key.get());
    std::vector<X509Ptr> cas;
    cas.emplace_back(X509_dup(ca.cert.get()));
    EXPECT_NE(verify_against(cert.get(), cas), "");
}

TEST(Pki, CsrRoundTripKeepsNameAndSans) {
    auto key = generate_key(KeyType::ec_p256);
    auto csr = make_csr({"primary-1", {"db1.example.net"}, {"192.0.2.1"}}, key.get());
    auto c = read_csr_contents(csr.get());
    EXPECT_EQ(c.cn, "primary-1");
    EXPECT_EQ(c.dns, (std::vector<std::string>{"primary-1", "db1.example.net"}));
    EXPECT_EQ(c.ips, (std::vector<std::string>{"192.0.2.1"}));
    EXPECT_TRUE(c.other.empty());
}

TEST(Pki, NamesThatWouldInjectSansAreRefused) {
    auto ca = make_ca();
    auto key = generate_key(KeyType::ec_p256);
    for (const char* bad :
         {"y,URI:spiffe://x/admin,DNS:z", "a b", "spiffe://x/admin", "*.example.net", ""})
        EXPECT_THROW(issue_node_cert({"n1", {bad}, {}}, key.get(), 1, ca.cert.get(), ca.key.get()),
                     StartupError)
            << bad;
    EXPECT_THROW(
        issue_node_cert({"n1", {}, {"1.2.3.4,DNS:x"}}, key.get(), 1, ca.cert.get(), ca.key.get()),
        StartupError);
    EXPECT_THROW(make_csr({"n1,DNS:primary-1", {}, {}}, key.get()), StartupError);
}

TEST(Pki, IssuedCertificateHasExactlyTheRequestedSans) {
    auto ca = make_ca();
    auto key = generate_key(KeyType::ec_p256);
    auto cert = issue_node_cert({"n1", {"n1", "db.example.net"}, {"192.0.2.7", "2001:db8::1"}},
                                key.get(), 1, ca.cert.get(), ca.key.get());
    auto ids = extract_identities(cert.get());
    EXPECT_EQ(ids.dns, (std::vector<std::string>{"n1", "db.example.net"}));
    EXPECT_TRUE(ids.uris.empty());
    EXPECT_EQ(ids.ips, (std::vector<std::string>{"192.0.2.7", "2001:db8::1"}));
}

TEST(Pki, TamperedCsrIsRefused) {
    auto key = generate_key(KeyType::ec_p256), other = generate_key(KeyType::ec_p256);
    auto csr = make_csr({"primary-1", {}, {}}, key.get());
    X509_REQ_set_pubkey(csr.get(), other.get());  // signature no longer matches
    EXPECT_THROW(read_csr_contents(csr.get()), StartupError);
}

TEST(Pki, CrlRevokesExactlyTheListedSerial) {
    auto ca = make_ca();
    auto k1 = generate_key(KeyType::ec_p256), k2 = generate_key(KeyType::ec_p256);
    auto revoked = issue_node_cert({"a", {}, {}}, k1.get(), 1, ca.cert.get(), ca.key.get());
    auto fine = issue_node_cert({"b", {}, {}}, k2.get(), 1, ca.cert.get(), ca.key.get());
    auto crl = make_crl(ca.cert.get(), ca.key.get(), {{serial_hex(revoked.get()), 1700000000}}, 30);
    EXPECT_EQ(X509_CRL_verify(crl.get(), X509_get0_pubkey(ca.cert.get())), 1);
    X509StorePtr store(X509_STORE_new());
    X509_STORE_add_crl(store.get(), crl.get());
    EXPECT_TRUE(is_revoked(revoked.get(), store.get()));
    EXPECT_FALSE(is_revoked(fine.get(), store.get()));
}

class Files : public ::testing::Test {
  protected:
    void SetUp() override {
        dir_ = std::filesystem::temp_directory_path() / ("certs-unit-" + std::to_string(getpid()));
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    std::string path(const char* name) { return (dir_ / name).string(); }
    static std::string read(const std::string& p) {
        std::ifstream in(p);
        return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    }
    std::filesystem::path dir_;
};

TEST_F(Files, AtomicWriteSetsModeAndKeepsPrevious) {
    write_file_atomic(path("k"), "one", 0600, true);
    write_file_atomic(path("k"), "two", 0600, true);
    EXPECT_EQ(read(path("k")), "two");
    EXPECT_EQ(read(path("k.prev")), "one");
    struct stat st {};
    stat(path("k").c_str(), &st);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_), {}),
              2);  // no temp file left
}

TEST_F(Files, AtomicWriteIntoMissingDirectoryNamesIt) {
    try {
        write_file_atomic(path("missing/k"), "x", 0600, false);
        FAIL() << "no error";
    } catch (const StartupError& e) {
        EXPECT_NE(std::string(e.what()).find("cannot create a file in " + path("missing")),
                  std::string::npos);
    }
}

TEST_F(Files, PemRoundTripAndErrorsNameTheFile) {
    auto ca = make_ca();
    write_file_atomic(path("ca.crt"), to_pem(ca.cert.get()), 0644, false);
    write_file_atomic(path("ca.key"), to_pem(ca.key.get()), 0600, false);
    EXPECT_EQ(serial_hex(read_cert(path("ca.crt")).get()), serial_hex(ca.cert.get()));
    EXPECT_EQ(EVP_PKEY_eq(read_key(path("ca.key")).get(), ca.key.get()), 1);
    write_file_atomic(path("junk"), "not pem", 0644, false);
    try {
        read_cert(path("junk"));
        FAIL() << "no error";
    } catch (const StartupError& e) {
        EXPECT_NE(std::string(e.what()).find(path("junk") + ": no PEM certificate found"),
                  std::string::npos);
    }
}

TEST(SettleRule, AChangeIsReportedOnceItLooksTheSameOnTwoPollsInARow) {
    FileStamp v1{true, 1, 10, 7, 1}, half{true, 2, 5, 8, 2}, v2{true, 3, 10, 8, 3}, gone{};
    SettleRule rule({v1});
    using V = SettleRule::Verdict;
    EXPECT_EQ(rule.observe({v1}), V::unchanged);
    // A certificate written in two steps: never read half-written.
    EXPECT_EQ(rule.observe({half}), V::changing);
    EXPECT_EQ(rule.observe({v2}), V::changing);
    EXPECT_EQ(rule.observe({v2}), V::settled);
    EXPECT_EQ(rule.observe({v2}), V::unchanged);  // reported once
    // A change that is undone before it settles is no change.
    EXPECT_EQ(rule.observe({half}), V::changing);
    EXPECT_EQ(rule.observe({v2}), V::unchanged);
    // A file that disappears is a change too (and is then reported, once settled).
    EXPECT_EQ(rule.observe({gone}), V::changing);
    EXPECT_EQ(rule.observe({gone}), V::settled);
}

TEST(SettleRule, SeveralFilesSettleTogether) {
    FileStamp k1{true, 1, 1, 1, 1}, c1{true, 1, 1, 2, 1}, k2{true, 2, 1, 3, 2},
        c2{true, 2, 1, 4, 2};
    SettleRule rule({k1, c1});
    using V = SettleRule::Verdict;
    EXPECT_EQ(rule.observe({k2, c1}), V::changing);  // key first: not read with the old certificate
    EXPECT_EQ(rule.observe({k2, c2}), V::changing);
    EXPECT_EQ(rule.observe({k2, c2}), V::settled);
}

TEST_F(Files, WatchStampsWhatStatSays) {
    write_file_atomic(path("cert"), "v1", 0644, false);
    auto a = TlsFileWatch::stamp_of(path("cert"));
    EXPECT_TRUE(a.exists);
    EXPECT_EQ(a.size, 2);
    write_file_atomic(path("cert"), "v22", 0644, false);
    auto b = TlsFileWatch::stamp_of(path("cert"));
    EXPECT_NE(a, b);  // a rename over the file: another inode, size
    std::filesystem::remove(path("cert"));
    EXPECT_FALSE(TlsFileWatch::stamp_of(path("cert")).exists);
}

}  // namespace
}  // namespace tunneld::certs
