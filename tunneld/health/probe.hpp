// The peer probe: each outbound peer gets one long-lived TLS connection with
// ALPN "tunneld-probe" to its inbound listener, authenticated exactly like a
// data connection. Over it the client sends a ping line every
// health.probe_interval and the server answers with a pong line carrying its
// own backend state, so "peer unreachable" is told apart from "peer reachable,
// its postgres down". Lines are JSON objects ending in '\n', at most 16 KiB.
//
//   client -> {"ping":7}
//   server <- {"pong":7,"node":"primary-1","backend":{...BackendState...}}
#pragma once
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <optional>
#include <string>

#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/probe_state.hpp"
#include "tunneld/health/runtime.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld {

class PeerProbe {
  public:
    // Probes `peer` from one of rt's I/O threads once started.
    PeerProbe(Runtime& rt, const PeerConfig& peer);
    ~PeerProbe();

    void start();
    // Closes the probe connection and ends the loop (asynchronously; the
    // owner must keep this object until its io_context has stopped).
    void stop();

    const PeerConfig& peer() const { return peer_; }
    ProbeState state() const { return state_.get(); }
    // Called after every change of state() (on a probe thread). Before start().
    void on_change(std::function<void()> f) { state_.on_set(std::move(f)); }

  private:
    struct Loop;
    Runtime& rt_;
    const PeerConfig& peer_;
    boost::asio::io_context& io_;
    Latest<ProbeState> state_;
    std::shared_ptr<Loop> loop_;
};

// Server side, after an inbound handshake that agreed on ALPN "tunneld-probe":
// answers ping lines with pongs (this node's name and rt.backend) until the
// client closes, sends something that is not a ping, is silent for
// max(30s, 5 * probe_interval), or `stopping` closes the stream.
boost::asio::awaitable<void> serve_probe(Runtime& rt, TlsStream& tls, const ConnInfo& info);

}  // namespace tunneld
