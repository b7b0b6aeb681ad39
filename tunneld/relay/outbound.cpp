#include "tunneld/relay/outbound.hpp"

#include <spdlog/spdlog.h>

#include "tunneld/net/listener.hpp"
#include "tunneld/net/spawn.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;

// One local listener and its far end (with its TLS session for resumption).
struct OutboundListener::Link {
    tcp::acceptor acceptor;
    std::string service;  // "" = postgresql
    SessionSlot session;
    Far far;
};

Far peer_far(const PeerConfig& peer, const std::string& service, SessionSlot& session) {
    Far far;
    far.target = peer.connect;
    far.peer = peer.name;
    far.alpn = service.empty() ? std::string(kAlpnData) : service_alpn(service);
    far.session = &session;
    return far;
}

Far own_far(const Endpoint& backend) {
    Far far;
    far.target = backend;
    return far;
}

OutboundListener::OutboundListener(Context& ctx, const Config& cfg, asio::io_context& io,
                                   IoPool& pool)
    : ctx_(ctx), io_(io), pool_(pool) {
    auto add = [&](const Endpoint& local, const std::string& what, std::string service) {
        links_.push_back(std::unique_ptr<Link>(
            new Link{open_listener(io, local, what), std::move(service), {}, {}}));
        return links_.back().get();
    };
    if (const auto& in = cfg.inbound) {
        if (in->local.port) add(in->local, "inbound.local", "")->far = own_far(in->backend);
        for (const auto& s : in->services)
            if (s.local.port) {
                auto* l = add(s.local, "inbound.services." + s.name + ".local", s.name);
                l->far = own_far(s.backend);
                l->far.needs_quorum = s.local_quorum;
            }
    }
    for (const auto& peer : cfg.peers) {
        if (peer.has_local()) {
            auto* l = add(peer.local, "peers[" + peer.name + "].local", "");
            l->far = peer_far(peer, "", l->session);
        }
        for (const auto& s : peer.services) {
            auto* l = add(s.local, "peers[" + peer.name + "].services." + s.name, s.name);
            l->far = peer_far(peer, s.name, l->session);
        }
    }
}

OutboundListener::~OutboundListener() = default;

void OutboundListener::start() {
    for (auto& link : links_) {
        Link* l = link.get();
        auto at = l->acceptor.local_endpoint();
        auto here = Endpoint{at.address().to_string(), at.port(), {}}.to_string();
        if (l->far.tls())
            spdlog::info("outbound: {} -> peer {} at {}{}{}", here, l->far.peer,
                         l->far.target.to_string(), l->service.empty() ? "" : ", service ",
                         l->service);
        else
            spdlog::info("local: {} -> this node's {} at {} (no TLS)", here,
                         l->service.empty() ? "postgres" : l->service, l->far.target.to_string());
        spawn(io_,
              accept_loop(l->acceptor, pool_,
                          [this, l](tcp::socket s) {
                              auto ex = s.get_executor();
                              auto info = accepted_local(ctx_, s);
                              if (info.local.empty()) return;  // gone before we looked
                              info.service = l->service;
                              spawn(ex, carry(ctx_, Near{std::move(s)}, l->far, std::move(info)),
                                    "a local connection");
                          }),
              "a local listener's accept loop");
    }
}

void OutboundListener::stop() {
    for (auto& link : links_) {
        error_code ignored;
        link->acceptor.close(ignored);
    }
}

}  // namespace tunneld
