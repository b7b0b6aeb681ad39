// One connection, accepted to closed: the only lifecycle tunneld has. A
// connection is data: a near end (the accepted socket, plaintext or the TLS
// server side of the inbound port) and a far end (what to dial: TCP or unix,
// plaintext or the TLS client side to a peer). The listeners only build these
// and hand them to carry():
//
//   inbound port      TLS near  -> plaintext far (inbound.backend or a service's)
//   peers[].local     plaintext -> TLS far (the peer)          routes[] likewise
//   inbound.local     plaintext -> plaintext far (this node's backend), and a
//                     route whose target is this node
//   the peer probe    TLS far only (open_far, then its own ping loop)
//
// carry() runs admit, the near handshake and its verdict (tls/authorize.hpp),
// dial and the far handshake (open_far), the relay (relay/engine.hpp) and one
// finish that logs and counts the close.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "tunneld/config/config.hpp"
#include "tunneld/net/conn_log.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/tls/authorize.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld {

// The accepted end.
struct Near {
    boost::asio::ip::tcp::socket socket;
    // The TLS server side of the inbound port: which protocols are served and
    // who may use each. Null: plaintext (a local listener, loopback).
    const AlpnPolicy* protocols = nullptr;
};

// What to dial for it.
struct Far {
    Endpoint target;  // TCP or unix; for `inbound`, resolved from the verdict
    std::optional<boost::asio::ip::address> source;  // bind to this first
    // The TLS client side: the peer's identity (which the server must present,
    // and SNI), the protocol asked for and where its sessions are kept.
    // `peer` empty: plaintext.
    std::string peer;
    std::string alpn;
    SessionSlot* session = nullptr;
    // Inbound: the target is inbound.backend or the backend of the service
    // the peer asked for, and the source address is inbound.source's for it.
    const InboundConfig* inbound = nullptr;
    // inbound.services.X.local_quorum: dialled only while Context::minority
    // says nothing.
    bool needs_quorum = false;

    bool tls() const { return !peer.empty(); }
};

// carry()'s caller fills in info.id, info.direction, the near end's addresses
// (info.remote for the inbound port; info.local and info.listener for a local
// listener), info.route and info.service (a peer's service asked for).
boost::asio::awaitable<void> carry(Context& ctx, Near near, Far far, ConnInfo info);

// A new id, the client's address and the listener's for an accepted local connection.
ConnInfo accepted_local(Context& ctx, boost::asio::ip::tcp::socket& s);

// An open far end.
using FarStream =
    std::variant<boost::asio::ip::tcp::socket, boost::asio::local::stream_protocol::socket,
                 std::unique_ptr<TlsStream>>;

struct FarOpen {
    std::optional<FarStream> stream;             // when ok()
    CloseReason reason = CloseReason::finished;  // else peer_unreachable,
                                                 // backend_unreachable or handshake_failed
    HandshakeResult handshake;                   // handshake_failed: why
    std::string detail;                          // unreachable: why
    bool timed_out = false;  // no answer before a deadline (a silent peer), not a refusal
    bool ok() const { return reason == CloseReason::finished; }
};

// Dials `far` within `dial_within` (default timeouts.connect) and, for a TLS
// far end, shakes hands as its client within timeouts.handshake, counting the
// handshake and its key exchange (outbound). Sets info.remote to the address
// reached. `closer` is set to what closes the end being opened (so a stop or
// SIGTERM need not wait for a deadline), and cleared on return.
boost::asio::awaitable<FarOpen> open_far(Context& ctx, const Far& far, ConnInfo& info,
                                         std::function<void()>& closer,
                                         std::optional<Duration> dial_within = {});

}  // namespace tunneld
