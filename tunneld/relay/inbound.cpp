#include "tunneld/relay/inbound.hpp"
#include "tunneld/net/spawn.hpp"

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "tunneld/health/probe.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/net/dial.hpp"
#include "tunneld/net/listener.hpp"
#include "tunneld/net/socket_options.hpp"
#include "tunneld/relay/buffers.hpp"
#include "tunneld/relay/relay.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// "postgresql" or the service's name: the label of its counters.
std::string service_label(const ConnInfo& info) {
    return info.service.empty() ? kAlpnData : info.service;
}

// Logs and counts the end of a connection from a verified peer.
void finish(Runtime& rt, const ConnInfo& info, const RelayResult& r) {
    log_close(info, r);
    rt.stats.count_close(Direction::inbound, r.reason);
    if (r.reason != CloseReason::finished && !info.peer.empty())
        rt.stats.traffic(Direction::inbound, info.peer, service_label(info))
            .set_error(std::string(to_string(r.reason)) +
                       (r.detail.empty() ? "" : ": " + r.detail));
}

// Connects to `be` (inbound.backend or a service's; TCP or unix) and relays;
// logs the close line.
template <class Plain>
asio::awaitable<void> relay_to_backend(Runtime& rt, LiveConnection& live, ConnInfo& info,
                                       TlsStream& tls, const Endpoint& be, Plain backend) {
    live.close = [&] {
        error_code ignored;
        backend.close(ignored);
        tls.close();
    };
    CloseHook hook{live};
    Result<void> dialed;
    if constexpr (std::is_same_v<Plain, tcp::socket>) {
        std::optional<asio::ip::address> source;
        if (auto it = rt.config.inbound->source.find(info.peer);
            it != rt.config.inbound->source.end() && info.service.empty())
            source = asio::ip::make_address(it->second);
        dialed = co_await dial(backend, be, rt.config.timeouts.connect, source);
        if (dialed) {
            (void)apply_local_options(backend.native_handle());
            // postgres sees this address and port as the client: the primary's
            // health check maps its walsenders to peers by it.
            error_code ec;
            auto here = backend.local_endpoint(ec);
            if (!ec)
                rt.connections.note_backend_source(
                    live, backend_source_key(here.address().to_string(), here.port()), info.peer);
        }
    } else {
        dialed = co_await dial(backend, be.unix_path, rt.config.timeouts.connect);
    }
    if (!dialed) {
        tls.close();
        finish(rt, info,
               RelayResult{0, 0, CloseReason::backend_unreachable,
                           be.to_string() + ": " + dialed.error().what});
        co_return;
    }
    log_open(info, tls.resumed(), tls.group());
    live.quiesce = [&] {
        error_code ignored;
        backend.shutdown(asio::socket_base::shutdown_receive, ignored);
    };
    auto& traffic = rt.stats.traffic(Direction::inbound, info.peer, service_label(info));
    RelayResult result;
    {
        ActiveGuard active(traffic);
        RelayBuffers buffers;
        result = co_await relay(backend, tls, buffers, &traffic.bytes);
    }
    if (live.revoked) result.reason = CloseReason::revoked;
    if (live.expired) {
        result.reason = CloseReason::expired;
        result.detail = "the peer's certificate expired while connected";
    }
    finish(rt, info, result);
}

// Counts a refused connection and logs it, at most one line per source per
// 10 s (with the count), so a flood cannot flood the log too.
void refuse(Runtime& rt, const std::string& source, const std::string& why) {
    rt.stats.count_close(Direction::inbound, CloseReason::limit);
    if (auto n = rt.refusals.note(source))
        spdlog::warn("inbound: refused {} connection(s) from {} at accept: {}", n, source, why);
}

// A handshake budget slot of one source, given back on every path.
struct HandshakeSlot {
    ConnectionTable& table;
    std::string source;
    bool held = true;
    void release() {
        if (held) table.end_handshake(source);
        held = false;
    }
    ~HandshakeSlot() { release(); }
};

asio::awaitable<void> serve(Runtime& rt, const AlpnPolicy& policy, tcp::socket socket) {
    const auto& cfg = rt.config;
    ConnInfo info;
    info.id = rt.next_id++;
    info.direction = "inbound";
    info.local = cfg.inbound->backend.to_string();
    error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (ec) co_return;
    info.remote = Endpoint{remote.address().to_string(), remote.port(), {}}.to_string();
    const std::string source = remote.address().to_string();

    // Strangers first spend their own budget (per source, and in total), before
    // anything else and never from max_connections; over it they are refused at
    // once, holding nothing.
    switch (rt.connections.begin_handshake(source, cfg.limits.max_handshakes_per_source,
                                           cfg.limits.max_handshakes)) {
        case ConnectionTable::Refusal::per_source:
            refuse(rt, source,
                   "limits.max_handshakes_per_source=" +
                       std::to_string(cfg.limits.max_handshakes_per_source) +
                       " unauthenticated connections from this address already");
            co_return;
        case ConnectionTable::Refusal::total:
            refuse(rt, source,
                   "limits.max_handshakes=" + std::to_string(cfg.limits.max_handshakes) +
                       " unauthenticated connections in progress already");
            co_return;
        case ConnectionTable::Refusal::none:
            break;
    }
    HandshakeSlot slot{rt.connections, source};
    // Closable (SIGTERM, revocation) from the start, but it takes a
    // max_connections place only once the peer is authenticated.
    auto live = rt.connections.admit(socket.get_executor(), info.id, /*counted=*/false);
    if (auto set = apply_public_options(socket.native_handle(), cfg.keepalive); !set)
        spdlog::warn("conn={} {}", info.id, set.error().what);

    auto material = rt.tls.load();
    TlsStream tls(std::move(socket), *material, TlsStream::Role::server);
    // Who may connect depends on the protocol asked for: the ALPN callback
    // narrows `allow` to the chosen protocol's list (tls/alpn.hpp). Without
    // ALPN it stays inbound.allow, and the connection is refused below.
    tls.peer_check().allow = cfg.inbound->allow;
    tls.peer_check().allow.push_back(cfg.node);  // itself, for `certs rotate`'s probe only
    tls.peer_check().policy = &policy;
    live->close = [&tls] { tls.close(); };
    auto hs = co_await handshake_within(tls, cfg.timeouts.handshake);
    slot.release();
    info.peer = tls.peer_check().matched;
    if (hs.ok() && tls.alpn().empty())
        // Peers always send ALPN ("postgresql" or "tunneld-probe"); a client
        // without it is not a tunneld peer and gets nothing relayed.
        hs = HandshakeResult{HandshakeFailure::no_alpn,
                             "the client sent no ALPN; tunneld peers send 'postgresql'"};
    rt.stats.count_handshake(Direction::inbound, hs.failure);
    if (!hs.ok()) {
        log_handshake_failure(info, hs);
        co_return;
    }
    rt.stats.count_key_exchange(Direction::inbound, tls.group());
    const bool self = info.peer == cfg.node;
    // Probes too: a CRL that revokes the peer closes its probe like its data.
    live->peer_cert.reset(SSL_get1_peer_certificate(tls.native()));
    if (tls.alpn() == kAlpnProbe) {
        // A probe relays nothing: a peer's health probe gets pongs with our
        // backend state (see probe.hpp); `certs rotate` only looks at the serial
        // we present and closes.
        spdlog::log(self ? spdlog::level::info : spdlog::level::debug,
                    "conn={} inbound probe from {} ({}): handshake ok, serial {}", info.id,
                    info.peer, info.remote, material->serial_hex);
        if (!rt.connections.mark_probe(*live, info.peer)) {
            // One prober needs one connection; a peer opening dozens would
            // hold file descriptors the real peer needs.
            rt.stats.count_close(Direction::inbound, CloseReason::limit);
            if (auto n = rt.refusals.note("probe " + info.peer))
                spdlog::warn(
                    "conn={} inbound: refused {} probe connection(s) from {}: {} already open "
                    "(the most one identity may hold)",
                    info.id, n, info.peer, ConnectionTable::kMaxProbesPerIdentity);
            co_return;
        }
        co_await serve_probe(rt, tls, info);
        if (live->revoked || live->expired) {
            spdlog::warn("conn={} inbound probe from {} closed: its certificate {}", info.id,
                         info.peer,
                         live->revoked ? "is now revoked (tls.crl)" : "expired while connected");
            co_return;  // the stream is closed: nothing more is written to it
        }
        co_await tls.shutdown_send();
        co_return;
    }
    // A service connection (ALPN tunneld-svc/<name>, served: the callback
    // refused anything else) goes to that service's backend.
    const Endpoint* backend = &cfg.inbound->backend;
    if (auto name = std::string(service_of_alpn(tls.alpn())); !name.empty()) {
        const auto* service = cfg.inbound->service(name);
        if (!service) co_return;  // cannot happen: the ALPN callback only picks served ones
        info.service = name;
        backend = &service->backend;
    }
    info.local = backend->to_string();
    rt.stats.traffic(Direction::inbound, info.peer, service_label(info)).last_handshake =
        unix_now();
    if (self) {
        log_handshake_failure(info, HandshakeResult{HandshakeFailure::identity_not_allowed,
                                                    "this node's own identity may only probe"});
        co_return;
    }
    if (!rt.connections.count(*live)) {
        rt.stats.count_close(Direction::inbound, CloseReason::limit);
        if (auto n = rt.refusals.note(info.peer))
            spdlog::warn(
                "conn={} inbound: refused {} connection(s) from peer {}: limits.max_connections={} "
                "reached",
                info.id, n, info.peer, cfg.limits.max_connections);
        co_return;
    }
    auto ex = tls.socket().get_executor();
    if (backend->is_unix())
        co_await relay_to_backend(rt, *live, info, tls, *backend,
                                  asio::local::stream_protocol::socket(ex));
    else
        co_await relay_to_backend(rt, *live, info, tls, *backend, tcp::socket(ex));
}

}  // namespace

InboundListener::InboundListener(Runtime& rt, asio::io_context& io)
    : rt_(rt), io_(io), policy_(make_alpn_policy(rt.config)) {
    for (const auto& ep : rt.config.inbound->listen)
        acceptors_.push_back(open_listener(io, ep, "inbound.listen"));
}

void InboundListener::start() {
    for (const auto& sc : rt_.config.inbound->services)
        spdlog::info("inbound: service {} (ALPN {}) -> backend {} (allow: {})", sc.name,
                     service_alpn(sc.name), sc.backend.to_string(), fmt::join(sc.allow, ", "));
    for (auto& acceptor : acceptors_) {
        spdlog::info("inbound: listening on {} -> backend {} (allow: {})",
                     Endpoint{acceptor.local_endpoint().address().to_string(),
                              acceptor.local_endpoint().port(),
                              {}}
                         .to_string(),
                     rt_.config.inbound->backend.to_string(),
                     fmt::join(rt_.config.inbound->allow, ", "));
        spawn(io_,
              accept_loop(acceptor, rt_.pool,
                          [this](tcp::socket s) {
                              auto ex = s.get_executor();
                              spawn(ex, serve(rt_, policy_, std::move(s)), "an inbound connection");
                          }),
              "the inbound accept loop");
    }
}

void InboundListener::stop() {
    for (auto& a : acceptors_) {
        error_code ignored;
        a.close(ignored);
    }
}

}  // namespace tunneld
