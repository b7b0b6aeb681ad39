#include "tunneld/relay/relay.hpp"
#include "tunneld/relay/plain_io.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cerrno>

namespace tunneld {

using asio::as_tuple;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

// A TLS alert from the peer (OpenSSL reason SSL_AD_REASON_OFFSET + alert code).
// In TLS 1.3 a client learns that the server refused its certificate this way,
// on its first read after the handshake.
bool is_alert(const error_code& ec) {
    if (ec.category() != asio::error::get_ssl_category()) return false;
    int reason = ERR_GET_REASON(static_cast<unsigned long>(ec.value()));
    return reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256;
}

// State shared by the two loops of one relay (same executor, no locking).
template <class Plain>
struct Pair {
    Plain& local;
    TlsStream& tls;
    RelayResult result;
    bool failed = false;
    bool tls_eof = false;     // the peer sent close_notify: it has nothing more to say
    bool local_eof = false;   // the local side half-closed: it has nothing more to say
    bool tls_done = false;    // tls_to_local has ended (EOF or failure)
    bool local_gone = false;  // the local end reset / closed under us before any half-close
    error_code gone_ec{};     // how it went
    asio::steady_timer* tls_done_signal = nullptr;  // cancelled when tls_done is set
    ByteCounters* counters = nullptr;

    // Records the first failure and closes both sides, ending the other loop.
    void fail(bool tls_side, const error_code& ec) {
        if (failed) return;
        failed = true;
        if (ec == asio::error::operation_aborted) {
            result.reason = CloseReason::shutdown;
        } else if (!tls_side) {
            result.reason = CloseReason::local_error;
        } else if (ec == asio::ssl::error::stream_truncated) {
            result.reason = CloseReason::peer_truncated;
        } else if (ec == asio::error::timed_out) {
            result.reason = CloseReason::peer_timeout;
        } else if (is_alert(ec)) {
            result.reason = CloseReason::peer_rejected;
        } else {
            result.reason = CloseReason::peer_error;
        }
        result.detail = ec.message();
        close();
    }

    void close() {
        error_code ignored;
        local.close(ignored);
        tls.close();
    }
};

// How long a local reset waits for the peer's half-close (see local_to_tls).
constexpr auto kHalfCloseGrace = std::chrono::milliseconds(500);

// The socket's other end is gone: it closed with data unread, or reset.
bool is_gone(const error_code& ec) {
    return ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// How PostgreSQL sessions end: the client sends Terminate and closes; the server
// exits, and either end may close with bytes unread (a walsender keepalive, the
// rest of a COPY), which the kernel turns into a reset. Once one side has said it
// is done (its half-close went through) and then the other end is gone, nothing
// anybody still wanted was lost: the connection finished. Without an earlier
// half-close a reset is a failure, as before.
template <class Plain>
bool ended_normally(const Pair<Plain>& p, const error_code& ec) {
    return is_gone(ec) && (p.tls_eof || p.local_eof);
}

template <class Plain>
asio::awaitable<void> local_to_tls(Pair<Plain>& p, RelayBuffer& buffer) {
    bool more = true;  // the client may have spoken before the relay started
    for (;;) {
        auto [ec, n] = co_await read_plain(p.local, buffer, more);
        // The local end is gone (reset, or a write of the other loop found it
        // dead and this read then sees the closed socket as EOF).
        if ((ec && is_gone(ec)) || (ec == asio::error::eof && p.local_gone)) {
            if (!p.local_gone) p.gone_ec = ec;
            p.local_gone = true;
            // Nothing more will come from here: say so at once with our
            // close_notify. If the far end's local side went away too (both
            // postgres ends closed with bytes unread), each tunnel then sees the
            // other's clean close instead of waiting for it.
            (void)co_await p.tls.shutdown_send();
            if (!p.tls_eof && !p.tls_done) {
                // Gone before the peer's half-close arrived. A postgres server over
                // SSL does that after Terminate: it exits with the client's
                // close_notify alert unread. Those bytes, and our peer's
                // close_notify, are right behind on the same stream: give them a
                // moment (tls_to_local drops what can no longer be delivered). If
                // the peer keeps talking instead, it is a failure.
                p.tls_done_signal->expires_after(kHalfCloseGrace);
                co_await p.tls_done_signal->async_wait(as_tuple(use_awaitable));
            }
            if (!p.tls_eof) {
                p.fail(false, p.gone_ec);
                co_return;
            }
            p.close();  // the peer had said it was done: a clean end on both sides
            p.result.detail = "local end closed with bytes unread (" + p.gone_ec.message() + ")";
            co_return;
        }
        if (ec == asio::error::eof) {
            p.local_eof = true;
            // If the peer already closed its side cleanly and then its socket, our
            // close_notify cannot be delivered; nothing is lost, so that is no error.
            if (auto sec = co_await p.tls.shutdown_send(); sec && !p.tls_eof) p.fail(true, sec);
            co_return;
        }
        if (ec) {
            p.fail(false, ec);
            co_return;
        }
        if (auto wec = co_await p.tls.write_all(asio::buffer(buffer.get().data(), n))) {
            if (ended_normally(p, wec)) {  // the peer said it was done and left
                p.close();
                co_return;
            }
            p.fail(true, wec);
            co_return;
        }
        p.result.to_tls += n;
        if (p.counters) p.counters->to_tls.fetch_add(n, std::memory_order_relaxed);
        buffer.used(n);  // buf is passed on: it may be given back now
    }
}

template <class Plain>
asio::awaitable<void> tls_to_local(Pair<Plain>& p, RelayBuffer& buffer) {
    struct Done {
        Pair<Plain>& p;
        ~Done() {
            p.tls_done = true;
            p.tls_done_signal->cancel();
        }
    } done{p};
    for (;;) {
        // Idle until the peer speaks, holding no buffer (read_some would wait
        // with it otherwise).
        if (p.tls.would_wait()) {
            buffer.release();
            if (auto wec = co_await p.tls.wait_readable()) {
                p.fail(true, wec);
                co_return;
            }
        }
        auto buf = buffer.get();
        auto [ec, n] = co_await p.tls.read_some(asio::buffer(buf.data(), buf.size()));
        if (ec == asio::error::eof) {
            p.tls_eof = true;
            error_code ignored;
            p.local.shutdown(asio::socket_base::shutdown_send, ignored);
            co_return;
        }
        if (ec) {
            p.fail(true, ec);
            co_return;
        }
        if (p.local_gone) {  // undeliverable; local_to_tls decides how this ends
            buffer.used(n);
            continue;
        }
        if (auto wec = co_await write_plain(p.local, buf.data(), n)) {
            if (ended_normally(p, wec)) {  // the local client said it was done and left
                p.close();
                co_return;
            }
            if (is_gone(wec)) {  // local_to_tls wakes on the dead socket and waits for the peer
                p.local_gone = true;
                p.gone_ec = wec;
                buffer.used(n);
                continue;
            }
            p.fail(false, wec);
            co_return;
        }
        p.result.from_tls += n;
        if (p.counters) p.counters->from_tls.fetch_add(n, std::memory_order_relaxed);
        buffer.used(n);  // buf is passed on: it may be given back now
    }
}

}  // namespace

template <class Plain>
asio::awaitable<RelayResult> relay(Plain& local, TlsStream& tls, RelayBuffers& buffers,
                                   ByteCounters* counters) {
    error_code ignored;
    local.non_blocking(true, ignored);
    Pair<Plain> p{local, tls, {}};
    p.counters = counters;
    asio::steady_timer tls_done_signal(co_await asio::this_coro::executor);
    p.tls_done_signal = &tls_done_signal;
    co_await (local_to_tls(p, buffers.out) && tls_to_local(p, buffers.in));
    p.close();
    co_return p.result;
}

template asio::awaitable<RelayResult> relay(asio::ip::tcp::socket&, TlsStream&, RelayBuffers&,
                                            ByteCounters*);
template asio::awaitable<RelayResult> relay(asio::local::stream_protocol::socket&, TlsStream&,
                                            RelayBuffers&, ByteCounters*);

}  // namespace tunneld
