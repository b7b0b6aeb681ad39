// How a relayed connection ended, and its byte counts: plain data, logged by
// conn_log and counted by relay/stats without pulling in sockets or TLS.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>

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
    expired,              // the peer's certificate passed its notAfter while connected
    handshake_failed,     // see HandshakeFailure
    backend_unreachable,  // inbound: local postgres refused / timed out
    peer_unreachable,     // outbound: peer tunneld refused / timed out / not resolvable
    limit,                // limits.max_connections or max_handshakes_per_source reached
    protocol,             // unexpected ALPN protocol
    no_primary,           // routes[] to: primary: no single node reports primary (or split brain)
    no_replica,           // routes[] to: replica: no streaming replica within max_lag
    switched,             // routes[] to: primary: the primary changed; the route moved on
    no_quorum,            // routes[] to: primary: this node reaches no majority of the voters
};

// Inline (a pure header): health/ logs and counts these without linking relay/.
inline const char* to_string(CloseReason r) {
    switch (r) {
        case CloseReason::finished:
            return "finished";
        case CloseReason::local_error:
            return "local_error";
        case CloseReason::peer_error:
            return "peer_error";
        case CloseReason::peer_rejected:
            return "peer_rejected";
        case CloseReason::peer_truncated:
            return "peer_truncated";
        case CloseReason::peer_timeout:
            return "peer_timeout";
        case CloseReason::shutdown:
            return "shutdown";
        case CloseReason::revoked:
            return "revoked";
        case CloseReason::expired:
            return "expired";
        case CloseReason::handshake_failed:
            return "handshake_failed";
        case CloseReason::backend_unreachable:
            return "backend_unreachable";
        case CloseReason::peer_unreachable:
            return "peer_unreachable";
        case CloseReason::limit:
            return "limit";
        case CloseReason::protocol:
            return "protocol";
        case CloseReason::no_primary:
            return "no_primary";
        case CloseReason::no_replica:
            return "no_replica";
        case CloseReason::switched:
            return "switched";
        case CloseReason::no_quorum:
            return "no_quorum";
    }
    return "unknown";
}

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

}  // namespace tunneld
