// TlsStream in-process over a socketpair, with certificates made in memory.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>
#include <fstream>

#include "tls_fixture.hpp"

namespace tunneld {
namespace {

using namespace test;

template <class F>
void run(asio::io_context& io, F f) {
    bool done = false;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            co_await f();
            done = true;
        },
        asio::detached);
    io.run();
    io.restart();
    ASSERT_TRUE(done);
}

TEST_F(Connected, HandshakeThenClosedStreamNeverTouchesAReusedFd) {
    HandshakeResult hs_server, hs_client;
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { hs_server = co_await server.handshake(); },
        asio::detached);
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { hs_client = co_await client.handshake(); },
        asio::detached);
    io.run();
    io.restart();
    ASSERT_TRUE(hs_server.ok()) << hs_server.detail;
    ASSERT_TRUE(hs_client.ok()) << hs_client.detail;
    EXPECT_EQ(server.peer_check().matched, "b");
    EXPECT_EQ(server.alpn(), "postgresql");

    int old_fd = server.socket().native_handle();
    server.close();
    // The next socket takes the freed number, as a new connection would.
    int reuse[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, reuse), 0);
    int same = reuse[0] == old_fd ? reuse[0] : reuse[1];
    int other = same == reuse[0] ? reuse[1] : reuse[0];
    ASSERT_EQ(same, old_fd) << "test setup: the fd number was not reused";
    run(io, [&]() -> asio::awaitable<void> {
        EXPECT_EQ(co_await server.shutdown_send(), asio::error::operation_aborted);
        EXPECT_EQ(co_await server.write_all(asio::buffer("x", 1)), asio::error::operation_aborted);
        char buf[16];
        auto [ec, n] = co_await server.read_some(asio::buffer(buf));
        EXPECT_EQ(ec, asio::error::operation_aborted);
    });
    char byte;
    EXPECT_EQ(::recv(other, &byte, 1, MSG_DONTWAIT), -1)
        << "a closed TlsStream wrote into a reused fd";
    EXPECT_EQ(errno, EAGAIN);
    ::close(reuse[0]);
    ::close(reuse[1]);
}

TEST_F(Connected, HalfCloseDeliversEofAndDataBothWays) {
    std::string got_by_server, got_by_client;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            EXPECT_TRUE((co_await server.handshake()).ok());
            char buf[64];
            for (;;) {
                auto [ec, n] = co_await server.read_some(asio::buffer(buf));
                if (ec) {
                    EXPECT_EQ(ec, asio::error::eof);
                    break;
                }
                got_by_server.append(buf, n);
            }
            // After the client's half-close the server still writes, then closes its side.
            EXPECT_FALSE(co_await server.write_all(asio::buffer("pong", 4)));
            EXPECT_FALSE(co_await server.shutdown_send());
        },
        asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            EXPECT_TRUE((co_await client.handshake()).ok());
            EXPECT_FALSE(co_await client.write_all(asio::buffer("ping", 4)));
            EXPECT_FALSE(co_await client.shutdown_send());
            char buf[64];
            for (;;) {
                auto [ec, n] = co_await client.read_some(asio::buffer(buf));
                if (ec) {
                    EXPECT_EQ(ec, asio::error::eof);
                    break;
                }
                got_by_client.append(buf, n);
            }
        },
        asio::detached);
    io.run();
    EXPECT_EQ(got_by_server, "ping");
    EXPECT_EQ(got_by_client, "pong");
}

}  // namespace
}  // namespace tunneld
