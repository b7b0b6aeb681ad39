// Copies the running node's state into a health Snapshot (health/snapshot.hpp)
// for one request or one STATUS= line. Safe from any thread: everything read
// is atomic or locked.
#pragma once
#include <functional>
#include <vector>

#include "firewall/keeper.hpp"
#include "tunneld/health/probe.hpp"
#include "tunneld/health/snapshot.hpp"
#include "tunneld/relay/context.hpp"
#include "tunneld/route/route_choice.hpp"

namespace tunneld {

struct SnapshotSources {
    const Config& config;
    Context& ctx;
    const Latest<BackendState>& backend;  // this node's database, as BackendMonitor saw it last
    const std::vector<std::unique_ptr<PeerProbe>>& probes;
    const firewall::Keeper& keeper;
    std::function<std::vector<RouteView>()> routes;  // empty without routes[]
    std::int64_t started_at = 0;
};

struct NodeFlags {
    bool workers_alive = true;
    bool stopping = false;
    bool listeners_up = false;
};

// `full`: also what costs a syscall (the firewall's drop counters): /status
// and /metrics only.
Snapshot build_snapshot(const SnapshotSources& src, const NodeFlags& flags, bool full);

// "node primary-1, inbound on ..., 1 peer(s), cert serial ... (89 days left)": the ready line.
std::string node_summary(const Config& cfg, const TlsMaterial& m);

// What routes[] choose from: every peer (reachable = its probe is answered;
// its postgres from the last pong), then this node when it has inbound.backend
// and health.postgres (from the backend monitor).
std::vector<RouteCandidate> route_candidates(const Config& cfg, const Latest<BackendState>& backend,
                                             const std::vector<std::unique_ptr<PeerProbe>>& probes);

// The cluster's voters (Config::voters) as this node reaches them now: itself
// always; a database peer while its probe is up; a witness while its probe
// pings arrive (within 3 probe intervals, Context::heard) or, when it is a peer
// too, while this node's probe of it is up.
std::vector<VoterView> cluster_voters(const Config& cfg, const Context& ctx,
                                      const std::vector<std::unique_ptr<PeerProbe>>& probes);

}  // namespace tunneld
