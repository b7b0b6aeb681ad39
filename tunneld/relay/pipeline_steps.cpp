#include "tunneld/relay/pipeline_steps.hpp"

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/net/socket_options.hpp"
#include "tunneld/relay/engine.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;
using unix_socket = asio::local::stream_protocol::socket;

Steps::~Steps() {
    if (!handshake_source_.empty()) ctx_.connections.end_handshake(handshake_source_);
}

std::string Steps::service_label() const {
    return info_.service.empty() ? kAlpnData : info_.service;
}

Traffic* Steps::traffic() {
    if (direction_ == Direction::inbound)
        return &ctx_.stats.traffic(Direction::inbound, info_.peer, service_label());
    if (far_.tls()) return &ctx_.stats.traffic(Direction::outbound, far_.peer, service_label());
    return nullptr;  // this node's own backend: no peer to count against
}

void Steps::finish(const RelayResult& r) {
    log_close(info_, r);
    ctx_.stats.count_close(direction_, r.reason);
    if (r.reason == CloseReason::finished || info_.peer.empty()) return;
    if (auto* t = traffic())
        t->set_error(std::string(to_string(r.reason)) + (r.detail.empty() ? "" : ": " + r.detail));
}

// Counts a refused inbound connection and logs it, at most one line per source
// per 10 s (with the count), so a flood cannot flood the log too.
void Steps::refused(const std::string& source, const std::string& why) {
    ctx_.stats.count_close(direction_, CloseReason::limit);
    if (auto n = ctx_.refusals.note(source))
        spdlog::warn("inbound: refused {} connection(s) from {} at accept: {}", n, source, why);
}

Admission Steps::admit(Near& near) {
    auto ex = near.socket.get_executor();
    if (!near.protocols) {  // a local listener
        info_.peer = far_.tls() ? far_.peer : ctx_.node;
        info_.remote = far_.target.to_string();
        auto target = far_.tls() ? (info_.route.empty() ? "" : far_.peer) : ctx_.node;
        auto live = ctx_.connections.admit_local(ex, info_.id, info_.listener, info_.route, target,
                                                 far_.needs_quorum);
        if (!live) {
            ctx_.stats.count_close(direction_, CloseReason::limit);
            if (auto n = ctx_.refusals.note("listener " + info_.listener))
                log_close(info_,
                          RelayResult{0, 0, CloseReason::limit,
                                      "limits.max_local_connections=" +
                                          std::to_string(ctx_.limits.max_local_connections) +
                                          " reached on " + info_.listener +
                                          (n > 1 ? " (" + std::to_string(n) + " refused)" : "")});
        }
        return live;
    }
    direction_ = Direction::inbound;
    error_code ec;
    auto remote = near.socket.remote_endpoint(ec);
    if (ec) return Admission(ctx_.connections, nullptr);  // gone before we looked
    const auto source = remote.address().to_string();
    // Strangers first spend their own budget (per source, and in total), before
    // anything else and never from max_connections; over it they are refused at
    // once, holding nothing.
    const auto& lim = ctx_.limits;
    switch (ctx_.connections.begin_handshake(source, lim.max_handshakes_per_source,
                                             lim.max_handshakes)) {
        case ConnectionTable::Refusal::per_source:
            refused(source, "limits.max_handshakes_per_source=" +
                                std::to_string(lim.max_handshakes_per_source) +
                                " unauthenticated connections from this address already");
            return Admission(ctx_.connections, nullptr);
        case ConnectionTable::Refusal::total:
            refused(source, "limits.max_handshakes=" + std::to_string(lim.max_handshakes) +
                                " unauthenticated connections in progress already");
            return Admission(ctx_.connections, nullptr);
        case ConnectionTable::Refusal::none:
            break;
    }
    handshake_source_ = source;
    // Closable (SIGTERM, revocation) from the start, but it takes a
    // max_connections place only once the peer is authenticated (count()).
    return ctx_.connections.admit(ex, info_.id, /*counted=*/false);
}

asio::awaitable<Verdict> Steps::accept_tls(LiveConnection& live, Near& near,
                                           std::optional<TlsStream>& tls) {
    if (auto set = apply_public_options(near.socket.native_handle(), ctx_.keepalive); !set)
        spdlog::warn("conn={} {}", info_.id, set.error().what);
    auto material = ctx_.tls.load();
    tls.emplace(std::move(near.socket), *material, TlsStream::Role::server);
    tls->peer_check().auth.protocols = near.protocols;
    tls->peer_check().auth.node = ctx_.node;
    live.close = [&tls] { tls->close(); };
    auto hs = co_await handshake_within(*tls, ctx_.timeouts.handshake);
    live.close = nullptr;
    ctx_.connections.end_handshake(handshake_source_);
    handshake_source_.clear();
    info_.peer = tls->verdict().identity;
    ctx_.stats.count_handshake(Direction::inbound, hs.failure);
    if (!hs.ok()) {
        log_handshake_failure(info_, hs);
        co_return Verdict{};
    }
    ctx_.stats.count_key_exchange(Direction::inbound, tls->group());
    // Probes too: a CRL that revokes the peer closes its probe like its data.
    live.peer_cert.reset(SSL_get1_peer_certificate(tls->native()));
    co_return tls->verdict();
}

asio::awaitable<void> Steps::serve_probe(LiveConnection& live, TlsStream& tls) {
    const bool self = info_.peer == ctx_.node;
    // A probe relays nothing: a peer's health probe gets pongs with our backend
    // state; `certs rotate` only looks at the serial we present and closes.
    spdlog::log(self ? spdlog::level::info : spdlog::level::debug,
                "conn={} inbound probe from {} ({}): handshake ok, serial {}", info_.id, info_.peer,
                info_.remote, ctx_.tls.load()->serial_hex);
    if (!ctx_.connections.mark_probe(live, info_.peer)) {
        // One prober needs one connection; a peer opening dozens would hold
        // file descriptors the real peer needs.
        ctx_.stats.count_close(Direction::inbound, CloseReason::limit);
        if (auto n = ctx_.refusals.note("probe " + info_.peer))
            spdlog::warn(
                "conn={} inbound: refused {} probe connection(s) from {}: {} already open (the "
                "most one identity may hold)",
                info_.id, n, info_.peer, ConnectionTable::kMaxProbesPerIdentity);
        co_return;
    }
    live.close = [&tls] { tls.close(); };
    CloseHook hook{live};
    if (ctx_.serve_probe) co_await ctx_.serve_probe(tls, info_);
    if (live.revoked || live.expired) {
        spdlog::warn("conn={} inbound probe from {} closed: its certificate {}", info_.id,
                     info_.peer,
                     live.revoked ? "is now revoked (tls.crl)" : "expired while connected");
        co_return;  // the stream is closed: nothing more is written to it
    }
    co_await tls.shutdown_send();
}

bool Steps::count(LiveConnection& live) {
    if (ctx_.connections.count(live)) return true;
    ctx_.stats.count_close(Direction::inbound, CloseReason::limit);
    if (auto n = ctx_.refusals.note(info_.peer))
        spdlog::warn(
            "conn={} inbound: refused {} connection(s) from peer {}: limits.max_connections={} "
            "reached",
            info_.id, n, info_.peer, ctx_.limits.max_connections);
    return false;
}

bool Steps::resolve_far(const Verdict& v, tcp::socket& near) {
    if (!far_.inbound) return true;
    const auto& in = *far_.inbound;
    far_.target = in.backend;
    if (!v.service.empty()) {
        const auto* service = in.service(v.service);
        if (!service) return false;  // cannot happen: the ALPN callback only picks served ones
        info_.service = v.service;
        far_.target = service->backend;
        if (auto set = apply_public_options(near.native_handle(), ctx_.service_keepalive); !set)
            spdlog::warn("conn={} {}", info_.id, set.error().what);
    } else if (auto it = in.source.find(info_.peer); it != in.source.end()) {
        far_.source = asio::ip::make_address(it->second);
    }
    info_.local = far_.target.to_string();
    if (auto* t = traffic()) t->last_handshake = unix_now();
    return true;
}

asio::awaitable<bool> Steps::refuse_silent(tcp::socket& near) {
    auto silent = ctx_.silent.why(far_.peer);
    if (!silent) co_return false;
    if (info_.service.empty()) {
        // Postgres: the peer's own address, so no client has another to try.
        // Held (up to timeouts.connect) until the probe hears the peer, then
        // dialled at once: a walreceiver's attempt made during a partition
        // streams again as soon as the link returns, where a reset would make it
        // wait out wal_retrieve_retry_interval (5 s) first.
        auto deadline = std::chrono::steady_clock::now() + ctx_.timeouts.connect;
        asio::steady_timer tick(near.get_executor());
        while (silent && std::chrono::steady_clock::now() < deadline) {
            tick.expires_after(std::chrono::milliseconds(50));
            co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
            silent = ctx_.silent.why(far_.peer);
        }
        if (!silent) co_return false;
    }
    // Services (etcd, Patroni's API: clients with a list of members) are reset
    // at once, like a dead host's RST, so the client tries its next
    // address now rather than after its own timeout (silent_peers.hpp).
    traffic()->set_error("peer_unreachable: " + *silent);
    reset_near(near, CloseReason::peer_unreachable, "silent " + far_.peer + " " + info_.service,
               *silent);
    co_return true;
}

bool Steps::refuse_minority(tcp::socket& near) {
    auto why = ctx_.minority ? ctx_.minority() : std::nullopt;
    if (!why) return false;
    reset_near(near, CloseReason::no_quorum, "minority " + info_.service,
               "this node's " + info_.service + " is not served without a majority: " + *why);
    return true;
}

void Steps::reset_near(tcp::socket& near, CloseReason reason, const std::string& key,
                       const std::string& detail) {
    // Closed here, with SO_LINGER 0: a reset. (Left to the socket's
    // destructor, Asio would clear the linger option first and send a FIN.)
    error_code ec;
    near.set_option(asio::socket_base::linger(true, 0), ec);
    near.close(ec);
    ctx_.stats.count_close(Direction::outbound, reason);
    // One line per key per 10 s at most: a client retrying in a tight loop
    // (Patroni's etcd client does) cannot flood the log.
    if (auto n = ctx_.refusals.note(key))
        log_close(info_, RelayResult{0, 0, reason,
                                     detail + (n > 1 ? " (" + std::to_string(n) +
                                                           " reset since the last such line)"
                                                     : "")});
}

void Steps::far_failed(const FarOpen& opened) {
    if (opened.reason != CloseReason::handshake_failed) {
        finish(RelayResult{
            0, 0, opened.reason,
            far_.tls() ? opened.detail : far_.target.to_string() + ": " + opened.detail});
        return;
    }
    auto hs = opened.handshake;
    if (!info_.service.empty() && hs.failure == HandshakeFailure::no_alpn)
        hs.detail = far_.peer + " does not serve '" + info_.service +
                    "' (not in its inbound.services, or it predates services): " + hs.detail;
    log_handshake_failure(info_, hs);
    traffic()->set_error(std::string("handshake failed: ") + to_string(hs.failure) +
                         (hs.detail.empty() ? "" : " (" + hs.detail + ")"));
}

asio::awaitable<void> Steps::relay(LiveConnection& live, tcp::socket& near, TlsStream* near_tls,
                                   FarStream& far, std::function<void()>& far_closer) {
    auto* far_tls = std::get_if<std::unique_ptr<TlsStream>>(&far);
    auto* far_tcp = std::get_if<tcp::socket>(&far);
    auto* far_unix = std::get_if<unix_socket>(&far);
    far_closer = [&] {
        error_code ignored;
        if (far_tls) (*far_tls)->close();
        if (far_tcp) far_tcp->close(ignored);
        if (far_unix) far_unix->close(ignored);
    };
    if (far_tcp && near_tls) {
        // postgres sees this address and port as the client: the primary's
        // health check maps its walsenders to peers by it.
        error_code ec;
        auto here = far_tcp->local_endpoint(ec);
        if (!ec)
            ctx_.connections.note_backend_source(
                live, backend_source_key(here.address().to_string(), here.port()), info_.peer);
    }
    TlsStream* tls = near_tls ? near_tls : far_tls ? far_tls->get() : nullptr;
    if (far_tls) {
        live.peer_cert.reset(SSL_get1_peer_certificate((*far_tls)->native()));
        traffic()->last_handshake = unix_now();
    }
    if (!near_tls) (void)apply_local_options(near.native_handle());
    log_open(info_, tls && tls->resumed(), tls ? tls->group() : "");
    // Graceful stop: the plaintext end on this host stops being read, as if
    // it had sent EOF; the relay passes the half-close on and drains.
    live.quiesce = [&] {
        error_code ignored;
        if (near_tls && far_tcp) far_tcp->shutdown(asio::socket_base::shutdown_receive, ignored);
        if (near_tls && far_unix) far_unix->shutdown(asio::socket_base::shutdown_receive, ignored);
        if (!near_tls) near.shutdown(asio::socket_base::shutdown_receive, ignored);
    };
    auto* t = traffic();
    RelayResult result;
    {
        std::optional<ActiveGuard> active;
        if (t) active.emplace(*t);
        result = co_await run(near, near_tls, far, t ? &t->bytes : nullptr);
    }
    live.quiesce = nullptr;
    if (live.revoked) result.reason = CloseReason::revoked;
    if (live.expired) {
        result.reason = CloseReason::expired;
        result.detail = "the peer's certificate expired while connected";
    }
    if (!live.switched.empty()) {
        result.reason = live.switched_reason;
        result.detail = live.switched;
    }
    finish(result);
}

// The one relay engine, for whichever pair of ends this connection has: the
// plaintext end on this host is `local`, the tunnel's end `remote`.
asio::awaitable<RelayResult> Steps::run(tcp::socket& near, TlsStream* near_tls, FarStream& far,
                                        ByteCounters* counters) {
    RelayBuffers buffers;
    if (near_tls) {
        if (auto* s = std::get_if<tcp::socket>(&far))
            co_return co_await tunneld::relay(TcpEnd{*s, "backend"}, TlsEnd{*near_tls}, buffers,
                                              counters);
        if (auto* s = std::get_if<unix_socket>(&far))
            co_return co_await tunneld::relay(UnixEnd{*s, "backend"}, TlsEnd{*near_tls}, buffers,
                                              counters);
        co_return RelayResult{0, 0, CloseReason::protocol, "TLS on both ends is not a relay"};
    }
    if (auto* s = std::get_if<std::unique_ptr<TlsStream>>(&far))
        co_return co_await tunneld::relay(TcpEnd{near, "local end"}, TlsEnd{**s}, buffers,
                                          counters);
    if (auto* s = std::get_if<tcp::socket>(&far))
        co_return co_await tunneld::relay(TcpEnd{near, "local end"}, TcpEnd{*s, "backend"}, buffers,
                                          counters);
    co_return co_await tunneld::relay(TcpEnd{near, "local end"},
                                      UnixEnd{std::get<unix_socket>(far), "backend"}, buffers,
                                      counters);
}

}  // namespace tunneld
