// The relay loops in-process: two TlsStreams over a socketpair, each relayed
// to a "local" socketpair whose other end a test thread drives as postgres or
// its client would. Unix socketpairs behave like TCP where it matters here:
// closing with bytes unread resets the other end (ECONNRESET).
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <poll.h>

#include <csignal>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <optional>
#include <random>
#include <thread>

#include "tls_fixture.hpp"
#include "tunneld/relay/engine.hpp"

namespace tunneld {
namespace {

using namespace test;

// SHA-256 through OpenSSL's EVP interface.
class Sha256 {
  public:
    Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
    ~Sha256() { EVP_MD_CTX_free(ctx_); }
    void update(const char* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
    std::string hex() {
        unsigned char d[32];
        unsigned len = 0;
        EVP_DigestFinal_ex(ctx_, d, &len);
        static const char* digits = "0123456789abcdef";
        std::string out;
        for (unsigned i = 0; i < len; ++i) (out += digits[d[i] >> 4]) += digits[d[i] & 15];
        return out;
    }

  private:
    EVP_MD_CTX* ctx_;
};

// app_a <-> [local_a | relay | tls_a] <=TLS=> [tls_b | relay | local_b] <-> app_b
struct Relayed : Connected {
    int app_a = -1, app_b = -1;
    std::optional<asio::ip::tcp::socket> local_a, local_b;
    std::optional<RelayResult> result_a, result_b;
    RelayBuffers bufs[2];

    Relayed() {
        std::signal(SIGPIPE, SIG_IGN);  // as the daemon does: a dead peer is an error, not a signal
        auto [la, aa] = raw_pair();
        auto [lb, ab] = raw_pair();
        app_a = aa;
        app_b = ab;
        local_a.emplace(io);
        local_a->assign(asio::ip::tcp::v4(), la);
        local_b.emplace(io);
        local_b->assign(asio::ip::tcp::v4(), lb);
    }
    ~Relayed() override {
        if (app_a >= 0) ::close(app_a);
        if (app_b >= 0) ::close(app_b);
    }

    static std::pair<int, int> raw_pair() {
        int fds[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
        return {fds[0], fds[1]};
    }

    // Handshakes, then runs both relays until both have ended (the test's
    // threads drive app_a and app_b meanwhile).
    void run_relays() {
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                EXPECT_TRUE((co_await server.handshake()).ok());
                result_a = co_await relay(TcpEnd{*local_a, "local end"}, TlsEnd{server}, bufs[0]);
            },
            asio::detached);
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                EXPECT_TRUE((co_await client.handshake()).ok());
                result_b = co_await relay(TcpEnd{*local_b, "local end"}, TlsEnd{client}, bufs[1]);
            },
            asio::detached);
        io.run();
        ASSERT_TRUE(result_a && result_b);
    }
};

void wait_readable(int fd) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1);
}

std::string read_all(int fd) {
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, n);
    return out;
}

TEST_F(Relayed, SixtyFourMiBWithRandomChunkingBothWaysArriveWhole) {
    constexpr std::size_t total = 64u << 20;
    auto pump = [](int fd, unsigned seed, std::string* sent_sha, std::string* got_sha) {
        std::mt19937 rng(seed);
        std::thread reader([&] {
            Sha256 h;
            std::vector<char> buf(1 << 20);
            std::uniform_int_distribution<std::size_t> size(1, buf.size());
            for (ssize_t n; (n = ::read(fd, buf.data(), size(rng))) > 0;)
                h.update(buf.data(), static_cast<std::size_t>(n));
            *got_sha = h.hex();
        });
        std::mt19937 wrng(seed + 1);
        Sha256 h;
        std::vector<char> chunk(300000);
        for (std::size_t sent = 0; sent < total;) {
            std::size_t n = std::min<std::size_t>(
                total - sent, std::uniform_int_distribution<std::size_t>(1, chunk.size())(wrng));
            for (std::size_t i = 0; i < n; ++i) chunk[i] = static_cast<char>(wrng());
            h.update(chunk.data(), n);
            for (std::size_t off = 0; off < n;) {
                auto w = ::write(fd, chunk.data() + off, n - off);
                ASSERT_GT(w, 0);
                off += static_cast<std::size_t>(w);
            }
            sent += n;
        }
        ::shutdown(fd, SHUT_WR);
        *sent_sha = h.hex();
        reader.join();
    };
    std::string a_sent, a_got, b_sent, b_got;
    std::thread ta(pump, app_a, 1, &a_sent, &a_got), tb(pump, app_b, 2, &b_sent, &b_got);
    run_relays();
    ta.join();
    tb.join();
    EXPECT_EQ(a_sent, b_got);
    EXPECT_EQ(b_sent, a_got);
    EXPECT_EQ(result_a->reason, CloseReason::finished) << result_a->detail;
    EXPECT_EQ(result_b->reason, CloseReason::finished) << result_b->detail;
    EXPECT_EQ(result_a->to_tls, total);
    EXPECT_EQ(result_a->from_tls, total);
}

TEST_F(Relayed, APeerThatDropsTcpWithoutCloseNotifyIsPeerTruncated) {
    // Taken here: once the relays run, the socket object belongs to their thread.
    int b_tls_fd = client.socket().native_handle();
    std::thread t([&] {
        ASSERT_EQ(::write(app_b, "hello", 5), 5);
        wait_readable(app_a);
        char buf[5];
        ASSERT_EQ(::read(app_a, buf, 5), 5);
        // B's TCP connection ends without TLS close_notify (a crash, a middlebox).
        ::shutdown(b_tls_fd, SHUT_RDWR);
    });
    run_relays();
    t.join();
    EXPECT_EQ(result_a->reason, CloseReason::peer_truncated) << result_a->detail;
}

TEST_F(Relayed, ServerResettingAfterTheClientsHalfCloseIsFinishedOnBothSides) {
    // app_b is the client: Terminate, half-close. app_a is postgres: exits
    // with those bytes unread, which resets its socket.
    std::thread t([&] {
        ASSERT_EQ(::write(app_b, "X\0\0\0\4", 5), 5);
        ::shutdown(app_b, SHUT_WR);
        wait_readable(app_a);
        ::close(app_a);  // unread bytes: the relay's local read gets ECONNRESET
        app_a = -1;
        EXPECT_EQ(read_all(app_b), "");  // a clean EOF, not a reset
    });
    run_relays();
    t.join();
    EXPECT_EQ(result_a->reason, CloseReason::finished) << result_a->detail;
    EXPECT_EQ(result_b->reason, CloseReason::finished) << result_b->detail;
}

TEST_F(Relayed, BothEndsResettingAtTheEndIsFinishedOnBothSides) {
    std::thread t([&] {
        ASSERT_EQ(::write(app_b, "X\0\0\0\4", 5), 5);
        ASSERT_EQ(::write(app_a, "bye", 3), 3);
        wait_readable(app_a);
        wait_readable(app_b);
        ::close(app_a);  // each closes with the other's bytes unread
        ::close(app_b);
        app_a = app_b = -1;
    });
    run_relays();
    t.join();
    EXPECT_EQ(result_a->reason, CloseReason::finished) << result_a->detail;
    EXPECT_EQ(result_b->reason, CloseReason::finished) << result_b->detail;
}

TEST_F(Relayed, ALocalResetWhileThePeerGoesOnIsALocalError) {
    std::thread t([&] {
        ASSERT_EQ(::write(app_b, "Q", 1), 1);
        wait_readable(app_a);
        ::close(app_a);  // postgres dies mid-conversation
        app_a = -1;
        // The client does not end its side for a while: keeps talking.
        for (int i = 0; i < 20; ++i) {
            if (::send(app_b, "more", 4, MSG_NOSIGNAL) < 0) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        ::close(app_b);
        app_b = -1;
    });
    run_relays();
    t.join();
    EXPECT_EQ(result_a->reason, CloseReason::local_error) << result_a->detail;
    EXPECT_EQ(result_a->detail, "Connection reset by peer");
}

TEST(RelayBuffer, HeldWhileDataFlowsAndBackInTheThreadsPoolWhenAReadComesBackShort) {
    RelayBuffer a;
    EXPECT_FALSE(a.held());  // idle: nothing
    char* block = a.get().data();
    EXPECT_EQ(a.get().size(), RelayBuffer::kSize);
    a.used(RelayBuffer::kSize);  // filled: more is queued, kept
    EXPECT_TRUE(a.held());
    EXPECT_EQ(a.get().data(), block);
    a.used(100);  // drained: given back
    EXPECT_FALSE(a.held());
    RelayBuffer b;
    EXPECT_EQ(b.get().data(), block);  // the same block, from the pool
    {
        RelayBuffer c;
        EXPECT_NE(c.get().data(), block);  // b holds it
    }                                      // c's block goes to the pool as c ends
}

}  // namespace
}  // namespace tunneld
