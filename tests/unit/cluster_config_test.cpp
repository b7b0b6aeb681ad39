// The cluster: section (who votes), routes[].leader and health.patroni, and
// what `tunneld check` says about them.
#include <gtest/gtest.h>

#include "config_error.hpp"
#include "tunneld/app/check_routes.hpp"
#include "tunneld/config/config.hpp"

namespace tunneld {
namespace {

const char* kApp = R"(node: app
tls: {ca: /c, cert: /n.crt, key: /n.key}
peers:
  - {name: db-1, connect: "db1.example.net:8765"}
  - {name: db-2, connect: "db2.example.net:8765"}
routes:
  - {local: "127.0.0.1:6432", to: primary}
)";

TEST(PatroniLeaderRoute, ConfigKeys) {
    auto c = parse_config(std::string(kApp) +
                              "  - {local: \"127.0.0.1:6433\", to: primary, leader: patroni}\n"
                              "cluster: {witnesses: [app]}\n",
                          "/t.yaml");
    EXPECT_EQ(c.routes[0].leader, RouteConfig::Leader::postgres);
    EXPECT_EQ(c.routes[1].leader, RouteConfig::Leader::patroni);
    struct Case {
        const char* yaml;
        const char* expect;
    } cases[] = {
        {"  - {local: \"127.0.0.1:6433\", to: replica, leader: patroni}\n",
         "'routes[].leader' applies to 'to: primary' only"},
        {"  - {local: \"127.0.0.1:6433\", to: primary, leader: etcd}\n",
         "'routes[].leader' must be postgres or patroni"},
        {"health: {patroni: \"10.0.0.1:8008\"}\n",
         "'health.patroni' 10.0.0.1:8008 is not a loopback"},
        {"health: {patroni: \"unix:/tmp/x\"}\n", "patroni"},
    };
    for (const auto& k : cases) {
        auto e =
            test::config_error_of(std::string(kApp) + k.yaml + "cluster: {witnesses: [app]}\n");
        EXPECT_NE(e.find(k.expect), std::string::npos) << k.yaml << " -> " << e;
    }
    auto h = parse_config(std::string(kApp) + "health: {patroni: \"127.0.0.1:8008\"}\n" +
                              "cluster: {witnesses: [app]}\n",
                          "/t.yaml");
    EXPECT_EQ(h.health.patroni.to_string(), "127.0.0.1:8008");
}

TEST(ClusterConfig, VotersAreTheDatabaseNodesAndTheWitnesses) {
    auto c = parse_config(std::string(kApp) + "cluster: {witnesses: [app]}\n", "/t.yaml");
    EXPECT_EQ(c.voters(), (std::vector<std::string>{"db-1", "db-2", "app"}));
    EXPECT_EQ(c.cluster.quorum, ClusterConfig::Quorum::majority);
    // A database node counts itself; a witness listed among the peers is not a database node.
    auto db = parse_config(R"(node: db-1
tls: {ca: /c, cert: /n.crt, key: /n.key}
inbound: {listen: "0.0.0.0:8765", backend: "127.0.0.1:5432", allow: [db-2, w]}
peers:
  - {name: db-2, connect: "db2.example.net:8765"}
  - {name: w, connect: "w.example.net:8765"}
routes:
  - {local: "127.0.0.1:6432", to: primary}
health: {postgres: "host=/run/postgresql user=tunneld dbname=postgres"}
cluster: {witnesses: [w]}
)",
                           "/t.yaml");
    EXPECT_EQ(db.voters(), (std::vector<std::string>{"db-2", "db-1", "w"}));
    auto none = parse_config(std::string(kApp) + "cluster: {quorum: none}\n", "/t.yaml");
    EXPECT_EQ(none.cluster.quorum, ClusterConfig::Quorum::none);
    EXPECT_TRUE(none.cluster.quorum_given);
}

TEST(ClusterConfig, TwoVotersWithoutAWitnessAreRefused) {
    auto err = test::config_error_of(kApp);
    EXPECT_NE(err.find("/etc/tunneld/t.yaml:7:3: routes: a route to: primary needs a majority of "
                       "the cluster's voters (db-1, db-2), and with two voters that is both"),
              std::string::npos)
        << err;
    EXPECT_NE(err.find("cluster.witnesses"), std::string::npos) << err;
    EXPECT_NE(err.find("quorum: none"), std::string::npos) << err;
    struct Case {
        const char* yaml;
        const char* expect;
    } cases[] = {
        {"cluster: {quorum: maybe}\n", "'cluster.quorum' must be majority or none"},
        {"cluster: {witnesses: [app, app]}\n", "'cluster.witnesses': app is listed twice"},
        {"cluster: {witnesses: 3}\n", "witnesses"},
        {"cluster: {voters: [a]}\n", "voters"},
        {"cluster: {quorum: majority}\n", "with two voters that is both"},
    };
    for (const auto& c : cases) {
        auto e = test::config_error_of(std::string(kApp) + c.yaml);
        EXPECT_NE(e.find(c.expect), std::string::npos) << c.yaml << " -> " << e;
    }
}

TEST(ClusterConfig, ADatabaseNodeIsNotAWitness) {
    auto err = test::config_error_of(R"(node: db-1
tls: {ca: /c, cert: /n.crt, key: /n.key}
inbound: {listen: "0.0.0.0:8765", backend: "127.0.0.1:5432", allow: [db-2]}
peers:
  - {name: db-2, connect: "db2.example.net:8765"}
health: {postgres: "host=/run/postgresql user=tunneld dbname=postgres"}
cluster: {witnesses: [db-1]}
)");
    EXPECT_NE(err.find("'cluster.witnesses': db-1 is this node, which has inbound.backend and "
                       "health.postgres"),
              std::string::npos)
        << err;
}

TEST(ClusterConfig, CheckNamesTheVotersOrWarnsAboutQuorumNone) {
    auto lines =
        check_routes(parse_config(std::string(kApp) + "cluster: {witnesses: [app]}\n", "/t.yaml"));
    ASSERT_FALSE(lines.empty());
    EXPECT_EQ(lines.back().kind, CheckLine::ok);
    EXPECT_EQ(lines.back().text,
              "quorum: routes to: primary pick a primary only while this node reaches 2 of the 3 "
              "voters (db-1, db-2, app (witness))");
    lines = check_routes(parse_config(std::string(kApp) + "cluster: {quorum: none}\n", "/t.yaml"));
    EXPECT_EQ(lines.back().kind, CheckLine::warn);
    EXPECT_EQ(
        lines.back().text.rfind("cluster.quorum: none: routes to: primary follow whichever", 0), 0u)
        << lines.back().text;
}

}  // namespace
}  // namespace tunneld

namespace tunneld {
namespace {

// inbound.services.X.local_quorum: majority (a node's own etcd member behind a
// local listener that closes on the minority side).
TEST(ClusterConfig, LocalQuorumNeedsALocalListenerAndThreeVoters) {
    const std::string node = R"(node: db-1
tls: {ca: /c, cert: /n.crt, key: /n.key}
inbound:
  listen: 0.0.0.0:8765
  backend: 127.0.0.1:5432
  allow: [db-2, db-3]
  services:
    etcd-client: {backend: "127.0.0.1:2379", local: "127.0.0.1:12371", local_quorum: majority}
health: {postgres: "host=/run/postgresql"}
peers:
  - {name: db-2, connect: "db2.example.net:8765"}
)";
    auto c =
        parse_config(node + "  - {name: db-3, connect: \"db3.example.net:8765\"}\n", "/x.yaml");
    ASSERT_EQ(c.inbound->services.size(), 1u);
    EXPECT_TRUE(c.inbound->services[0].local_quorum);
    EXPECT_NE(test::config_error_of(node).find("local_quorum: majority needs three voters or a "
                                               "witness (the cluster has db-2, db-1)"),
              std::string::npos)
        << test::config_error_of(node);
    auto no_local = node;
    const std::string local_key = " local: \"127.0.0.1:12371\",";
    no_local.replace(no_local.find(local_key), local_key.size(), "");
    EXPECT_NE(test::config_error_of(no_local).find("applies to its 'local' listener"),
              std::string::npos)
        << test::config_error_of(no_local);
    auto bad = node;
    bad.replace(bad.find("local_quorum: majority"), 22, "local_quorum: yes");
    EXPECT_NE(test::config_error_of(bad).find("'inbound.services.etcd-client.local_quorum' must "
                                              "be majority or none"),
              std::string::npos)
        << test::config_error_of(bad);
}

}  // namespace
}  // namespace tunneld
