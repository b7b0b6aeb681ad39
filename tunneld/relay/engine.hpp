// The relay: bytes both ways between two ends (relay/ends.hpp), as two
// directional loops started and ended together. One engine for every pair
// tunneld makes: a local client or backend with a TLS peer, and a local client
// with this node's own backend.
#pragma once
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>

#include "tunneld/base/outcome.hpp"
#include "tunneld/relay/buffers.hpp"
#include "tunneld/relay/ends.hpp"

namespace tunneld {

// Relays until both directions have ended. `local` is the plaintext end on
// this host; `remote` is the tunnel's end (the TLS peer, or for a self route
// the backend): RelayResult's from_tls / to_tls and `counters` count bytes
// from and to it, as they go.
//
// EOF from one end is passed to the other as a half-close and the other
// direction keeps flowing. An error closes both ends at once; its reason is
// the failing end's (ends.hpp). Two endings are clean although the kernel
// reports a reset, because that is how PostgreSQL sessions end (Terminate, then
// the server exits with bytes unread):
//   - a write finds the other end gone after that end had half-closed;
//   - an end whose reset is a goodbye (plaintext) is gone: its half-close is
//     passed on, and the other end has up to 500 ms to finish too (EOF, or go
//     the same way); what it still sends is dropped. Otherwise it fails.
// Both ends are closed when this returns. Never throws for I/O errors.
template <class Local, class Remote>
boost::asio::awaitable<RelayResult> relay(Local local, Remote remote, RelayBuffers& buffers,
                                          ByteCounters* counters = nullptr);

using TcpEnd = PlainEnd<boost::asio::ip::tcp::socket>;
using UnixEnd = PlainEnd<boost::asio::local::stream_protocol::socket>;
extern template boost::asio::awaitable<RelayResult> relay(TcpEnd, TlsEnd, RelayBuffers&,
                                                          ByteCounters*);
extern template boost::asio::awaitable<RelayResult> relay(UnixEnd, TlsEnd, RelayBuffers&,
                                                          ByteCounters*);
extern template boost::asio::awaitable<RelayResult> relay(TcpEnd, TcpEnd, RelayBuffers&,
                                                          ByteCounters*);
extern template boost::asio::awaitable<RelayResult> relay(TcpEnd, UnixEnd, RelayBuffers&,
                                                          ByteCounters*);

}  // namespace tunneld
