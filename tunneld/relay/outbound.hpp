// The outbound side: one local plaintext listener per configured peer; each
// accepted local connection is carried to that peer over mutual TLS.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <memory>
#include <vector>

#include "tunneld/health/runtime.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/tls/context.hpp"

namespace tunneld {

// Carries one accepted local connection to `peer` over mutual TLS: dial under
// timeouts.connect, keepalive options, TLS handshake (SNI = peer name, ALPN
// "postgresql", the server must be the peer; sessions resumed from `session`),
// then the relay; logs and counts its close. `info` comes from accepted_conn;
// info.route names the routes[] entry it came through ("" for peers[].local).
boost::asio::awaitable<void> carry_to_peer(Runtime& rt, const PeerConfig& peer,
                                           SessionSlot& session, boost::asio::ip::tcp::socket local,
                                           ConnInfo info);

// A new id and the client's address for an accepted local connection.
ConnInfo accepted_conn(Runtime& rt, boost::asio::ip::tcp::socket& local);

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
    // local connection is closed at once, so postgres retries; while the probe
    // finds the peer silent it is reset without dialling (silent_peers.hpp).
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
