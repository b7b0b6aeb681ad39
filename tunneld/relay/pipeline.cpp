#include "tunneld/relay/pipeline.hpp"

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>

#include "tunneld/net/dial.hpp"
#include "tunneld/net/socket_options.hpp"
#include "tunneld/relay/engine.hpp"
#include "tunneld/relay/pipeline_steps.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;
using unix_socket = asio::local::stream_protocol::socket;

namespace {

std::string address_of(const tcp::endpoint& ep) {
    return Endpoint{ep.address().to_string(), ep.port(), {}}.to_string();
}

// A far end reached over TCP: keepalive for a peer across the network (a
// service's own, config.hpp), TCP_NODELAY for a backend on this host.
void tune(Context& ctx, const Far& far, tcp::socket& s, ConnInfo& info) {
    if (far.tls()) {
        const auto& keepalive = info.service.empty() ? ctx.keepalive : ctx.service_keepalive;
        if (auto set = apply_public_options(s.native_handle(), keepalive); !set)
            spdlog::warn("conn={} {}", info.id, set.error().what);
    } else {
        (void)apply_local_options(s.native_handle());  // best effort: only latency
    }
}

asio::awaitable<FarOpen> open_tls(Context& ctx, const Far& far, ConnInfo& info, tcp::socket s,
                                  std::function<void()>& closer) {
    FarOpen out;
    auto material = ctx.tls.load();
    auto tls = std::make_unique<TlsStream>(std::move(s), *material, TlsStream::Role::client);
    tls->peer_check().auth.allow = {far.peer};
    tls->peer_check().auth.want_alpn = far.alpn;
    tls->set_client_params(far.peer, far.alpn, far.session, material->generation);
    closer = [t = tls.get()] { t->close(); };
    out.handshake = co_await handshake_within(*tls, ctx.timeouts.handshake);
    ctx.stats.count_handshake(Direction::outbound, out.handshake.failure);
    if (!out.handshake.ok()) {
        out.reason = CloseReason::handshake_failed;
        out.timed_out = out.handshake.failure == HandshakeFailure::timeout;
        co_return out;
    }
    ctx.stats.count_key_exchange(Direction::outbound, tls->group());
    out.stream.emplace(std::move(tls));
    co_return out;
}

}  // namespace

asio::awaitable<FarOpen> open_far(Context& ctx, const Far& far, ConnInfo& info,
                                  std::function<void()>& closer,
                                  std::optional<Duration> dial_within) {
    struct Clear {
        std::function<void()>& c;
        ~Clear() { c = nullptr; }
    } clear{closer};
    auto ex = co_await asio::this_coro::executor;
    auto within = dial_within.value_or(ctx.timeouts.connect);
    FarOpen out;
    const auto unreachable =
        far.tls() ? CloseReason::peer_unreachable : CloseReason::backend_unreachable;
    if (far.target.is_unix()) {
        unix_socket s(ex);
        closer = [&s] {
            error_code ignored;
            s.close(ignored);
        };
        if (auto dialed = co_await dial(s, far.target.unix_path, within); !dialed) {
            out.reason = unreachable;
            out.detail = dialed.error().what;
            out.timed_out = dialed.error().timed_out;
            co_return out;
        }
        out.stream.emplace(std::move(s));
        co_return out;
    }
    tcp::socket s(ex);
    closer = [&s] {
        error_code ignored;
        s.close(ignored);
    };
    if (auto dialed = co_await dial(s, far.target, within, far.source); !dialed) {
        out.reason = unreachable;
        out.detail = dialed.error().what;
        out.timed_out = dialed.error().timed_out;
        co_return out;
    }
    tune(ctx, far, s, info);
    if (!far.tls()) {
        out.stream.emplace(std::move(s));
        co_return out;
    }
    error_code ec;
    info.remote = address_of(s.remote_endpoint(ec));
    co_return co_await open_tls(ctx, far, info, std::move(s), closer);
}

ConnInfo accepted_local(Context& ctx, tcp::socket& s) {
    ConnInfo info;
    info.id = ctx.next_id++;
    info.direction = "outbound";
    error_code ec;
    auto client = s.remote_endpoint(ec);
    info.local = ec ? "" : address_of(client);
    auto at = s.local_endpoint(ec);
    info.listener = ec ? "" : address_of(at);
    return info;
}

asio::awaitable<void> carry(Context& ctx, Near near, Far far, ConnInfo info) {
    Steps steps{ctx, info, far};
    auto live = steps.admit(near);
    if (!live) co_return;
    std::optional<TlsStream> near_tls;
    if (near.protocols) {
        auto verdict = co_await steps.accept_tls(*live, near, near_tls);
        if (!verdict.ok()) co_return;
        if (verdict.use == Verdict::Use::probe) {
            co_await steps.serve_probe(*live, *near_tls);
            co_return;
        }
        if (!steps.count(*live) || !steps.resolve_far(verdict, near_tls->socket())) co_return;
    } else if (far.tls() && co_await steps.refuse_silent(near.socket)) {
        co_return;
    } else if (far.needs_quorum && steps.refuse_minority(near.socket)) {
        co_return;
    }
    std::function<void()> far_closer;
    live->close = [&] {
        if (near_tls) near_tls->close();
        error_code ignored;
        near.socket.close(ignored);
        if (far_closer) far_closer();
    };
    CloseHook hook{*live};
    auto opened = co_await open_far(ctx, far, info, far_closer);
    if (!opened.ok()) {
        if (near_tls) near_tls->close();
        steps.far_failed(opened);
        co_return;
    }
    FarStream& far_end = *opened.stream;
    co_await steps.relay(*live, near.socket, near_tls ? &*near_tls : nullptr, far_end, far_closer);
}

}  // namespace tunneld
