// Small facts derived from a Snapshot that the routes, the /status JSON and the
// metrics all use (the three are in routes.cpp, status_json.cpp, metrics.cpp).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "tunneld/health/snapshot.hpp"

namespace tunneld::facts {

// The local postgres' state when it answered the status query, else nullptr.
const PostgresState* local_postgres(const Snapshot& s);
// "postgres: connection refused", or the check's own problem as it stands
// ("health.postgres: role tunneld does not exist: ...").
std::string postgres_problem(const Snapshot& s);
// "primary", "replica", "down" or "unknown".
std::string role_of(const Snapshot& s);
// How far a walsender's `lsn` (sent, write, flush or replay) is behind this
// node's own WAL position (current on a primary, received on a cascading
// standby), in bytes; nullopt when either is unknown.
std::optional<std::uint64_t> walsender_lag_bytes(const PostgresState& pg, const std::string& lsn);
// "probing", "up" or "unreachable".
std::string peer_state(const ProbeState& p);
// "up", "down" or "unknown" for a backend as a pong reported it.
std::string backend_word(const std::optional<BackendState>& b);
// "reachable, its backend down: ..." and the like.
std::string peer_summary(const PeerView& p, std::int64_t now);

}  // namespace tunneld::facts
