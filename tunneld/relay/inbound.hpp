// The inbound side: mTLS listeners in front of the local postgres.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <vector>

#include "tunneld/health/runtime.hpp"

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
    // required, identity in inbound.allow), then a connection to the backend
    // under timeouts.connect, then the relay. Every step's failure is logged
    // with its reason and closes the connection; nothing reaches the backend
    // before the handshake and identity check succeed.
    void start();
    // Stops accepting (closes the listening sockets); live connections go on.
    void stop();

  private:
    Runtime& rt_;
    boost::asio::io_context& io_;
    std::vector<boost::asio::ip::tcp::acceptor> acceptors_;
};

}  // namespace tunneld
