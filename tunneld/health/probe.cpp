#include "tunneld/health/probe.hpp"
#include "tunneld/net/spawn.hpp"

#include <openssl/ssl.h>

#include <algorithm>

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
#include "tunneld/relay/outbound.hpp"
#include "tunneld/relay/pipeline.hpp"

namespace tunneld {

namespace asio = boost::asio;
namespace json = boost::json;
using asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::chrono::milliseconds kSilentPause{50};

// How long one connect attempt to a silent peer waits for its SYN-ACK.
Duration silent_redial(double rtt_smoothed_ms) {
    auto three_rtt = Duration(static_cast<std::int64_t>(3 * rtt_smoothed_ms));
    return std::clamp(three_rtt, Duration(250), Duration(1000));
}

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
    if (hs.failure == HandshakeFailure::no_alpn)
        return "the peer does not speak tunneld-probe (" + hs.detail + ")";
    return std::string("TLS handshake failed: ") + to_string(hs.failure) +
           (hs.detail.empty() ? "" : " (" + hs.detail + ")");
}

}  // namespace

// The client loop of one peer; shared with the coroutine so that stop() can
// reach the live stream from any thread.
struct PeerProbe::Loop {
    Context& ctx;
    const PeerConfig& peer;
    Duration interval;
    Latest<ProbeState>& out;
    asio::any_io_executor ex;
    SessionSlot session;
    asio::steady_timer sleep{ex};
    std::function<void()> close_current;  // closes the connection being opened; only on ex
    TlsStream* stream = nullptr;          // the current connection, only touched on ex
    bool stopped = false;                 // only touched on ex
    ProbeState st;

    Loop(Context& c, const PeerConfig& p, Duration i, Latest<ProbeState>& o,
         asio::any_io_executor e)
        : ctx(c), peer(p), interval(i), out(o), ex(std::move(e)) {}

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
            ctx.silent.mark(peer.name, why);
        else
            ctx.silent.clear(peer.name);
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
        ctx.silent.clear(peer.name);
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

    // One connection: the pipeline's far end (dial, handshake), then pings
    // until something fails. Returns why it ended.
    asio::awaitable<Ended> session_once() {
        // A pong must come back before the next ping would be due twice over.
        auto answer_within = std::max<Duration>(2 * interval, std::chrono::seconds(1));
        // While the peer is silent, each attempt is a fresh SYN, one after the
        // other, given three round trips as last measured (250 ms to 1 s), rather
        // than one connect waiting out timeouts.connect or the kernel's SYN
        // back-off (1, 3, 7 s...): a healed link is seen, and the connections
        // held for it dialled, within about that.
        auto dial_within =
            silent_now()
                ? std::min({answer_within, ctx.timeouts.connect, silent_redial(st.rtt_smoothed_ms)})
                : ctx.timeouts.connect;
        if (stopped) co_return Ended{"stopping"};
        ConnInfo info;
        auto far = peer_far(peer, "", session);
        far.alpn = kAlpnProbe;
        auto opened = co_await open_far(ctx, far, info, close_current, dial_within);
        if (!opened.ok()) {
            if (opened.reason == CloseReason::handshake_failed)
                co_return Ended{probe_error(opened.handshake), opened.timed_out};
            co_return Ended{peer.connect.to_string() + ": " + opened.detail, opened.timed_out};
        }
        st.address = info.remote;
        auto& tls = *std::get<std::unique_ptr<TlsStream>>(*opened.stream);
        stream = &tls;
        struct Clear {
            TlsStream*& s;
            ~Clear() { s = nullptr; }
        } clear{stream};
        if (stopped) co_return Ended{"stopping"};
        st.last_handshake = unix_now();
        co_return co_await ping_loop(tls, answer_within);
    }

    // Pings every probe interval; each pong must come back within `answer_within`.
    asio::awaitable<Ended> ping_loop(TlsStream& tls, Duration answer_within) {
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
            if (auto why = still_trusted(tls); !why.empty()) co_return Ended{why};
            got_pong(rtt, std::move(*pong));
            sleep.expires_after(interval);
            auto [sec] = co_await sleep.async_wait(asio::as_tuple(asio::use_awaitable));
            if (sec || stopped) co_return Ended{"stopping"};
        }
    }

    // The CRL may have changed since the handshake (reload): a peer revoked
    // since then is not "up", and its connection ends like a data connection's.
    std::string still_trusted(TlsStream& tls) {
        X509* theirs = SSL_get0_peer_certificate(tls.native());
        if (is_revoked(theirs, SSL_CTX_get_cert_store(ctx.tls.load()->client.get())))
            return "the peer's certificate is revoked (tls.crl); probe closed";
        if (!theirs || X509_cmp_current_time(X509_get0_notAfter(theirs)) <= 0)
            return "the peer's certificate has expired; probe closed";
        return "";
    }

    bool silent_now() const { return st.probed && !st.up && ctx.silent.why(peer.name); }

    asio::awaitable<void> run() {
        while (!stopped) {
            auto ended = co_await session_once();
            if (stopped) break;
            went_down(std::move(ended));
            // A silent peer's attempts follow each other (each one waited
            // already); a refusing or failing one is asked once per interval.
            sleep.expires_after(silent_now() ? std::min<Duration>(interval, kSilentPause)
                                             : interval);
            co_await sleep.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }
};

PeerProbe::PeerProbe(Context& ctx, const PeerConfig& peer, Duration interval, asio::io_context& io)
    : ctx_(ctx), peer_(peer), interval_(interval), io_(io) {}

PeerProbe::~PeerProbe() = default;

void PeerProbe::start() {
    loop_ = std::shared_ptr<Loop>(new Loop(ctx_, peer_, interval_, state_, io_.get_executor()));
    spawn(
        io_, [l = loop_]() { return l->run(); }, "a peer probe");
}

void PeerProbe::stop() {
    if (!loop_) return;
    asio::post(io_, [l = loop_] {
        l->stopped = true;
        l->sleep.cancel();
        if (l->stream) l->stream->close();
        if (l->close_current) l->close_current();
    });
}

asio::awaitable<void> serve_probe(const std::string& node,
                                  const Latest<BackendState>& backend_state,
                                  Duration probe_interval, TlsStream& tls, const ConnInfo& info,
                                  std::function<void()> on_ping) {
    auto idle = std::max<Duration>(std::chrono::seconds(30), 5 * probe_interval);
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
        if (on_ping) on_ping();
        auto backend = backend_state.get();
        std::string out = make_pong(*seq, node, backend, walsender_of(backend, info.peer));
        if (co_await tls.write_all(asio::buffer(out))) co_return;
        ++answered;
    }
}

}  // namespace tunneld
