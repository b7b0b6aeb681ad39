#include "tunneld/relay/outbound.hpp"
#include "tunneld/net/spawn.hpp"

#include <spdlog/spdlog.h>

#include <openssl/ssl.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "tunneld/net/conn_log.hpp"
#include "tunneld/net/dial.hpp"
#include "tunneld/net/listener.hpp"
#include "tunneld/net/socket_options.hpp"
#include "tunneld/relay/buffers.hpp"
#include "tunneld/relay/plain.hpp"
#include "tunneld/relay/relay.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;

// One local listener of a peer (peers[].local, or one of peers[].services) and
// its TLS session for resumption; or, with no peer, one of this node's own
// (inbound.local, inbound.services.X.local) straight to `backend`.
struct OutboundListener::Link {
    const PeerConfig* peer;  // null: this node's own backend
    std::string service;     // "" = postgresql
    tcp::acceptor acceptor;
    SessionSlot session;
    const Endpoint* backend = nullptr;  // with no peer
};

namespace {

std::string address_of(const tcp::endpoint& ep) {
    return Endpoint{ep.address().to_string(), ep.port(), {}}.to_string();
}

}  // namespace

asio::awaitable<void> carry_to_peer(Runtime& rt, const PeerConfig& peer, SessionSlot& session,
                                    tcp::socket local, ConnInfo info) {
    const auto& cfg = rt.config;
    if (info.local.empty()) co_return;  // the client was gone before we looked
    info.direction = "outbound";
    info.peer = peer.name;
    info.remote = peer.connect.to_string();
    error_code ec;

    auto live = rt.connections.admit_local(local.get_executor(), info.id, info.listener, info.route,
                                           info.route.empty() ? "" : peer.name);
    if (!live) {
        rt.stats.count_close(Direction::outbound, CloseReason::limit);
        if (auto n = rt.refusals.note("listener " + info.listener))
            log_close(info, RelayResult{0, 0, CloseReason::limit,
                                        "limits.max_local_connections=" +
                                            std::to_string(cfg.limits.max_local_connections) +
                                            " reached on " + info.listener +
                                            (n > 1 ? " (" + std::to_string(n) + " refused)" : "")});
        co_return;
    }
    (void)apply_local_options(local.native_handle());  // best effort: only latency

    tcp::socket pub(local.get_executor());
    live->close = [&] {
        local.close(ec);
        pub.close(ec);
    };
    auto& traffic = rt.stats.traffic(Direction::outbound, peer.name,
                                     info.service.empty() ? kAlpnData : info.service);
    auto finish = [&](const RelayResult& r) {
        log_close(info, r);
        rt.stats.count_close(Direction::outbound, r.reason);
        if (r.reason != CloseReason::finished)
            traffic.set_error(std::string(to_string(r.reason)) +
                              (r.detail.empty() ? "" : ": " + r.detail));
    };
    if (auto silent = rt.silent.why(peer.name)) {
        // Reset at once, like a dead host's RST, so the client tries its next
        // address now rather than after its own timeout (silent_peers.hpp).
        local.set_option(asio::socket_base::linger(true, 0), ec);
        rt.stats.count_close(Direction::outbound, CloseReason::peer_unreachable);
        traffic.set_error("peer_unreachable: " + *silent);
        // One line per peer and service per 10 s at most: a client retrying in a
        // tight loop (Patroni's etcd client does) cannot flood the log.
        if (auto n = rt.refusals.note("silent " + peer.name + " " + info.service))
            log_close(info, RelayResult{0, 0, CloseReason::peer_unreachable,
                                        *silent + (n > 1 ? " (" + std::to_string(n) +
                                                               " reset since the last such line)"
                                                         : "")});
        co_return;
    }
    if (auto dialed = co_await dial(pub, peer.connect, cfg.timeouts.connect); !dialed) {
        finish(RelayResult{0, 0, CloseReason::peer_unreachable, dialed.error().what});
        co_return;
    }
    info.remote = address_of(pub.remote_endpoint(ec));
    if (auto set = apply_public_options(pub.native_handle(), cfg.keepalive); !set)
        spdlog::warn("conn={} {}", info.id, set.error().what);

    auto material = rt.tls.load();
    TlsStream tls(std::move(pub), *material, TlsStream::Role::client);
    tls.peer_check().allow = {peer.name};
    const std::string alpn = info.service.empty() ? kAlpnData : service_alpn(info.service);
    tls.set_client_params(peer.name, alpn, &session, material->generation);
    live->close = [&] {
        local.close(ec);
        tls.close();
    };
    auto hs = co_await handshake_within(tls, cfg.timeouts.handshake);
    rt.stats.count_handshake(Direction::outbound, hs.failure);
    if (!hs.ok() && !info.service.empty() && hs.failure == HandshakeFailure::no_alpn)
        hs.detail = peer.name + " does not serve '" + info.service +
                    "' (not in its inbound.services, or it predates services): " + hs.detail;
    if (!hs.ok()) {
        log_handshake_failure(info, hs);
        traffic.set_error(std::string("handshake failed: ") + to_string(hs.failure) +
                          (hs.detail.empty() ? "" : " (" + hs.detail + ")"));
        co_return;
    }
    traffic.last_handshake = unix_now();
    live->peer_cert.reset(SSL_get1_peer_certificate(tls.native()));
    rt.stats.count_key_exchange(Direction::outbound, tls.group());
    log_open(info, tls.resumed(), tls.group());
    live->quiesce = [&] {
        error_code ignored;
        local.shutdown(asio::socket_base::shutdown_receive, ignored);
    };
    RelayResult result;
    {
        ActiveGuard active(traffic);
        RelayBuffers buffers;
        result = co_await relay(local, tls, buffers, &traffic.bytes);
    }
    if (live->revoked) result.reason = CloseReason::revoked;
    if (live->expired) {
        result.reason = CloseReason::expired;
        result.detail = "the peer's certificate expired while connected";
    }
    if (!live->switched.empty()) {
        result.reason = CloseReason::switched;
        result.detail = live->switched;
    }
    finish(result);
}

ConnInfo accepted_conn(Runtime& rt, tcp::socket& local) {
    ConnInfo info;
    info.id = rt.next_id++;
    error_code ec;
    auto client = local.remote_endpoint(ec);
    info.local = ec ? "" : address_of(client);
    auto at = local.local_endpoint(ec);
    info.listener = ec ? "" : address_of(at);
    return info;
}

OutboundListener::OutboundListener(Runtime& rt, asio::io_context& io) : rt_(rt), io_(io) {
    auto add = [&](const PeerConfig* peer, std::string service, const Endpoint& local,
                   const std::string& what, const Endpoint* backend) {
        links_.push_back(std::unique_ptr<Link>(
            new Link{peer, std::move(service), open_listener(io, local, what), {}, backend}));
    };
    if (const auto& in = rt.config.inbound) {
        if (in->local.port) add(nullptr, "", in->local, "inbound.local", &in->backend);
        for (const auto& s : in->services)
            if (s.local.port)
                add(nullptr, s.name, s.local, "inbound.services." + s.name + ".local", &s.backend);
    }
    for (const auto& peer : rt.config.peers) {
        if (peer.has_local()) add(&peer, "", peer.local, "peers[" + peer.name + "].local", nullptr);
        for (const auto& s : peer.services)
            add(&peer, s.name, s.local, "peers[" + peer.name + "].services." + s.name, nullptr);
    }
}

OutboundListener::~OutboundListener() = default;

void OutboundListener::start() {
    for (auto& link : links_) {
        Link* l = link.get();
        if (l->peer)
            spdlog::info("outbound: {} -> peer {} at {}{}{}",
                         address_of(l->acceptor.local_endpoint()), l->peer->name,
                         l->peer->connect.to_string(), l->service.empty() ? "" : ", service ",
                         l->service);
        else
            spdlog::info("local: {} -> this node's {} at {} (no TLS)",
                         address_of(l->acceptor.local_endpoint()),
                         l->service.empty() ? "postgres" : l->service, l->backend->to_string());
        spawn(io_,
              accept_loop(l->acceptor, rt_.pool,
                          [this, l](tcp::socket s) {
                              auto ex = s.get_executor();
                              auto info = accepted_conn(rt_, s);
                              info.service = l->service;
                              if (l->peer)
                                  spawn(ex,
                                        carry_to_peer(rt_, *l->peer, l->session, std::move(s),
                                                      std::move(info)),
                                        "an outbound connection");
                              else
                                  spawn(ex,
                                        carry_to_own_backend(rt_, std::move(s), std::move(info),
                                                             *l->backend),
                                        "a local connection");
                          }),
              "the outbound accept loop");
    }
}

void OutboundListener::stop() {
    for (auto& link : links_) {
        error_code ignored;
        link->acceptor.close(ignored);
    }
}

}  // namespace tunneld
