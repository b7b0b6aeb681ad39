// TLS 1.3 KeyUpdate on long streams (tls.rekey_bytes): counted on the wire.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <string>
#include <vector>

#include "tls_fixture.hpp"
#include "tunneld/tls/alpn.hpp"

namespace tunneld {
namespace {

using namespace test;

// OpenSSL never rekeys by itself: past tls.rekey_bytes each end sends a TLS 1.3
// KeyUpdate for its own direction, and the data arrives unchanged both ways. KeyUpdate messages are
// counted on the wire (the message callback), not taken on trust from our own counter.
TEST(KeyUpdate, LongStreamsAreRekeyedByBytesAndTheDataArrivesUnchanged) {
    Pki pki(64 * 1024);
    StreamPair p(pki);
    auto& io = p.io;  // (not a structured binding: clang 14 cannot capture one in a lambda)
    auto& server = p.server;
    auto& client = p.client;
    static int received_by_server = 0, received_by_client = 0;
    received_by_server = received_by_client = 0;
    auto count = [](int write_p, int, int content_type, const void* buf, size_t len, SSL*,
                    void* arg) {
        if (!write_p && content_type == SSL3_RT_HANDSHAKE && len > 0 &&
            static_cast<const unsigned char*>(buf)[0] == SSL3_MT_KEY_UPDATE)
            ++*static_cast<int*>(arg);
    };
    SSL_set_msg_callback(server.native(), count);
    SSL_set_msg_callback_arg(server.native(), &received_by_server);
    SSL_set_msg_callback(client.native(), count);
    SSL_set_msg_callback_arg(client.native(), &received_by_client);
    const auto before = key_updates_sent();
    std::string sent(1 << 20, '\0');
    for (std::size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>(i * 131 % 251);
    std::string echoed, got;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {  // the server echoes what it reads
            EXPECT_TRUE((co_await server.handshake()).ok());
            std::vector<char> buf(16 * 1024);
            for (;;) {
                auto [ec, n] = co_await server.read_some(asio::buffer(buf));
                if (ec) break;
                got.append(buf.data(), n);
                EXPECT_FALSE(co_await server.write_all(asio::buffer(buf.data(), n)));
            }
            EXPECT_FALSE(co_await server.shutdown_send());
        },
        asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            EXPECT_TRUE((co_await client.handshake()).ok());
            std::vector<char> buf(16 * 1024);
            for (std::size_t at = 0; at < sent.size(); at += 16 * 1024) {
                EXPECT_FALSE(co_await client.write_all(asio::buffer(sent.data() + at, 16 * 1024)));
                while (echoed.size() < at + 16 * 1024) {
                    auto [ec, n] = co_await client.read_some(asio::buffer(buf));
                    if (ec) co_return;
                    echoed.append(buf.data(), n);
                }
            }
            EXPECT_FALSE(co_await client.shutdown_send());
        },
        asio::detached);
    io.run();
    EXPECT_EQ(got, sent);
    EXPECT_EQ(echoed, sent);
    // 1 MiB each way at 64 KiB per key: about 16 updates asked by each end.
    EXPECT_GE(key_updates_sent() - before, 28u);
    EXPECT_GE(received_by_server, 14);
    EXPECT_GE(received_by_client, 14);
}

}  // namespace
}  // namespace tunneld
