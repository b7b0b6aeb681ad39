// Which node a route sends its next connection to: plain data in, a decision
// out, no sockets (unit-tested as a table). The inputs come from the peer
// probes' pongs and this node's backend monitor; route/routes.cpp acts on it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tunneld/config/config.hpp"
#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/route_view.hpp"

namespace tunneld {

// One node a route could send to: a peer, or this node itself (its own backend).
struct RouteCandidate {
    std::string name;                       // peer name, or this node's name when `self`
    bool self = false;                      // this node: the route dials inbound.backend
    bool known = true;                      // false until its first probe / backend check
    bool reachable = false;                 // probe up (peer) / backend monitor up (self)
    std::string unreachable_why;            // when !reachable
    std::optional<PostgresState> postgres;  // its postgres, as last reported
    std::size_t connections = 0;            // this route's live connections to it
    std::int64_t sampled_ms = 0;            // when `postgres` was sampled (steady_ms; 0 unknown)
    std::vector<LsnSample> positions;       // a primary's recent positions, oldest first
    std::optional<PatroniLeader> patroni;   // its Patroni's GET /leader (health.patroni)
};

// The recent positions of each node that reported primary (keep_position), for
// lag_behind.
class PrimaryPositions {
  public:
    static constexpr std::size_t kKeep = kPositionsKept;
    // Notes each primary candidate's current_lsn at its sample time (once per sample).
    void record(const std::vector<RouteCandidate>& candidates);
    // Fills each primary candidate's `positions`.
    void attach(std::vector<RouteCandidate>& candidates) const;

  private:
    std::vector<std::pair<std::string, std::vector<LsnSample>>> by_node_;
};

struct RouteChoice {
    std::optional<std::string> target;  // the node to dial; none = refuse
    bool target_is_self = false;
    bool split_brain = false;  // to: primary, and more than one reports primary
    std::string refusal;       // "no_primary" / "no_replica" / "no_quorum" when no target
    std::string detail;        // why, for the log line and /status
    // The route's live connections go too, not only new ones refused: no
    // quorum, or the one primary in sight was superseded by a newer timeline
    // (a session left open there would go on writing what a rewind discards).
    bool close_live = false;
    std::vector<CandidateView> candidates;
};

// `candidates`: every peer, in config order, then this node when it can serve
// (inbound.backend and health.postgres). Fixed-peer routes always pick their
// peer (like peers[].local). to: primary picks the one reachable node whose
// postgres is up and not in recovery; two or more is a split brain and nothing
// is picked, and so is nothing while a candidate has not answered a first time,
// while `quorum` (when given) is not met (no_quorum), or while the one primary's
// timeline is behind another reachable node's (promoted over). to: replica picks,
// among reachable nodes in recovery that stream with lag <= max_lag, the one with the fewest
// connections (first on a tie).
RouteChoice choose_route(const RouteConfig& route, const std::vector<RouteCandidate>& candidates,
                         const QuorumView* quorum = nullptr);

// Bytes `replay_lsn` of `pg` is behind the newest position known: the node's own
// receive_lsn and each primary candidate's position at `sampled_ms` (the last of its
// `positions` at or before then; its current_lsn when the sample time is unknown
// or older than every position held). nullopt if unknown.
std::optional<std::uint64_t> lag_behind(const PostgresState& pg, std::int64_t sampled_ms,
                                        const std::vector<RouteCandidate>& candidates);

}  // namespace tunneld
