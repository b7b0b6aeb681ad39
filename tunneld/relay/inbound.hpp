// The inbound side: mTLS listeners in front of the local postgres.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <vector>

#include "tunneld/health/runtime.hpp"
#include "tunneld/tls/alpn.hpp"

namespace tunneld {

class InboundListener {
  public:
    // Binds every inbound.listen address on `io` (the acceptor thread).
    // Throws StartupError when one cannot be bound.
    InboundListener(Runtime& rt, boost::asio::io_context& io);

    // Starts the accept loops. Each accepted connection: limits (beyond
    // max_connections it is closed; beyond max_handshakes_per_source it waits
    // for a slot up to timeouts.handshake), keepalive
    // options, TLS handshake under timeouts.handshake (client certificate
    // required, identity allowed for the ALPN protocol asked for: inbound.allow,
    // or the service's allow), then a connection to the backend (inbound.backend,
    // or the service's)
    // under timeouts.connect, then the relay. Every step's failure is logged
    // with its reason and closes the connection; nothing reaches the backend
    // before the handshake and identity check succeed.
    void start();
    // Stops accepting (closes the listening sockets); live connections go on.
    void stop();

  private:
    Runtime& rt_;
    boost::asio::io_context& io_;
    AlpnPolicy policy_;  // which protocols (postgresql, probe, services) and who may use each
    std::vector<boost::asio::ip::tcp::acceptor> acceptors_;
};

}  // namespace tunneld
