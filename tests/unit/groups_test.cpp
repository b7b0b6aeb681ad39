// Key-exchange groups (tls/groups.hpp): what this OpenSSL has, the refusal
// when none of tls.groups is there, and the group a handshake agreed on, as it
// appears in the open log line and /metrics. Runs against whatever libssl the
// unit tests load: OpenSSL 3.0 on Debian 12, where X25519MLKEM768 is absent.
#include <gtest/gtest.h>
#include <openssl/crypto.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "tls_fixture.hpp"
#include "tunneld/error.hpp"
#include "tunneld/net/openssl_ptr.hpp"
#include "tunneld/tls/groups.hpp"

namespace tunneld {
namespace {

using namespace test;

const bool has_ml_kem = OpenSSL_version_num() >= 0x30500000L;

TEST(Groups, AvailableGroupsKeepsTheOrderAndDropsWhatThisOpenSslLacks) {
    auto got = available_groups({"X25519MLKEM768", "P-384", "X25519", "no-such-group", "P-256"});
    if (has_ml_kem)
        EXPECT_EQ(got, (std::vector<std::string>{"X25519MLKEM768", "P-384", "X25519", "P-256"}));
    else
        EXPECT_EQ(got, (std::vector<std::string>{"P-384", "X25519", "P-256"}));
    EXPECT_TRUE(available_groups({"ffdhe-nonsense"}).empty());
}

TEST(Groups, SetGroupsTakesEitherKindAndBoth) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
    EXPECT_TRUE(set_groups(ctx.get(), {"X25519", "P-256"}));
    EXPECT_TRUE(set_groups(ctx.get(), available_groups({"X25519MLKEM768", "X25519"})));
    EXPECT_FALSE(set_groups(ctx.get(), {"no-such-group"}));
}

TEST(Groups, MaterialWithNoAvailableGroupIsRefusedSayingWhy) {
    if (has_ml_kem) GTEST_SKIP() << "this OpenSSL has every group tls.groups allows";
    try {
        Pki pki(0, {"X25519MLKEM768"});
        FAIL() << "loaded";
    } catch (const StartupError& e) {
        std::string what = e.what();
        EXPECT_NE(what.find("none of tls.groups [X25519MLKEM768] is available in OpenSSL 3."),
                  std::string::npos)
            << what;
        EXPECT_NE(what.find("need OpenSSL 3.5 or later; add X25519"), std::string::npos) << what;
    }
    // One available name is enough: the hybrid is skipped, not an error.
    Pki mixed(0, {"X25519MLKEM768", "P-256"});
    EXPECT_NE(mixed.a, nullptr);
}

struct Agreed {
    std::string client, server;
};

Agreed handshake_with(std::vector<std::string> groups) {
    Pki pki(0, std::move(groups));
    StreamPair p(pki);
    auto& io = p.io;  // (not a structured binding: clang 14 cannot capture one in a lambda)
    auto& server = p.server;
    auto& client = p.client;
    EXPECT_EQ(client.group(), "");  // nothing agreed before the handshake
    HandshakeResult hs_server, hs_client;
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { hs_server = co_await server.handshake(); },
        asio::detached);
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { hs_client = co_await client.handshake(); },
        asio::detached);
    io.run();
    EXPECT_TRUE(hs_server.ok() && hs_client.ok()) << hs_server.detail << hs_client.detail;
    return {client.group(), server.group()};
}

TEST(Groups, TheAgreedGroupIsNamedAsInTlsGroups) {
    auto x = handshake_with({"X25519"});
    EXPECT_EQ(x.client, "X25519");
    EXPECT_EQ(x.server, "X25519");
    auto p256 = handshake_with({"P-256"});  // OpenSSL says secp256r1
    EXPECT_EQ(p256.client, "P-256");
    EXPECT_EQ(p256.server, "P-256");
    auto p384 = handshake_with({"P-384", "X25519"});  // the first listed wins
    EXPECT_EQ(p384.server, "P-384");
    auto preferred = handshake_with({"X25519MLKEM768", "X25519", "P-256", "P-384"});  // the default
    EXPECT_EQ(preferred.server, has_ml_kem ? "X25519MLKEM768" : "X25519");
    EXPECT_EQ(preferred.client, preferred.server);
}

TEST(Groups, VersionLinesNameBothOpenSslsAndThePostQuantumVerdict) {
    auto text = openssl_versions();
    EXPECT_NE(text.find(std::string("built with ") + OPENSSL_VERSION_TEXT), std::string::npos)
        << text;
    EXPECT_NE(text.find(std::string("running with ") + OpenSSL_version(OPENSSL_VERSION)),
              std::string::npos)
        << text;
    EXPECT_NE(
        text.find(
            has_ml_kem
                ? "post-quantum key exchange: X25519MLKEM768"
                : "post-quantum key exchange: not available (X25519MLKEM768 needs OpenSSL 3.5"),
        std::string::npos)
        << text;
}

}  // namespace
}  // namespace tunneld
