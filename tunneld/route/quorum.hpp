// The majority rule (partition safety): a `to: primary` route picks a primary
// only while this node reaches a strict majority of the cluster's voters (the
// database nodes and the witnesses, config.hpp ClusterConfig), counting itself
// when it is one. On the minority side of a partition the old primary may be
// the only primary in sight while the majority promotes another: a write sent
// there would be acknowledged and then lost to the rewind. Plain data in, a
// verdict out (unit-tested as a table).
#pragma once
#include <vector>

#include "tunneld/health/route_view.hpp"

namespace tunneld {

// `voters` in config order, each with its reachability now; `required` is
// false for cluster.quorum: none (met then, whatever is reachable).
QuorumView quorum_of(std::vector<VoterView> voters, bool required);

}  // namespace tunneld
