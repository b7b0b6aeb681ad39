// What a route (routes[]) knows and decided: plain data, produced by
// relay/routes and shown by /status, /metrics and /health.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tunneld {

enum class RouteRole { primary, replica, unknown };

inline const char* to_string(RouteRole r) {
    switch (r) {
        case RouteRole::primary:
            return "primary";
        case RouteRole::replica:
            return "replica";
        case RouteRole::unknown:
            return "unknown";
    }
    return "unknown";
}

// One node a route could send to, as the route sees it.
struct CandidateView {
    std::string name;
    bool self = false;  // this node (its own backend)
    RouteRole role = RouteRole::unknown;
    bool reachable = false;
    bool eligible = false;               // qualifies (the pick is among these)
    std::optional<std::uint64_t> lag;    // replicas: bytes behind the newest primary position
    std::string why_not;                 // when !eligible: "in recovery (a standby)", "lag ..."
    std::size_t connections = 0;         // this route's live connections to it
    std::optional<bool> patroni_leader;  // its Patroni holds the leader lock (health.patroni there)
};

// One voter of the cluster (config.hpp ClusterConfig), as this node sees it now.
struct VoterView {
    std::string name;
    bool self = false;       // this node
    bool witness = false;    // a witness (no postgres), else a database node
    bool reachable = false;  // self: always; a peer: its probe is up; a witness: its pings arrive
    std::string why;         // when !reachable
};

// The majority rule's result (route/quorum.hpp) for to: primary routes.
struct QuorumView {
    bool required = true;  // cluster.quorum: majority (false: none)
    std::size_t voters = 0, reached = 0;
    bool met = true;  // reached * 2 > voters, or not required
    std::vector<VoterView> members;
    std::string detail;  // "reaching 1 of 3 voters (app); unreachable: ..."
};

struct RouteSwitch {
    std::int64_t at = 0;  // unix seconds
    std::string from;     // "" = none
    std::string to;       // "" = none (refusing)
    std::string cause;
};

struct RouteView {
    std::string name;    // its local address, "127.0.0.1:6432"
    std::string to;      // "primary", "replica" or a peer's name
    std::string leader;  // to: primary: "postgres" or "patroni" (routes[].leader)
    std::string target;  // where new connections go now; "" = refused
    bool split_brain = false;
    std::string refusal;  // "no_primary" / "no_replica" while refusing
    std::string detail;   // why
    std::vector<CandidateView> candidates;
    std::uint64_t connections = 0;  // live connections through the route
    std::uint64_t refused = 0;      // connections refused since start
    std::uint64_t switches = 0;     // target changes since start
    std::optional<RouteSwitch> last_switch;
    std::optional<QuorumView> quorum;  // to: primary routes
};

}  // namespace tunneld
