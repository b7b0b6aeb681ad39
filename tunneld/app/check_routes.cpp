#include "tunneld/app/check_routes.hpp"

#include <algorithm>
#include <string>

namespace tunneld {

// routes[]: addresses are unique and fixed targets name a peer (the loader
// refuses otherwise); here: whether this node itself can be a target, which
// needs its backend and health.postgres, and who votes for to: primary.
std::vector<CheckLine> check_routes(const Config& cfg) {
    std::vector<CheckLine> out;
    for (const auto& r : cfg.routes) {
        std::string from;
        for (const auto& p : cfg.peers) from += (from.empty() ? "" : ", ") + p.name;
        if (cfg.node_is_database()) from += ", this node";
        if (r.to == RouteConfig::To::peer)
            out.push_back({CheckLine::ok, "route " + r.name() + " -> peer " + r.peer + " (fixed)"});
        else
            out.push_back(
                {CheckLine::ok,
                 "route " + r.name() + " -> the " + r.target_text() + " among " + from +
                     (r.max_lag ? " (max_lag " + std::to_string(*r.max_lag) + " bytes)" : "") +
                     "; every candidate needs health.postgres to report its role"});
        if (r.to != RouteConfig::To::peer && cfg.inbound && cfg.health.postgres.empty())
            out.push_back({CheckLine::warn,
                           "route " + r.name() +
                               ": this node has inbound.backend but no health.postgres, so its "
                               "own postgres is never a candidate; set health.postgres (its peers "
                               "need it too for this node to be their route's target)"});
    }
    bool primary = std::any_of(cfg.routes.begin(), cfg.routes.end(), [](const RouteConfig& r) {
        return r.to == RouteConfig::To::primary;
    });
    if (!primary) return out;
    auto voters = cfg.voters();
    std::string names;
    for (const auto& v : voters)
        names += (names.empty() ? "" : ", ") + v + (cfg.cluster.is_witness(v) ? " (witness)" : "");
    if (cfg.cluster.quorum == ClusterConfig::Quorum::none)
        out.push_back({CheckLine::warn,
                       "cluster.quorum: none: routes to: primary follow whichever node reports "
                       "primary with no vote, so on the minority side of a partition they go on "
                       "writing to an old primary that the majority has replaced (those writes "
                       "are lost to its rewind). Add a witness (cluster.witnesses) instead where "
                       "you can"});
    else
        out.push_back({CheckLine::ok,
                       "quorum: routes to: primary pick a primary only while this node reaches " +
                           std::to_string(voters.size() / 2 + 1) + " of the " +
                           std::to_string(voters.size()) + " voters (" + names + ")"});
    return out;
}

}  // namespace tunneld
