// The inbound port: mTLS listeners in front of the local postgres and the
// inbound.services backends. Each accepted socket becomes a TLS near end whose
// far end is the backend the peer asks for, and goes to carry() (pipeline.hpp),
// which refuses, authenticates, dials and relays.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <vector>

#include "tunneld/net/io_pool.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/tls/alpn.hpp"

namespace tunneld {

class InboundListener {
  public:
    // Binds every inbound.listen address on `io` (the acceptor thread); accepted
    // connections run on `pool`. Throws StartupError when one cannot be bound.
    InboundListener(Context& ctx, const Config& cfg, boost::asio::io_context& io, IoPool& pool);

    // Starts the accept loops. Each accepted connection: the handshake budget
    // (limits.max_handshakes, max_handshakes_per_source), keepalive options,
    // TLS handshake under timeouts.handshake (client certificate required,
    // identity allowed for the ALPN protocol asked for: inbound.allow, or the
    // service's allow), limits.max_connections, then the backend (inbound.backend
    // or the service's) under timeouts.connect, then the relay. Nothing reaches
    // the backend before the handshake and the verdict allow it.
    void start();
    // Stops accepting (closes the listening sockets); live connections go on.
    void stop();

  private:
    Context& ctx_;
    const Config& cfg_;
    boost::asio::io_context& io_;
    IoPool& pool_;
    AlpnPolicy policy_;  // which protocols (postgresql, probe, services) and who may use each
    std::vector<boost::asio::ip::tcp::acceptor> acceptors_;
};

}  // namespace tunneld
