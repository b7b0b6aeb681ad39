#include "tunneld/relay/inbound.hpp"

#include <spdlog/spdlog.h>

#include "tunneld/net/listener.hpp"
#include "tunneld/net/spawn.hpp"
#include "tunneld/relay/pipeline.hpp"

namespace tunneld {

namespace asio = boost::asio;
using asio::ip::tcp;

InboundListener::InboundListener(Context& ctx, const Config& cfg, asio::io_context& io,
                                 IoPool& pool)
    : ctx_(ctx), cfg_(cfg), io_(io), pool_(pool), policy_(make_alpn_policy(cfg)) {
    for (const auto& ep : cfg.inbound->listen)
        acceptors_.push_back(open_listener(io, ep, "inbound.listen"));
}

void InboundListener::start() {
    const auto& in = *cfg_.inbound;
    for (const auto& sc : in.services)
        spdlog::info("inbound: service {} (ALPN {}) -> backend {} (allow: {})", sc.name,
                     service_alpn(sc.name), sc.backend.to_string(), fmt::join(sc.allow, ", "));
    for (auto& acceptor : acceptors_) {
        auto at = acceptor.local_endpoint();
        spdlog::info("inbound: listening on {} -> backend {} (allow: {})",
                     Endpoint{at.address().to_string(), at.port(), {}}.to_string(),
                     in.backend.to_string(), fmt::join(in.allow, ", "));
        spawn(io_,
              accept_loop(
                  acceptor, pool_,
                  [this](tcp::socket s) {
                      ConnInfo info;
                      info.id = ctx_.next_id++;
                      info.direction = "inbound";
                      info.local = cfg_.inbound->backend.to_string();
                      error_code ec;
                      auto remote = s.remote_endpoint(ec);
                      if (ec) return;  // gone before we looked
                      info.remote =
                          Endpoint{remote.address().to_string(), remote.port(), {}}.to_string();
                      auto ex = s.get_executor();
                      Far far;
                      far.inbound = &*cfg_.inbound;
                      spawn(ex, carry(ctx_, Near{std::move(s), &policy_}, far, info),
                            "an inbound connection");
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
