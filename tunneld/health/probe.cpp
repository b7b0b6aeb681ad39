#include "tunneld/health/probe.hpp"
#include "tunneld/net/spawn.hpp"

#include <openssl/ssl.h>

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include "tunneld/health/probe_messages.hpp"
#include "tunneld/net/dial.hpp"
#include "tunneld/net/socket_options.hpp"

namespace tunneld {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

namespace {

// Reads one '\n'-terminated line into `line` (without the '\n'), keeping what
// follows in `pending`. Returns "" on success or what went wrong.
asio::awaitable<std::string> read_line(TlsStream& tls, std::string& pending, std::string& line) {
    char buf[4096];
    for (;;) {
        if (take_line(pending, line)) co_return "";
        if (pending.size() > kMaxProbeLine) co_return "line longer than 16 KiB";
        auto [ec, n] = co_await tls.read_some(asio::buffer(buf));
        if (ec == asio::error::eof) co_return "closed by the peer";
        if (ec) co_return ec.message();
        pending.append(buf, n);
    }
}

// read_line, giving up after `timeout` (the stream is closed then, and *late set).
asio::awaitable<std::string> read_line_within(TlsStream& tls, std::string& pending,
                                              std::string& line, Duration timeout,
                                              bool* late = nullptr) {
    asio::steady_timer timer(tls.socket().get_executor(), timeout);
    auto r = co_await (read_line(tls, pending, line) ||
                       timer.async_wait(asio::as_tuple(asio::use_awaitable)));
    if (r.index() == 1) {
        tls.close();
        if (late) *late = true;
        co_return "no answer within " + format_duration(timeout);
    }
    co_return std::get<0>(std::move(r));
}

std::string probe_error(const HandshakeResult& hs) {
    return std::string("TLS handshake failed: ") + to_string(hs.failure) +
           (hs.detail.empty() ? "" : " (" + hs.detail + ")");
}

}  // namespace

// The client loop of one peer; shared with the coroutine so that stop() can
// reach the live stream from any thread.
struct PeerProbe::Loop {
    Runtime& rt;
    const PeerConfig& peer;
    Latest<ProbeState>& out;
    asio::any_io_executor ex;
    SessionSlot session;
    asio::steady_timer sleep{ex};
    TlsStream* stream = nullptr;  // the current connection, only touched on ex
    bool stopped = false;         // only touched on ex
    ProbeState st;

    Loop(Runtime& r, const PeerConfig& p, Latest<ProbeState>& o, asio::any_io_executor e)
        : rt(r), peer(p), out(o), ex(std::move(e)) {}

    void publish() { out.set(st); }

    // Why one probe connection ended; `silent`: a deadline passed with no
    // answer (connect, handshake or pong), as opposed to a refusal or an error.
    struct Ended {
        std::string why;
        bool silent = false;
    };

    void went_down(Ended ended) {
        auto& why = ended.why;
        if (ended.silent)
            rt.silent.mark(peer.name, why);
        else
            rt.silent.clear(peer.name);
        if (st.up || !st.probed) {
            st.since = unix_now();
            if (st.up)
                spdlog::warn("probe: peer {} is down: {}", peer.name, why);
            else
                spdlog::warn("probe: peer {} unreachable: {}", peer.name, why);
        } else if (why != st.last_error) {
            spdlog::warn("probe: peer {} still unreachable: {}", peer.name, why);
        }
        st.up = false;
        st.probed = true;
        st.failures++;
        st.last_error = std::move(why);
        publish();
    }

    void got_pong(double rtt_ms, Pong pong) {
        auto& backend = pong.backend;
        rt.silent.clear(peer.name);
        if (!st.up) {
            st.since = unix_now();
            spdlog::info("probe: peer {} is up ({}, rtt {:.2f} ms)", peer.name, st.address, rtt_ms);
        }
        st.up = st.probed = true;
        st.pongs++;
        st.rtt_last_ms = rtt_ms;
        st.rtt_min_ms = st.rtt_min_ms == 0 ? rtt_ms : std::min(st.rtt_min_ms, rtt_ms);
        st.rtt_smoothed_ms =
            st.rtt_smoothed_ms == 0 ? rtt_ms : st.rtt_smoothed_ms * 7 / 8 + rtt_ms / 8;
        note_peer_backend(backend, st.primary_positions, rtt_ms);
        st.peer_backend = std::move(backend);
        st.my_walsender = std::move(pong.you);
        publish();
    }

    // One connection: connect, handshake, then ping until something fails.
    // Returns why it ended.
    asio::awaitable<Ended> session_once() {
        const auto& cfg = rt.config;
        // A pong must come back before the next ping would be due twice over.
        auto answer_within =
            std::max<Duration>(2 * cfg.health.probe_interval, std::chrono::seconds(1));
        // While the peer is silent, each attempt is a fresh SYN within
        // answer_within rather than one connect waiting out timeouts.connect, so a
        // healed link is seen (and its data connections dialled again) within about
        // answer_within + probe_interval.
        auto dial_within = st.probed && !st.up && rt.silent.why(peer.name)
                               ? std::min(answer_within, cfg.timeouts.connect)
                               : cfg.timeouts.connect;
        tcp::socket sock(ex);
        if (auto dialed = co_await dial(sock, peer.connect, dial_within); !dialed)
            co_return Ended{peer.connect.to_string() + ": " + dialed.error().what,
                            dialed.error().timed_out};
        error_code ec;
        auto remote = sock.remote_endpoint(ec);
        st.address = Endpoint{remote.address().to_string(), remote.port(), {}}.to_string();
        (void)apply_public_options(sock.native_handle(), cfg.keepalive);
        auto material = rt.tls.load();
        TlsStream tls(std::move(sock), *material, TlsStream::Role::client);
        tls.peer_check().allow = {peer.name};
        tls.set_client_params(peer.name, kAlpnProbe, &session, material->generation);
        stream = &tls;
        struct Clear {
            TlsStream*& s;
            ~Clear() { s = nullptr; }
        } clear{stream};
        if (stopped) co_return Ended{"stopping"};
        auto hs = co_await handshake_within(tls, cfg.timeouts.handshake);
        rt.stats.count_handshake(Direction::outbound, hs.failure);
        if (!hs.ok()) co_return Ended{probe_error(hs), hs.failure == HandshakeFailure::timeout};
        rt.stats.count_key_exchange(Direction::outbound, tls.group());
        if (tls.alpn() != kAlpnProbe)
            co_return Ended{"the peer does not speak tunneld-probe (ALPN '" + tls.alpn() + "')"};
        st.last_handshake = unix_now();
        std::string pending, line;
        for (std::uint64_t seq = 1;; ++seq) {
            std::string ping = make_ping(static_cast<std::int64_t>(seq));
            auto sent_at = std::chrono::steady_clock::now();
            st.pings++;
            if (auto wec = co_await tls.write_all(asio::buffer(ping)))
                co_return Ended{"sending a ping: " + wec.message()};
            bool late = false;
            if (auto err = co_await read_line_within(tls, pending, line, answer_within, &late);
                !err.empty())
                co_return Ended{err, late};
            double rtt = std::chrono::duration<double, std::milli>(
                             std::chrono::steady_clock::now() - sent_at)
                             .count();
            auto pong = parse_pong(line, static_cast<std::int64_t>(seq));
            if (!pong)
                co_return Ended{"the peer answered something that is not pong " +
                                std::to_string(seq)};
            // The CRL may have changed since the handshake (reload): a peer revoked
            // since then is not "up", and its connection ends like a data connection's.
            if (is_revoked(SSL_get0_peer_certificate(tls.native()),
                           SSL_CTX_get_cert_store(rt.tls.load()->client.get())))
                co_return Ended{"the peer's certificate is revoked (tls.crl); probe closed"};
            if (X509* theirs = SSL_get0_peer_certificate(tls.native());
                !theirs || X509_cmp_current_time(X509_get0_notAfter(theirs)) <= 0)
                co_return Ended{"the peer's certificate has expired; probe closed"};
            got_pong(rtt, std::move(*pong));
            sleep.expires_after(cfg.health.probe_interval);
            auto [sec] = co_await sleep.async_wait(asio::as_tuple(asio::use_awaitable));
            if (sec || stopped) co_return Ended{"stopping"};
        }
    }

    asio::awaitable<void> run() {
        while (!stopped) {
            auto ended = co_await session_once();
            if (stopped) break;
            went_down(std::move(ended));
            sleep.expires_after(rt.config.health.probe_interval);
            co_await sleep.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
};

PeerProbe::PeerProbe(Runtime& rt, const PeerConfig& peer)
    : rt_(rt), peer_(peer), io_(rt.pool.next()) {}

PeerProbe::~PeerProbe() = default;

void PeerProbe::start() {
    loop_ = std::shared_ptr<Loop>(new Loop(rt_, peer_, state_, io_.get_executor()));
    spawn(
        io_, [l = loop_]() { return l->run(); }, "a peer probe");
}

void PeerProbe::stop() {
    if (!loop_) return;
    asio::post(io_, [l = loop_] {
        l->stopped = true;
        l->sleep.cancel();
        if (l->stream) l->stream->close();
    });
}

asio::awaitable<void> serve_probe(Runtime& rt, TlsStream& tls, const ConnInfo& info) {
    auto idle = std::max<Duration>(std::chrono::seconds(30), 5 * rt.config.health.probe_interval);
    std::string pending, line;
    std::uint64_t answered = 0;
    for (;;) {
        auto err = co_await read_line_within(tls, pending, line, idle);
        if (!err.empty()) {
            if (answered)
                spdlog::debug("conn={} probe from {} ended after {} ping(s): {}", info.id,
                              info.peer, answered, err);
            co_return;
        }
        auto seq = parse_ping(line);
        if (!seq) {
            spdlog::warn("conn={} probe from {} sent something that is not a ping; closing",
                         info.id, info.peer);
            co_return;
        }
        auto backend = rt.backend.get();
        std::string out =
            make_pong(*seq, rt.config.node, backend, walsender_of(backend, info.peer));
        if (co_await tls.write_all(asio::buffer(out))) co_return;
        ++answered;
    }
}

}  // namespace tunneld
