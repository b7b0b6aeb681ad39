// TlsStream in-process over a socketpair, with certificates made in memory.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>
#include <fstream>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include <boost/asio/ssl/error.hpp>

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
    EXPECT_EQ(server.verdict().identity, "b");
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

// Reads wait for the socket only once it was drained, hand over every record
// already read ahead, and writes over one record go through the write buffer:
// every size around a TLS record (16 KiB) and the relay's reads arrives whole
// and in order, both ways at once.
TEST_F(Connected, EveryMessageSizeArrivesWholeAroundRecordAndBufferEdges) {
    const std::vector<std::size_t> sizes{1,    22,    1023,  1024,  1025,  2048,
                                         4097, 16383, 16384, 16385, 65536, 300001};
    std::size_t total = 0;
    for (auto n : sizes) total += n;
    auto pattern = [](std::size_t i, char salt) {
        return static_cast<char>((i * 131 + salt) % 251);
    };
    auto sender = [&](TlsStream& s, char salt) -> asio::awaitable<void> {
        std::size_t at = 0;
        for (auto n : sizes) {
            std::string msg(n, '\0');
            for (std::size_t i = 0; i < n; ++i) msg[i] = pattern(at + i, salt);
            at += n;
            EXPECT_FALSE(co_await s.write_all(asio::buffer(msg)));
        }
        EXPECT_FALSE(co_await s.shutdown_send());
    };
    auto receiver = [&](TlsStream& s, char salt, std::size_t& bad) -> asio::awaitable<void> {
        std::size_t at = 0;
        std::vector<char> buf(64 * 1024);
        for (;;) {
            auto [ec, n] = co_await s.read_some(asio::buffer(buf));
            if (ec) {
                EXPECT_EQ(ec, asio::error::eof);
                break;
            }
            for (std::size_t i = 0; i < n; ++i)
                if (buf[i] != pattern(at + i, salt)) ++bad;
            at += n;
        }
        EXPECT_EQ(at, total);
    };
    // Each end sends its sizes while it receives the other's.
    auto both_ways = [&](TlsStream& s, char out, char in,
                         std::size_t& bad) -> asio::awaitable<void> {
        EXPECT_TRUE((co_await s.handshake()).ok());
        using namespace asio::experimental::awaitable_operators;
        co_await (sender(s, out) && receiver(s, in, bad));
    };
    std::size_t bad_at_server = 0, bad_at_client = 0;
    asio::co_spawn(io, both_ways(server, 7, 3, bad_at_server), asio::detached);
    asio::co_spawn(io, both_ways(client, 3, 7, bad_at_client), asio::detached);
    io.run();
    EXPECT_EQ(bad_at_server, 0u);
    EXPECT_EQ(bad_at_client, 0u);
}

// A TCP close without close_notify reads as a truncation (after the data that
// came before it), never as a clean EOF; a reset reads as a reset.
TEST_F(Connected, ATcpCloseWithoutCloseNotifyIsATruncationAndAResetIsAReset) {
    for (bool reset : {false, true}) {
        asio::io_context io2;
        auto sockets2 = socket_pair(io2);
        TlsStream srv{std::move(sockets2.first), *pki.a, TlsStream::Role::server};
        TlsStream cli{std::move(sockets2.second), *pki.b, TlsStream::Role::client};
        srv.peer_check().auth.allow = {"b"};
        cli.peer_check().auth.allow = {"a"};
        cli.set_client_params("a", kAlpnData, nullptr, 1);
        std::string got;
        error_code last;
        asio::co_spawn(
            io2,
            [&]() -> asio::awaitable<void> {
                EXPECT_TRUE((co_await srv.handshake()).ok());
                EXPECT_FALSE(co_await srv.write_all(asio::buffer("unread", 6)));
                char buf[64];
                for (;;) {
                    auto [ec, n] = co_await srv.read_some(asio::buffer(buf));
                    if (ec) {
                        last = ec;
                        break;
                    }
                    got.append(buf, n);
                }
            },
            asio::detached);
        asio::co_spawn(
            io2,
            [&]() -> asio::awaitable<void> {
                EXPECT_TRUE((co_await cli.handshake()).ok());
                EXPECT_FALSE(co_await cli.write_all(asio::buffer("last words", 10)));
                if (reset) {
                    // Closed with the server's bytes unread: a reset (AF_UNIX like TCP).
                    co_await cli.socket().async_wait(asio::socket_base::wait_read,
                                                     asio::use_awaitable);
                    cli.close();
                } else {
                    ::shutdown(cli.socket().native_handle(), SHUT_WR);  // FIN, no close_notify
                }
            },
            asio::detached);
        io2.run();
        EXPECT_EQ(got, "last words") << "reset=" << reset;
        if (reset)
            EXPECT_EQ(last, asio::error::connection_reset);
        else
            EXPECT_EQ(last, asio::ssl::error::stream_truncated);
    }
}

TEST(HandshakeClassification, EachOpenSslReasonMapsToTheReasonOperatorsSee) {
    struct Row {
        long verify;
        HandshakeFailure want;
    };
    for (auto [v, want] :
         {Row{X509_V_ERR_CERT_HAS_EXPIRED, HandshakeFailure::expired},
          Row{X509_V_ERR_CERT_NOT_YET_VALID, HandshakeFailure::not_yet_valid},
          Row{X509_V_ERR_CERT_REVOKED, HandshakeFailure::revoked},
          Row{X509_V_ERR_CRL_HAS_EXPIRED, HandshakeFailure::crl_expired},
          Row{X509_V_ERR_CRL_NOT_YET_VALID, HandshakeFailure::crl_expired},
          Row{X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, HandshakeFailure::unknown_ca},
          Row{X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, HandshakeFailure::unknown_ca},
          Row{X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN, HandshakeFailure::unknown_ca},
          Row{X509_V_ERR_CERT_SIGNATURE_FAILURE, HandshakeFailure::unknown_ca},
          Row{X509_V_ERR_INVALID_PURPOSE, HandshakeFailure::bad_certificate}})
        EXPECT_EQ(classify_verify_result(v), want) << X509_verify_cert_error_string(v);
    struct Reason {
        int reason;
        HandshakeFailure want;
    };
    for (auto [r, want] :
         {Reason{SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE, HandshakeFailure::no_certificate},
          Reason{SSL_R_UNSUPPORTED_PROTOCOL, HandshakeFailure::protocol_version},
          Reason{SSL_R_TLSV1_ALERT_PROTOCOL_VERSION, HandshakeFailure::protocol_version},
          Reason{SSL_R_WRONG_VERSION_NUMBER, HandshakeFailure::not_tls},
          Reason{SSL_R_HTTP_REQUEST, HandshakeFailure::not_tls},
          Reason{SSL_R_PACKET_LENGTH_TOO_LONG, HandshakeFailure::not_tls},
          Reason{SSL_R_NO_APPLICATION_PROTOCOL, HandshakeFailure::no_alpn},
          Reason{SSL_R_UNEXPECTED_EOF_WHILE_READING, HandshakeFailure::closed},
          Reason{SSL_R_NO_SHARED_GROUPS, HandshakeFailure::no_shared_group},
          Reason{SSL_AD_REASON_OFFSET + SSL_AD_UNKNOWN_CA, HandshakeFailure::peer_rejected},
          Reason{SSL_AD_REASON_OFFSET + SSL_AD_ACCESS_DENIED, HandshakeFailure::peer_rejected},
          Reason{SSL_R_BAD_SIGNATURE, HandshakeFailure::bad_certificate}})
        EXPECT_EQ(classify_ssl_reason(r), want)
            << ERR_reason_error_string(ERR_PACK(ERR_LIB_SSL, 0, r));
}

// A client connection from node "b" to node "a" over a fresh socketpair.
struct Dial {
    std::pair<asio::ip::tcp::socket, asio::ip::tcp::socket> sockets;
    TlsStream server, client;
    Dial(asio::io_context& io, Pki& pki, SessionSlot* slot, std::vector<std::string> server_allows)
        : sockets(socket_pair(io)),
          server(std::move(sockets.first), *pki.a, TlsStream::Role::server),
          client(std::move(sockets.second), *pki.b, TlsStream::Role::client) {
        server.peer_check().auth.allow = std::move(server_allows);
        client.peer_check().auth.allow = {"a"};
        client.set_client_params("a", kAlpnData, slot, 1);
    }
};

TEST(TlsSessions, ASecondConnectionResumesAndStillChecksTheIdentity) {
    Pki pki;
    asio::io_context io;
    SessionSlot slot;
    bool resumed[3] = {true, false, false};
    std::size_t ticket_bytes = 0;
    for (int i = 0; i < 3; ++i) {
        Dial d(io, pki, &slot, {"b"});
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                EXPECT_TRUE((co_await d.server.handshake()).ok());
                EXPECT_FALSE(co_await d.server.write_all(asio::buffer("x", 1)));
                EXPECT_FALSE(co_await d.server.shutdown_send());
                char buf[8];
                co_await d.server.read_some(asio::buffer(buf));  // the client's close
            },
            asio::detached);
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                auto hs = co_await d.client.handshake();
                EXPECT_TRUE(hs.ok()) << hs.detail;
                char buf[8];
                // Reading takes in the session ticket that follows the handshake.
                auto [ec, n] = co_await d.client.read_some(asio::buffer(buf));
                EXPECT_FALSE(ec);
                resumed[i] = d.client.resumed();
                const unsigned char* tick = nullptr;
                if (i == 0)
                    SSL_SESSION_get0_ticket(SSL_get0_session(d.client.native()), &tick,
                                            &ticket_bytes);
                co_await d.client.shutdown_send();
            },
            asio::detached);
        io.run();
        io.restart();
        EXPECT_EQ(d.server.verdict().identity, "b");  // resumed or not, the identity is known
    }
    EXPECT_FALSE(resumed[0]);
    EXPECT_TRUE(resumed[1]) << "the second connection did a full handshake";
    EXPECT_TRUE(resumed[2]) << "the third connection did a full handshake";
    // The server resumes from its own cache (a new session for each ticket).
    EXPECT_EQ(SSL_CTX_sess_number(pki.a->server.get()), 3);
    // The ticket is an id into that cache, not the session (with the client's
    // certificate) encrypted, which OpenSSL would decode on every resumption.
    EXPECT_GT(ticket_bytes, 0u);
    EXPECT_LT(ticket_bytes, 100u);
}

TEST(TlsSessions, AServerThatRefusesTheClientsIdentityIsPeerRejectedOnTheClient) {
    // TLS 1.3: the client's handshake completes before the server has checked
    // its certificate; the server's refusal arrives as an alert on the first read.
    Pki pki;
    asio::io_context io;
    Dial d(io, pki, nullptr, {"someone-else"});
    HandshakeResult server_result;
    error_code client_read;
    asio::co_spawn(
        io, [&]() -> asio::awaitable<void> { server_result = co_await d.server.handshake(); },
        asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            auto hs = co_await d.client.handshake();
            if (!hs.ok()) {  // the alert may also arrive during the handshake
                EXPECT_EQ(hs.failure, HandshakeFailure::peer_rejected) << hs.detail;
                co_return;
            }
            char buf[8];
            auto [ec, n] = co_await d.client.read_some(asio::buffer(buf));
            client_read = ec;
        },
        asio::detached);
    io.run();
    EXPECT_EQ(server_result.failure, HandshakeFailure::identity_not_allowed)
        << server_result.detail;
    if (client_read) {
        EXPECT_EQ(client_read.category(), asio::error::get_ssl_category()) << client_read.message();
        EXPECT_EQ(
            classify_ssl_reason(ERR_GET_REASON(static_cast<unsigned long>(client_read.value()))),
            HandshakeFailure::peer_rejected)
            << client_read.message();
    }
}

}  // namespace
}  // namespace tunneld
