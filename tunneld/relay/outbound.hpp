// The local plaintext listeners: peers[].local and peers[].services (each
// accepted connection carried to that peer over mutual TLS), and inbound.local
// and inbound.services.X.local (straight to this node's own backend, no TLS).
// Each accepted socket becomes a plaintext near end with a fixed far end and
// goes to carry() (pipeline.hpp).
#pragma once
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

#include "tunneld/net/io_pool.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/relay/pipeline.hpp"

namespace tunneld {

// The far end of a peer's data connection: the peer over mutual TLS (SNI and
// identity = its name, ALPN "postgresql" or the service's), sessions resumed
// from `session`.
Far peer_far(const PeerConfig& peer, const std::string& service, SessionSlot& session);
// The far end of a connection to this node's own backend: plaintext.
Far own_far(const Endpoint& backend);

class OutboundListener {
  public:
    // Binds every local listener on `io`; accepted connections run on `pool`.
    // Throws StartupError when one cannot be bound.
    OutboundListener(Context& ctx, const Config& cfg, boost::asio::io_context& io, IoPool& pool);
    ~OutboundListener();

    // Starts the accept loops. To a peer: TCP_NODELAY, dial under
    // timeouts.connect, keepalive options, the TLS handshake under
    // timeouts.handshake, then the relay. If the peer cannot be reached the
    // local connection is closed at once, so postgres retries; while the probe
    // finds the peer silent it is reset without dialling (silent_peers.hpp).
    void start();
    // Stops accepting; live connections go on.
    void stop();

  private:
    struct Link;
    Context& ctx_;
    boost::asio::io_context& io_;
    IoPool& pool_;
    std::vector<std::unique_ptr<Link>> links_;
};

}  // namespace tunneld
