#include "tunneld/relay/plain.hpp"

#include "tunneld/relay/plain_io.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <functional>
#include <vector>

#include "tunneld/net/dial.hpp"
#include "tunneld/net/socket_options.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;
using namespace asio::experimental::awaitable_operators;

namespace {

// How long the backend may take to finish after the client left with bytes
// unread (the same grace the TLS relay gives a peer's close).
constexpr auto kLocalGoneGrace = std::chrono::milliseconds(500);

struct PlainState {
    std::string error;         // a failure that makes the close a local_error
    std::string local_gone;    // the client reset or stopped reading: why
    bool client_done = false;  // the client sent EOF or reset: nothing more will come
    std::string backend_gone;  // the backend reset after that (its unread bytes): why
    bool backend_ended = false;
};

// Whether the client has closed or reset its end, whatever upstream has read
// so far: the kernel's TCP state of the local socket (CLOSE_WAIT after its FIN,
// CLOSE after its reset).
bool client_has_left(tcp::socket& local) {
    tcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(local.native_handle(), IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return false;
    return info.tcpi_state == TCP_CLOSE_WAIT || info.tcpi_state == TCP_CLOSE;
}

// Whether the client leaves (client_has_left) within `limit`, looked at every
// 10 ms: psql sends Terminate and its close_notify, and postgres may reset the
// connection over the unread close_notify before psql's close reaches us.
asio::awaitable<bool> client_leaves_within(tcp::socket& local, std::chrono::milliseconds limit) {
    asio::steady_timer tick(local.get_executor());
    for (auto waited = std::chrono::milliseconds(0); waited < limit;
         waited += std::chrono::milliseconds(10)) {
        if (client_has_left(local)) co_return true;
        tick.expires_after(std::chrono::milliseconds(10));
        auto [ec] = co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec) co_return false;
    }
    co_return client_has_left(local);
}

bool is_reset(const error_code& ec) {
    return ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// client -> backend. EOF is passed on as a half-close. A reset is treated the
// same way (libpq over SSL ends with its close_notify unread, so the kernel
// resets): the backend decides, by closing, whether the session ended well.
asio::awaitable<std::uint64_t> upstream(tcp::socket& local, auto& backend, PlainState& st,
                                        const std::function<void()>& fail) {
    RelayBuffer buffer;  // held only while data flows (buffers.hpp)
    bool more = true;
    std::uint64_t total = 0;
    for (;;) {
        auto [ec, n] = co_await read_plain(local, buffer, more);
        if (ec) {
            if (ec != asio::error::eof && st.local_gone.empty()) st.local_gone = ec.message();
            st.client_done = true;
            break;
        }
        auto buf = buffer.get();  // what was read
        auto [wec, put] = co_await asio::async_write(backend, asio::buffer(buf.data(), n),
                                                     asio::as_tuple(asio::use_awaitable));
        if (wec && is_reset(wec)) {
            // The backend reset: downstream reads why, and judges whether the
            // session had ended (the client's last bytes left unread).
            break;
        }
        if (wec) {
            if (st.error.empty()) st.error = wec.message();
            fail();
            break;
        }
        total += n;
        buffer.used(n);
    }
    error_code ignored;
    backend.shutdown(asio::socket_base::shutdown_send, ignored);
    co_return total;
}

// backend -> client, until the backend's EOF (passed on as a half-close). Once
// the client is gone, what the backend still sends is read and dropped, for at
// most kLocalGoneGrace.
asio::awaitable<std::uint64_t> downstream(auto& backend, tcp::socket& local, PlainState& st,
                                          const std::function<void()>& fail) {
    RelayBuffer buffer;
    bool more = true;
    std::uint64_t total = 0;
    asio::steady_timer grace(local.get_executor());
    bool grace_started = false;
    for (;;) {
        if (!st.local_gone.empty() && !grace_started) {
            grace_started = true;
            grace.expires_after(kLocalGoneGrace);
            grace.async_wait([&](error_code ec) {
                if (!ec && !st.backend_ended) fail();  // the backend did not finish either
            });
        }
        auto [ec, n] = co_await read_plain(backend, buffer, more);
        if (ec == asio::error::eof) {
            st.backend_ended = true;
            break;
        }
        if (ec && ec != asio::error::operation_aborted &&
            (st.client_done || client_has_left(local) ||
             (is_reset(ec) && co_await client_leaves_within(local, kLocalGoneGrace)))) {
            // postgres ends a session with the client's last bytes (an SSL
            // close_notify) unread, so its close is a reset: a clean end here.
            // The client may have left already without upstream having read
            // its FIN or reset yet (psql sends Terminate and closes at once),
            // or leave just after (its close still on the way).
            st.backend_gone = ec.message();
            st.backend_ended = true;
            break;
        }
        if (ec) {
            if (st.error.empty()) st.error = st.local_gone.empty() ? ec.message() : st.local_gone;
            fail();
            break;
        }
        total += n;
        if (st.local_gone.empty()) {  // else the client left: dropped
            auto buf = buffer.get();  // what was read
            auto [wec, put] = co_await asio::async_write(local, asio::buffer(buf.data(), n),
                                                         asio::as_tuple(asio::use_awaitable));
            if (wec && st.local_gone.empty()) st.local_gone = wec.message();
        }
        buffer.used(n);
    }
    grace.cancel();
    error_code ignored;
    local.shutdown(asio::socket_base::shutdown_send, ignored);
    co_return total;
}

// This node is the route's target: straight to inbound.backend, no TLS.
template <class Backend>
asio::awaitable<void> carry(Runtime& rt, tcp::socket local, Backend backend, ConnInfo info,
                            const Endpoint& be) {
    info.direction = "outbound";
    info.peer = rt.config.node;
    info.remote = be.to_string();
    auto live = rt.connections.admit_local(local.get_executor(), info.id, info.listener, info.route,
                                           rt.config.node);
    auto finish = [&](const RelayResult& r) {
        log_close(info, r);
        rt.stats.count_close(Direction::outbound, r.reason);
    };
    if (!live) {
        rt.stats.count_close(Direction::outbound, CloseReason::limit);
        if (auto n = rt.refusals.note("listener " + info.listener))
            log_close(info, RelayResult{0, 0, CloseReason::limit,
                                        "limits.max_local_connections=" +
                                            std::to_string(rt.config.limits.max_local_connections) +
                                            " reached on " + info.listener +
                                            (n > 1 ? " (" + std::to_string(n) + " refused)" : "")});
        co_return;
    }
    auto close_both = [&] {
        error_code ignored;
        local.close(ignored);
        backend.close(ignored);
    };
    live->close = close_both;
    CloseHook hook{*live};
    Result<void> dialed;
    if constexpr (std::is_same_v<Backend, tcp::socket>) {
        dialed = co_await dial(backend, be, rt.config.timeouts.connect);
        if (dialed) (void)apply_local_options(backend.native_handle());
    } else {
        dialed = co_await dial(backend, be.unix_path, rt.config.timeouts.connect);
    }
    if (!dialed) {
        finish(RelayResult{0, 0, CloseReason::backend_unreachable,
                           be.to_string() + ": " + dialed.error().what});
        co_return;
    }
    (void)apply_local_options(local.native_handle());
    log_open(info, false);
    std::function<void()> fail = close_both;
    error_code nb;
    local.non_blocking(true, nb);  // read_plain's direct recv(2)
    backend.non_blocking(true, nb);
    PlainState st;
    auto [to_backend, from_backend] =
        co_await (upstream(local, backend, st, fail) && downstream(backend, local, st, fail));
    RelayResult r{from_backend, to_backend, CloseReason::finished, ""};
    if (!st.error.empty()) {
        r.reason = CloseReason::local_error;
        r.detail = st.error;
    } else if (!st.local_gone.empty()) {  // the backend finished the session: a clean end
        r.detail = "local end closed with bytes unread (" + st.local_gone + ")";
    } else if (!st.backend_gone.empty()) {
        r.detail = "backend closed with bytes unread (" + st.backend_gone + ")";
    }
    if (!live->switched.empty()) {
        r.reason = CloseReason::switched;
        r.detail = live->switched;
    }
    finish(r);
}

}  // namespace

asio::awaitable<void> carry_to_own_backend(Runtime& rt, tcp::socket local, ConnInfo info,
                                           const Endpoint& be) {
    if (be.is_unix()) {
        asio::local::stream_protocol::socket backend(local.get_executor());
        co_await carry(rt, std::move(local), std::move(backend), std::move(info), be);
    } else {
        tcp::socket backend(local.get_executor());
        co_await carry(rt, std::move(local), std::move(backend), std::move(info), be);
    }
}

}  // namespace tunneld
