// The one connection pipeline (relay/pipeline.hpp) driven end to end in one
// process, for each near/far combination a listener builds:
//   plain -> plain TCP backend, plain -> unix backend   (inbound.local, self routes)
//   TLS   -> plain TCP backend, TLS   -> unix backend   (the inbound port)
//   plain -> TLS peer                                   (peers[].local, routes)
// The other end of each is scripted by the test over loopback sockets: a
// client (plaintext, or a TLS client with node b's certificate) and a backend
// (plaintext, or a TLS server with node b's certificate).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <csignal>
#include <variant>

#include "tls_fixture.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/relay/outbound.hpp"
#include "tunneld/relay/pipeline.hpp"

namespace tunneld {
namespace {

using namespace test;
using asio::ip::tcp;
using unix_socket = asio::local::stream_protocol::socket;

enum class Combo { plain_tcp, plain_unix, tls_tcp, tls_unix, plain_tls };
const char* name(Combo c) {
    const char* n[] = {"plain_tcp", "plain_unix", "tls_tcp", "tls_unix", "plain_tls"};
    return n[static_cast<int>(c)];
}
bool near_tls(Combo c) { return c == Combo::tls_tcp || c == Combo::tls_unix; }
bool far_tls(Combo c) { return c == Combo::plain_tls; }
bool far_unix(Combo c) { return c == Combo::plain_unix || c == Combo::tls_unix; }

// A scripted end: a plain socket or a TLS stream, with the few operations the scripts use.
struct End {
    std::variant<tcp::socket*, unix_socket*, TlsStream*> s;
    asio::awaitable<error_code> write(std::string data) {
        if (auto* t = std::get_if<TlsStream*>(&s))
            co_return co_await (*t)->write_all(asio::buffer(data));
        error_code ec;
        co_await std::visit(
            [&](auto* p) -> asio::awaitable<void> {
                if constexpr (!std::is_same_v<decltype(p), TlsStream*>) {
                    auto [e, n] = co_await asio::async_write(*p, asio::buffer(data),
                                                             asio::as_tuple(asio::use_awaitable));
                    ec = e;
                }
            },
            s);
        co_return ec;
    }
    // Everything until EOF (or an error: then what came before it, and the error).
    asio::awaitable<std::pair<std::string, error_code>> read_to_end() {
        std::string out;
        char buf[4096];
        for (;;) {
            error_code ec;
            std::size_t n = 0;
            if (auto* t = std::get_if<TlsStream*>(&s)) {
                std::tie(ec, n) = co_await (*t)->read_some(asio::buffer(buf));
            } else if (auto* p = std::get_if<tcp::socket*>(&s)) {
                std::tie(ec, n) = co_await (*p)->async_read_some(
                    asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
            } else {
                auto* u = std::get<unix_socket*>(s);
                std::tie(ec, n) = co_await u->async_read_some(asio::buffer(buf),
                                                              asio::as_tuple(asio::use_awaitable));
            }
            out.append(buf, n);
            if (ec == asio::error::eof) co_return std::pair{out, error_code{}};
            if (ec) co_return std::pair{out, ec};
        }
    }
    asio::awaitable<void> half_close() {
        error_code ignored;
        if (auto* t = std::get_if<TlsStream*>(&s))
            (void)co_await (*t)->shutdown_send();
        else if (auto* p = std::get_if<tcp::socket*>(&s))
            (*p)->shutdown(tcp::socket::shutdown_send, ignored);
        else
            std::get<unix_socket*>(s)->shutdown(unix_socket::shutdown_send, ignored);
    }
    // Closes with a reset (SO_LINGER 0), or for TLS without close_notify.
    void reset() {
        error_code ignored;
        std::visit(
            [&](auto* p) {
                if constexpr (std::is_same_v<decltype(p), TlsStream*>) {
                    p->socket().set_option(asio::socket_base::linger(true, 0), ignored);
                    p->close();
                } else {
                    p->set_option(asio::socket_base::linger(true, 0), ignored);
                    p->close(ignored);
                }
            },
            s);
    }
    void truncate() {  // TLS: TCP FIN without close_notify
        auto* t = std::get<TlsStream*>(s);
        ::shutdown(t->socket().native_handle(), SHUT_WR);
    }
};

struct Pipeline : ::testing::TestWithParam<Combo> {
    Pki pki;
    asio::io_context io;
    Config cfg;
    std::optional<Context> ctx;
    AlpnPolicy policy;
    tcp::acceptor backend_tcp{io, {asio::ip::address_v4::loopback(), 0}};
    std::string unix_path = (pki.dir / "backend.sock").string();
    asio::local::stream_protocol::acceptor backend_unix{io};
    tcp::acceptor front{io, {asio::ip::address_v4::loopback(), 0}};
    // The scripted ends and what the pipeline carries between them.
    std::optional<tcp::socket> client_sock, backend_sock;
    std::optional<unix_socket> backend_usock;
    std::optional<TlsStream> client_tls, backend_tls;
    std::optional<End> client, backend;
    bool client_ready = false, backend_ready = false;
    bool local_quorum = false;  // the far end is a local_quorum listener's own backend

    Pipeline() {
        std::signal(SIGPIPE, SIG_IGN);
        cfg = parse_config("node: a\ntls: {ca: " + (pki.dir / "ca.crt").string() +
                               ", cert: " + (pki.dir / "a.crt").string() +
                               ", key: " + (pki.dir / "a.key").string() +
                               "}\ninbound: {listen: ['127.0.0.1:1'], backend: '127.0.0.1:1', "
                               "allow: [b]}\nhealth: {enabled: false}\n",
                           "pipeline_test.yaml");
        ctx.emplace(cfg, pki.a);
        policy = make_alpn_policy(cfg);
        backend_unix.open();
        backend_unix.bind(unix_path);
        backend_unix.listen();
        auto port = backend_tcp.local_endpoint().port();
        cfg.inbound->backend =
            far_unix(GetParam()) ? Endpoint{"", 0, unix_path} : Endpoint{"127.0.0.1", port, ""};
    }

    Far far() {
        if (far_tls(GetParam())) {
            PeerConfig peer;
            peer.name = "b";
            peer.connect = Endpoint{"127.0.0.1", backend_tcp.local_endpoint().port(), ""};
            static SessionSlot slot;
            return peer_far(peer, "", slot);
        }
        Far f;
        if (near_tls(GetParam()))
            f.inbound = &*cfg.inbound;
        else
            f.target = cfg.inbound->backend;
        f.needs_quorum = local_quorum;
        return f;
    }

    // Accepts one front socket (the client's, connected here) and starts the
    // pipeline on it.
    void spawn_carry(std::string route = "") {
        tcp::socket near(io);
        client_sock.emplace(io);
        client_sock->connect(front.local_endpoint());
        front.accept(near);
        ConnInfo info;
        info.id = ctx->next_id++;
        info.direction = near_tls(GetParam()) ? "inbound" : "outbound";
        info.listener = "127.0.0.1:" + std::to_string(front.local_endpoint().port());
        info.local = info.listener;
        info.remote = info.listener;
        info.route = std::move(route);
        asio::co_spawn(io,
                       carry(*ctx, Near{std::move(near), near_tls(GetParam()) ? &policy : nullptr},
                             far(), info),
                       asio::detached);
    }

    // Starts the pipeline, and the client and backend sides (handshakes
    // included); returns once both are connected.
    void start(std::string route = "") {
        spawn_carry(std::move(route));
        asio::co_spawn(io, connect_client(), asio::detached);
        asio::co_spawn(io, accept_backend(), asio::detached);
        run_until([&] { return client_ready && backend_ready; });
        ASSERT_TRUE(client_ready && backend_ready) << name(GetParam());
    }

    asio::awaitable<void> connect_client() {
        if (near_tls(GetParam())) {
            client_tls.emplace(std::move(*client_sock), *pki.b, TlsStream::Role::client);
            client_tls->peer_check().auth.allow = {"a"};
            client_tls->set_client_params("a", kAlpnData, nullptr, 1);
            EXPECT_TRUE((co_await client_tls->handshake()).ok());
            client.emplace(End{&*client_tls});
        } else {
            client.emplace(End{&*client_sock});
        }
        client_ready = true;
    }

    asio::awaitable<void> accept_backend() {
        if (far_unix(GetParam())) {
            backend_usock.emplace(io);
            co_await backend_unix.async_accept(*backend_usock, asio::use_awaitable);
            backend.emplace(End{&*backend_usock});
        } else {
            backend_sock.emplace(io);
            co_await backend_tcp.async_accept(*backend_sock, asio::use_awaitable);
            if (far_tls(GetParam())) {
                backend_tls.emplace(std::move(*backend_sock), *pki.b, TlsStream::Role::server);
                backend_tls->peer_check().auth.allow = {"a"};
                EXPECT_TRUE((co_await backend_tls->handshake()).ok());
                backend.emplace(End{&*backend_tls});
            } else {
                backend.emplace(End{&*backend_sock});
            }
        }
        backend_ready = true;
    }

    template <class Pred>
    void run_until(Pred done, std::chrono::seconds limit = std::chrono::seconds(10)) {
        auto until = std::chrono::steady_clock::now() + limit;
        while (!done() && std::chrono::steady_clock::now() < until)
            io.run_for(std::chrono::milliseconds(5));
    }

    Direction direction() const {
        return near_tls(GetParam()) ? Direction::inbound : Direction::outbound;
    }
    std::uint64_t closes(CloseReason r) const { return ctx->stats.closes(direction(), r); }
    // Waits for the pipeline's one close and returns its reason.
    CloseReason closed() {
        std::optional<CloseReason> seen;
        run_until([&] {
            for (int r = 0; r < static_cast<int>(kCloseReasonCount); ++r)
                if (closes(static_cast<CloseReason>(r))) seen = static_cast<CloseReason>(r);
            return seen.has_value();
        });
        EXPECT_TRUE(seen) << name(GetParam()) << ": the pipeline did not finish";
        return seen.value_or(CloseReason::finished);
    }

    // Runs a script on an end, to completion.
    template <class F>
    void script(F f) {
        bool done = false;
        asio::co_spawn(
            io,
            [&]() -> asio::awaitable<void> {
                co_await f();
                done = true;
            },
            asio::detached);
        run_until([&] { return done; });
        ASSERT_TRUE(done) << name(GetParam());
    }
};

TEST_P(Pipeline, TheClientHalfClosesFirstAndTheAnswerStillArrives) {
    start();
    script([&]() -> asio::awaitable<void> {
        EXPECT_FALSE(co_await client->write("request"));
        co_await client->half_close();
        auto [got, ec] = co_await backend->read_to_end();
        EXPECT_EQ(got, "request");
        EXPECT_FALSE(co_await backend->write("answer after the client's EOF"));
        co_await backend->half_close();
        auto [answer, cec] = co_await client->read_to_end();
        EXPECT_EQ(answer, "answer after the client's EOF");
        EXPECT_FALSE(cec) << cec.message();
    });
    EXPECT_EQ(closed(), CloseReason::finished) << name(GetParam());
}

TEST_P(Pipeline, TheBackendHalfClosesFirstAndTheClientStillSpeaks) {
    start();
    script([&]() -> asio::awaitable<void> {
        EXPECT_FALSE(co_await backend->write("banner"));
        co_await backend->half_close();
        auto [banner, ec] = co_await client->read_to_end();
        EXPECT_EQ(banner, "banner");
        EXPECT_FALSE(co_await client->write("late words"));
        co_await client->half_close();
        auto [got, bec] = co_await backend->read_to_end();
        EXPECT_EQ(got, "late words");
    });
    EXPECT_EQ(closed(), CloseReason::finished) << name(GetParam());
}

TEST_P(Pipeline, AResetAfterTheOtherEndsGoodbyeIsClean_WithoutItAFailure) {
    start();
    script([&]() -> asio::awaitable<void> {
        EXPECT_FALSE(co_await client->write("Terminate"));
        co_await client->half_close();
        auto [got, ec] = co_await backend->read_to_end();
        EXPECT_EQ(got, "Terminate");
        backend->reset();  // postgres exits with bytes unread
    });
    // A TLS peer always says goodbye with close_notify: its reset is an error.
    EXPECT_EQ(closed(), far_tls(GetParam()) ? CloseReason::peer_error : CloseReason::finished)
        << name(GetParam());
}

TEST_P(Pipeline, ABackendResetWhileTheClientGoesOnIsAFailure) {
    start();
    script([&]() -> asio::awaitable<void> {
        EXPECT_FALSE(co_await client->write("query"));
        backend->reset();
        auto [got, ec] = co_await client->read_to_end();  // closed under it, after the grace
        EXPECT_TRUE(got.empty());
    });
    EXPECT_EQ(closed(), far_tls(GetParam()) ? CloseReason::peer_error : CloseReason::local_error)
        << name(GetParam());
}

TEST_P(Pipeline, ATlsPeerClosingWithoutCloseNotifyIsTruncation) {
    if (!near_tls(GetParam()) && !far_tls(GetParam())) return;  // no TLS end to truncate
    start();
    script([&]() -> asio::awaitable<void> {
        End& tls_end = near_tls(GetParam()) ? *client : *backend;
        EXPECT_FALSE(co_await tls_end.write("half a record stream"));
        tls_end.truncate();
        End& plain = near_tls(GetParam()) ? *backend : *client;
        auto [got, ec] = co_await plain.read_to_end();
        EXPECT_EQ(got, "half a record stream");
    });
    EXPECT_EQ(closed(), CloseReason::peer_truncated) << name(GetParam());
}

TEST_P(Pipeline, ARevokedPeerIsClosedWithReasonRevoked) {
    if (!near_tls(GetParam()) && !far_tls(GetParam())) return;  // no peer certificate
    start();
    ctx->connections.close_revoked([](X509*) { return true; });
    EXPECT_EQ(closed(), CloseReason::revoked) << name(GetParam());
}

TEST_P(Pipeline, ARouteThatSwitchedClosesWithReasonSwitched) {
    if (near_tls(GetParam())) return;  // the inbound port carries no routes
    start("127.0.0.1:6432");
    auto target = far_tls(GetParam()) ? "b" : "a";
    EXPECT_EQ(ctx->connections.close_routed("127.0.0.1:6432", target, "the primary is now c"), 1u);
    EXPECT_EQ(closed(), CloseReason::switched) << name(GetParam());
    auto traffic = ctx->stats.all_traffic();
    if (far_tls(GetParam())) {
        ASSERT_EQ(traffic.size(), 1u);
        EXPECT_EQ(traffic[0].second->last_error().first, "switched: the primary is now c");
    }
}

// inbound.services.X.local_quorum: an own service's local listener (plain to
// this node's backend) serves only while Context::minority says nothing, and
// what it has open goes (reason=no_quorum) when this node loses its majority.
TEST_P(Pipeline, ALocalQuorumListenerClosesWhatItHasWhenTheMajorityIsLost) {
    if (near_tls(GetParam()) || far_tls(GetParam())) return;  // an own service's local
    std::optional<std::string> minority;
    ctx->minority = [&] { return minority; };
    local_quorum = true;
    start();
    minority = "no quorum: reaching 1 of 3 voters (a)";
    EXPECT_EQ(ctx->connections.close_needing_quorum("not served: " + *minority), 1u);
    EXPECT_EQ(closed(), CloseReason::no_quorum) << name(GetParam());
}

TEST_P(Pipeline, ALocalQuorumListenerInAMinorityResetsANewClientAndNeverDials) {
    if (near_tls(GetParam()) || far_tls(GetParam())) return;
    ctx->minority = [] {
        return std::optional<std::string>("no quorum: reaching 1 of 3 voters (a)");
    };
    local_quorum = true;
    spawn_carry();
    EXPECT_EQ(closed(), CloseReason::no_quorum) << name(GetParam());
    char c;
    error_code ec;
    client_sock->read_some(asio::buffer(&c, 1), ec);
    EXPECT_EQ(ec, asio::error::connection_reset) << ec.message();
    // Nothing reached the backend; a connection not on such a listener is not closed.
    backend_tcp.non_blocking(true);
    backend_unix.non_blocking(true);
    tcp::socket t(io);
    unix_socket u(io);
    far_unix(GetParam()) ? backend_unix.accept(u, ec) : backend_tcp.accept(t, ec);
    EXPECT_EQ(ec, asio::error::would_block);
    EXPECT_EQ(ctx->connections.close_needing_quorum("x"), 0u);
}

INSTANTIATE_TEST_SUITE_P(EachNearAndFar, Pipeline,
                         ::testing::Values(Combo::plain_tcp, Combo::plain_unix, Combo::tls_tcp,
                                           Combo::tls_unix, Combo::plain_tls),
                         [](const auto& p) { return std::string(name(p.param)); });

}  // namespace
}  // namespace tunneld
