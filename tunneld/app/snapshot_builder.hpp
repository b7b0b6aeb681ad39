// Copies the running node's state into a health Snapshot (health/snapshot.hpp)
// for one request or one STATUS= line. Safe from any thread: everything read
// is atomic or locked.
#pragma once
#include <vector>

#include "firewall/keeper.hpp"
#include "tunneld/health/probe.hpp"
#include "tunneld/health/runtime.hpp"
#include "tunneld/health/snapshot.hpp"

namespace tunneld {

struct SnapshotSources {
    const Config& config;
    Runtime& rt;
    const std::vector<std::unique_ptr<PeerProbe>>& probes;
    const firewall::Keeper& keeper;
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

}  // namespace tunneld
