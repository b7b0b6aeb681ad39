// What the peer probe (probe.hpp) knows about one peer: plain data, read by the
// health endpoint's snapshot.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tunneld/health/backend_state.hpp"

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
    // The peer's current_lsn from its recent pongs while it reports primary
    // (keep_position; emptied when it reports anything else), for /replica?lag=.
    std::vector<LsnSample> primary_positions;
    // The peer's postgres' walsender for this node's tunnel, from its last pong
    // (when the peer is the primary this node's standby streams from): its
    // state and sync_state, for /sync and /async.
    std::optional<WalSender> my_walsender;
};

}  // namespace tunneld
