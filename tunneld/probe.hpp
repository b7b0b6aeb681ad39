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

#include "tunneld/backend_state.hpp"
#include "tunneld/conn_log.hpp"
#include "tunneld/runtime.hpp"

namespace tunneld {

struct ProbeState {
    bool probed = false;     // a first attempt has finished (up, or failed)
    bool up = false;         // the last ping was answered in time
    std::int64_t since = 0;  // unix seconds when `up` last changed (or of the first result)
    std::string last_error;  // why the probe is (or last was) down; "" if never
    std::string address;     // the address the probe connection reached
    std::int64_t last_handshake = 0;  // unix seconds of the probe's last TLS handshake
    double rtt_last_ms = 0, rtt_min_ms = 0, rtt_smoothed_ms = 0;  // smoothed: RFC 6298 SRTT
    std::uint64_t pings = 0, pongs = 0, failures = 0;  // failures: attempts that ended in "down"
    std::optional<BackendState> peer_backend;          // from the last pong
};

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
