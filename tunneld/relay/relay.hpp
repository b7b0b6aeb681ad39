// The relay: bytes between a plaintext local socket and a TLS stream, as two
// directional loops (local -> tls, tls -> local) started and ended together.
#pragma once
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstdint>
#include <span>
#include <string>

#include "tunneld/relay/buffers.hpp"
#include "tunneld/relay/outcome.hpp"
#include "tunneld/tls/stream.hpp"

namespace tunneld {

// Relays until both directions have ended. EOF in one direction is passed on
// as a half-close (TCP shutdown(SHUT_WR) locally, close_notify + SHUT_WR on
// the TLS side) and the other direction keeps flowing. An error in either
// direction closes both sockets at once, so the other loop ends immediately,
// except a reset or broken pipe from an end that follows the other side's
// half-close: that is how PostgreSQL sessions end (Terminate, then the server
// exits with a keepalive unread), so it is `finished` and the TLS side still
// gets its close_notify.
// `buffers` are the two directions' buffers (small while idle, see buffers.hpp).
// Every chunk relayed is also added to `counters` (when not null) as it goes.
// Both streams are closed when this returns. Never throws for I/O errors.
template <class Plain>
asio::awaitable<RelayResult> relay(Plain& local, TlsStream& tls, RelayBuffers& buffers,
                                   ByteCounters* counters = nullptr);

extern template asio::awaitable<RelayResult> relay(asio::ip::tcp::socket&, TlsStream&,
                                                   RelayBuffers&, ByteCounters*);
extern template asio::awaitable<RelayResult> relay(asio::local::stream_protocol::socket&,
                                                   TlsStream&, RelayBuffers&, ByteCounters*);

}  // namespace tunneld
