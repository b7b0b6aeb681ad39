// The log lines of a relayed connection: one at open, one at close.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

#include "tunneld/relay.hpp"

namespace tunneld {

struct ConnInfo {
    std::uint64_t id = 0;
    const char* direction = "";  // "inbound" or "outbound"
    std::string peer;            // identity of the other tunneld (verified, or expected)
    std::string remote;          // address the connection came from / went to
    std::string local;           // the plaintext side (backend, or local client)
    std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

// "conn=7 inbound open peer=standby-1 remote=10.0.0.2:40112 local=127.0.0.1:5432 resumed=no"
void log_open(const ConnInfo& c, bool resumed);

// "conn=7 inbound close peer=... remote=... local=... rx=123 tx=456 duration=1.234s reason=finished"
// rx = bytes received from the TLS side, tx = bytes sent to it.
// Logged at info for clean closes, warn otherwise.
void log_close(const ConnInfo& c, const RelayResult& r);

// "conn=7 inbound handshake failed remote=... reason=unknown_ca detail=..."
void log_handshake_failure(const ConnInfo& c, const HandshakeResult& h);

}  // namespace tunneld
