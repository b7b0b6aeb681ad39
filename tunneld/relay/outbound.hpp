// The outbound side: one local plaintext listener per configured peer; each
// accepted local connection is carried to that peer over mutual TLS.
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

#include "tunneld/health/runtime.hpp"

namespace tunneld {

class OutboundListener {
  public:
    // Binds peers[].local for every peer on `io`. Throws StartupError when one
    // cannot be bound.
    OutboundListener(Runtime& rt, boost::asio::io_context& io);
    ~OutboundListener();

    // Starts the accept loops. Each accepted local connection: TCP_NODELAY, dial
    // the peer (resolving its name) under timeouts.connect, keepalive options,
    // TLS handshake with SNI = peer name and ALPN "postgresql" under
    // timeouts.handshake (server identity must be the peer name; sessions are
    // resumed when possible), then the relay. If the peer cannot be reached the
    // local connection is closed at once, so postgres retries.
    void start();
    // Stops accepting; live connections go on.
    void stop();

  private:
    struct Link;
    Runtime& rt_;
    boost::asio::io_context& io_;
    std::vector<std::unique_ptr<Link>> links_;
};

}  // namespace tunneld
