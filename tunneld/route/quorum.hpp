// The majority rule (partition safety): a `to: primary` route picks a primary
// only while this node reaches a strict majority of the cluster's voters (the
// database nodes and the witnesses, config.hpp ClusterConfig), counting itself
// when it is one. On the minority side of a partition the old primary may be
// the only primary in sight while the majority promotes another: a write sent
// there would be acknowledged and then lost to the rewind. Plain data in, a
// verdict out (unit-tested as a table).
#pragma once
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tunneld/health/route_view.hpp"

namespace tunneld {

// `voters` in config order, each with its reachability now; `required` is
// false for cluster.quorum: none (met then, whatever is reachable).
QuorumView quorum_of(std::vector<VoterView> voters, bool required);

// inbound.services.X.local_quorum: a majority counts once it has held for
// `settle`, so that after a heal this node's member of a replicated store
// (etcd) has caught up from the majority before a local client reads it.
// Thread-safe; fed every view there is (probe changes, each connection).
class SettledMajority {
  public:
    using Clock = std::chrono::steady_clock;
    explicit SettledMajority(Clock::duration settle) : settle_(settle) {}
    // Why not to serve now, or nothing.
    std::optional<std::string> refusal(const QuorumView& q, Clock::time_point now);
    Clock::duration settle() const { return settle_; }

  private:
    std::mutex mutex_;
    std::optional<Clock::time_point> since_;  // the majority held from then on
    Clock::duration settle_;
};

}  // namespace tunneld
