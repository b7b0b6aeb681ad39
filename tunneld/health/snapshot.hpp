// Everything the health endpoint reports, copied at one moment into a plain
// value. The daemon builds it (health/server.hpp asks for one per request);
// the routes, /status and /metrics are pure functions of it.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/probe_state.hpp"
#include "tunneld/health/route_view.hpp"
#include "tunneld/relay/stats.hpp"

namespace tunneld {

struct TrafficView {
    Direction direction = Direction::inbound;
    std::string peer;
    std::string service = "postgresql";  // or an inbound.services name
    std::int64_t active = 0;
    std::uint64_t opened = 0, received = 0, sent = 0;  // received = from the peer (TLS side)
    std::int64_t last_handshake = 0;
    std::string last_error;
    std::int64_t last_error_at = 0;
};

struct PeerView {
    std::string name;
    std::string connect;  // as configured
    std::string local;
    ProbeState probe;
    std::vector<std::pair<std::string, std::string>> services;  // peers[].services: name, local
};

// One of this node's inbound.services.
struct ServiceView {
    std::string name;
    std::string alpn;
    std::string backend;
    std::vector<std::string> allow;
};

struct FirewallView {
    bool enabled = false;
    bool applied = false;  // in place as configured (false after a failed repair)
    std::string table;
    std::string error;  // why not applied / last repair failure
    std::uint64_t repairs = 0;
    std::uint64_t missing = 0;           // times the table was found deleted from outside
    std::uint64_t resolve_failures = 0;  // peer name lookups that failed (last addresses kept)
    struct Drops {
        std::uint64_t packets = 0, bytes = 0;
    };
    std::map<std::uint16_t, Drops> drops;  // per protected port, since the table was last made
};

struct Snapshot {
    std::string node;
    std::string version;
    std::int64_t now = 0;         // unix seconds
    std::int64_t started_at = 0;  // unix seconds
    std::int64_t pid = 0;         // the daemon's process id (in its own PID namespace)
    bool workers_alive = true;    // every I/O thread answered its last heartbeat in time
    bool stopping = false;        // SIGTERM received: draining
    bool listeners_up = false;

    // TLS
    std::string cert_serial;
    std::int64_t cert_not_after = 0;  // unix seconds
    Stats::Reloads reloads;
    std::uint64_t key_updates = 0;  // TLS 1.3 KeyUpdates sent (tls.rekey_bytes / rekey_interval)
    std::uint64_t internal_errors =
        0;  // exceptions that escaped a task (logged; the daemon went on)

    std::vector<std::string> inbound_listen;  // empty: no inbound side
    std::string inbound_backend;
    std::vector<ServiceView> services;  // inbound.services, by name
    std::vector<PeerView> peers;
    std::vector<TrafficView> traffic;
    // Handshakes and closes by direction and reason ("ok" for a successful handshake).
    std::map<std::pair<Direction, std::string>, std::uint64_t> handshakes;
    std::map<std::pair<Direction, std::string>, std::uint64_t> closes;
    // Successful handshakes by direction and key-exchange group.
    std::map<std::pair<Direction, std::string>, std::uint64_t> key_exchanges;

    FirewallView firewall;
    std::vector<RouteView> routes;  // routes[], in config order

    bool backend_checked_by_config = false;  // inbound.backend or health.postgres configured
    bool postgres_configured = false;        // health.postgres set
    BackendState backend;
    std::map<std::string, std::string> tags;  // health.tags
};

}  // namespace tunneld
