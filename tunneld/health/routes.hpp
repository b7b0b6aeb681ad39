// The health endpoint's routing and bodies, as pure functions of a Snapshot
// (no sockets; unit-tested directly). Paths, parameters and bodies follow
// Patroni 3's REST API so HAProxy / keepalived / Kubernetes checks and
// monitoring written for Patroni work (README.md has the table of differences).
// Every check path answers Patroni's document (patroni.hpp) with tunneld's
// verdict and reasons under "tunneld"; GET, HEAD and OPTIONS alike.
//
//   /liveness             200 if every event loop answers
//   /readiness[?lag=]     200 if listeners are up, the certificate is valid, the
//                         firewall is applied, every peer probe is up (and a
//                         standby is within ?lag=)
//   /health               readiness + the local backend accepts connections
//   /primary (/, /master, /leader, /read-write)
//                         200 if health.postgres is set and postgres is not in recovery
//   /standby-leader       always 503: tunneld has no standby clusters
//   /replica[?lag=16MB][&lag_seconds=N][&replication_state=streaming][&tag_K=V]  (/standby)
//                         200 if postgres is in recovery, its WAL receiver is
//                         streaming (or, asked for, not) and it is within the lag
//                         (bytes; kB/MB/GB/TB are 1024-based as in postgres)
//   /read-only[?lag=]     200 if /primary or /replica would be
//   /sync (/synchronous), /async (/asynchronous)[?lag=]
//                         /replica, and the primary's pg_stat_replication lists
//                         this standby's walsender as sync/quorum (or async/potential)
//   /read-only-sync       /primary or /sync
//   /patroni              always 200, Patroni's document
//   /status               always 200, JSON
//   /metrics              always 200, Prometheus text exposition format 0.0.4
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tunneld/config/duration.hpp"  // parse_size
#include "tunneld/health/snapshot.hpp"

namespace tunneld {

struct HealthResponse {
    unsigned status = 200;
    std::string content_type;
    std::string body;
};

// Answers GET, HEAD or OPTIONS (the caller drops the body for HEAD) of `target`
// ("/replica?lag=1MB"). Unknown paths give 404, a bad query value 400.
HealthResponse handle_request(const Snapshot& s, std::string_view target);

// Whether `target`'s path needs the firewall's counters and similar costly
// parts of the snapshot (/status and /metrics).
bool wants_full_snapshot(std::string_view target);

// How far this standby's replay is behind, in bytes: from the newest WAL
// position known (this node's received LSN, or a peer primary's position when
// this node's postgres was sampled: its last pong's when that time is unknown or
// older than every position kept) to its replayed LSN. nullopt when not a
// standby or unknown.
std::optional<std::uint64_t> replication_lag_bytes(const Snapshot& s);

// Why /readiness (and with `with_backend`, /health) fails; empty = healthy.
std::vector<std::string> readiness_problems(const Snapshot& s, bool with_backend);

std::string render_status(const Snapshot& s);   // JSON
std::string render_metrics(const Snapshot& s);  // Prometheus text
// One line for sd_notify STATUS= and `tunneld health`.
std::string one_line_summary(const Snapshot& s);

}  // namespace tunneld
