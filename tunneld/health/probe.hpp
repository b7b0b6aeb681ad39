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
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/probe_state.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld {

class PeerProbe {
  public:
    // Probes `peer` every `interval` from `io` (an I/O thread) once started; the
    // connection is a far end of the pipeline (relay/pipeline.hpp open_far).
    PeerProbe(Context& ctx, const PeerConfig& peer, Duration interval, boost::asio::io_context& io);
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
    Context& ctx_;
    const PeerConfig& peer_;
    Duration interval_;
    boost::asio::io_context& io_;
    Latest<ProbeState> state_;
    std::shared_ptr<Loop> loop_;
};

// Server side, after an inbound handshake that agreed on ALPN "tunneld-probe"
// (Context::serve_probe): answers ping lines with pongs (`node` and the latest
// `backend`) until the client closes, sends something that is not a ping, is
// silent for max(30s, 5 * probe_interval), or the stream is closed.
// `on_ping` runs for every ping answered (Context::heard; a silent peer's ping
// clears its silence).
boost::asio::awaitable<void> serve_probe(const std::string& node,
                                         const Latest<BackendState>& backend,
                                         Duration probe_interval, TlsStream& tls,
                                         const ConnInfo& info, std::function<void()> on_ping = {});

}  // namespace tunneld
