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

#include "tunneld/tls_stream.hpp"

namespace tunneld {

// Why a relayed connection ended; logged and counted.
enum class CloseReason {
    finished,             // both directions ended with a clean close
    local_error,          // the plaintext side (postgres or its client) failed / reset
    peer_error,           // the TLS side failed (reset, TLS error)
    peer_rejected,        // the peer sent a TLS alert: it refused our certificate or identity
    peer_truncated,       // the TLS side closed TCP without close_notify
    peer_timeout,         // keepalive / TCP_USER_TIMEOUT declared the path dead
    shutdown,             // tunneld stopped and the drain time ran out
    revoked,              // the peer's certificate appeared on a newly loaded CRL
    handshake_failed,     // see HandshakeFailure
    backend_unreachable,  // inbound: local postgres refused / timed out
    peer_unreachable,     // outbound: peer tunneld refused / timed out / not resolvable
    limit,                // limits.max_connections or max_handshakes_per_source reached
    protocol,             // unexpected ALPN protocol
};
const char* to_string(CloseReason r);

struct RelayResult {
    std::uint64_t from_tls = 0;  // bytes read from the TLS side, written to local
    std::uint64_t to_tls = 0;    // bytes read from local, written to the TLS side
    CloseReason reason = CloseReason::finished;
    std::string detail;  // error text of the first failure, if any
};

// Live byte counts of relays, shared with the metrics (relaxed atomics).
struct ByteCounters {
    std::atomic<std::uint64_t> from_tls{0};
    std::atomic<std::uint64_t> to_tls{0};
};

// Relays until both directions have ended. EOF in one direction is passed on
// as a half-close (TCP shutdown(SHUT_WR) locally, close_notify + SHUT_WR on
// the TLS side) and the other direction keeps flowing. An error in either
// direction closes both sockets at once, so the other loop ends immediately,
// except a reset or broken pipe from an end that follows the other side's
// half-close: that is how PostgreSQL sessions end (Terminate, then the server
// exits with a keepalive unread), so it is `finished` and the TLS side still
// gets its close_notify.
// `buf_out` and `buf_in` are the two reused buffers (one per direction).
// Every chunk relayed is also added to `counters` (when not null) as it goes.
// Both streams are closed when this returns. Never throws for I/O errors.
template <class Plain>
asio::awaitable<RelayResult> relay(Plain& local, TlsStream& tls, std::span<char> buf_out,
                                   std::span<char> buf_in, ByteCounters* counters = nullptr);

extern template asio::awaitable<RelayResult> relay(asio::ip::tcp::socket&, TlsStream&,
                                                   std::span<char>, std::span<char>, ByteCounters*);
extern template asio::awaitable<RelayResult> relay(asio::local::stream_protocol::socket&,
                                                   TlsStream&, std::span<char>, std::span<char>,
                                                   ByteCounters*);

}  // namespace tunneld
