// The config loader's cluster: section: who votes before a route picks a primary.
#include <algorithm>

#include "tunneld/config/sections.hpp"

namespace tunneld {

using namespace yaml_config;

namespace {

std::string join(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
}

}  // namespace

// cluster: quorum (majority | none), witnesses [identities].
void read_cluster(MapReader& top, const std::string& path, Config& cfg) {
    const YAML::Node* section = top.find("cluster");
    if (section) {
        MapReader r(*section, "cluster", path);
        if (auto* q = r.find("quorum")) {
            auto v = scalar(r, *q, "quorum");
            if (v != "majority" && v != "none")
                r.fail(*q, "'cluster.quorum' must be majority or none");
            cfg.cluster.quorum =
                v == "none" ? ClusterConfig::Quorum::none : ClusterConfig::Quorum::majority;
            cfg.cluster.quorum_given = true;
        }
        if (auto* w = r.find("witnesses")) {
            auto& list = cfg.cluster.witnesses;
            list = identity_list(r, *w, "witnesses");
            for (std::size_t i = 0; i < list.size(); ++i)
                if (std::find(list.begin(), list.begin() + static_cast<long>(i), list[i]) !=
                    list.begin() + static_cast<long>(i))
                    r.fail(*w, "'cluster.witnesses': " + list[i] + " is listed twice");
            if (cfg.cluster.is_witness(cfg.node) && cfg.node_is_database())
                r.fail(*w, "'cluster.witnesses': " + cfg.node +
                               " is this node, which has inbound.backend and health.postgres: a "
                               "database node votes already; a witness is a tunneld without "
                               "postgres");
        }
        r.finish();
    }

    // A route to: primary over two voters and no witness could never follow a
    // failover: the majority of two is both.
    bool primary_route = std::any_of(cfg.routes.begin(), cfg.routes.end(), [](const auto& rc) {
        return rc.to == RouteConfig::To::primary;
    });
    if (cfg.inbound)
        for (const auto& sc : cfg.inbound->services)
            if (sc.local_quorum && cfg.voters().size() < 3)
                top.fail(*top.find("inbound"),
                         "inbound.services." + sc.name +
                             ".local_quorum: majority needs three voters or a witness (the "
                             "cluster has " +
                             join(cfg.voters()) + ")");
    auto voters = cfg.voters();
    if (primary_route && voters.size() == 2 && cfg.cluster.witnesses.empty() &&
        cfg.cluster.quorum == ClusterConfig::Quorum::majority) {
        auto msg =
            "a route to: primary needs a majority of the cluster's voters (" + join(voters) +
            "), and with two voters that is both: once one is gone no failover could be "
            "followed. Add a witness (cluster.witnesses: a third tunneld without postgres, such "
            "as an application host) or write 'cluster: {quorum: none}' to follow whichever "
            "node reports primary without a vote";
        if (section) top.fail(*section, "cluster: " + msg);
        top.fail(*top.find("routes"), "routes: " + msg);
    }
}

}  // namespace tunneld
