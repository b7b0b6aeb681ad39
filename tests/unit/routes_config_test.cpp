// The routes: block of the config (the contract: local, to, max_lag, public)
// and peers without a local port.
#include <gtest/gtest.h>

#include "config_error.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"

namespace tunneld {
namespace {

const char* kNode = R"(node: standby-2
tls: {ca: /c, cert: /n.crt, key: /n.key}
peers:
  - {name: primary-1, connect: "db1.example.net:8765", local: "127.0.0.1:6433"}
  - {name: standby-1, connect: "db2.example.net:8765"}
)";

std::string error_of(const std::string& routes) {
    return test::config_error_of(std::string(kNode) + routes);
}

TEST(RoutesConfig, TheThreeKindsAndOptionalPeerLocals) {
    auto c = parse_config(std::string(kNode) + R"(routes:
  - {local: "127.0.0.1:6432", to: primary}
  - {local: "127.0.0.1:6442", to: replica, max_lag: 16MB}
  - {local: "127.0.0.1:6452", to: standby-1}
cluster: {witnesses: [standby-2]}
)",
                          "/etc/tunneld/t.yaml");
    ASSERT_EQ(c.routes.size(), 3u);
    EXPECT_EQ(c.routes[0].to, RouteConfig::To::primary);
    EXPECT_EQ(c.routes[0].name(), "127.0.0.1:6432");
    EXPECT_EQ(c.routes[0].target_text(), "primary");
    EXPECT_FALSE(c.routes[0].max_lag);
    EXPECT_EQ(c.routes[1].to, RouteConfig::To::replica);
    EXPECT_EQ(c.routes[1].max_lag, 16u << 20);
    EXPECT_EQ(c.routes[2].to, RouteConfig::To::peer);
    EXPECT_EQ(c.routes[2].peer, "standby-1");
    EXPECT_TRUE(c.peers[0].has_local());
    EXPECT_FALSE(c.peers[1].has_local());  // reached through routes only
}

TEST(RoutesConfig, ErrorsNameTheKeyAndPlace) {
    struct Case {
        const char* yaml;
        const char* expect;
    } cases[] = {
        {"routes:\n  - {local: \"127.0.0.1:6432\", to: standby-9}\n",
         "'routes[].to': 'standby-9' is not primary, replica or a peer's name (peers: primary-1, "
         "standby-1)"},
        {"routes:\n  - {local: \"127.0.0.1:6432\"}\n", "missing required key 'routes[].to'"},
        {"routes:\n  - {to: primary}\n", "missing required key 'routes[].local'"},
        {"routes:\n  - {local: \"127.0.0.1:6433\", to: primary}\n",
         "local address 127.0.0.1:6433 is used twice"},  // peers[].local already has it
        {"routes:\n  - {local: \"127.0.0.1:6432\", to: primary}\n  - {local: \"127.0.0.1:6432\", "
         "to: "
         "replica}\n",
         "local address 127.0.0.1:6432 is used twice"},
        {"routes:\n  - {local: \"127.0.0.1:6432\", to: primary, max_lag: 1MB}\n",
         "'routes[].max_lag' applies to 'to: replica' only"},
        {"routes:\n  - {local: \"127.0.0.1:6432\", to: replica, max_lag: lots}\n",
         "'routes[].max_lag': 'lots': expected bytes, e.g. 16MB"},
        {"routes:\n  - {local: \"0.0.0.0:6432\", to: primary}\n",
         "'routes[].local' 0.0.0.0:6432 is not a loopback address"},
        {"routes:\n  - {local: \"127.0.0.1:6432\", to: primary, via: x}\n",
         "unknown key 'routes[].via'"},
        {"routes: {local: \"127.0.0.1:6432\"}\n", "'routes' must be a list"},
    };
    for (const auto& c : cases) {
        auto err = error_of(c.yaml);
        EXPECT_NE(err.find(c.expect), std::string::npos) << c.yaml << " -> " << err;
        EXPECT_NE(err.find("/etc/tunneld/t.yaml:"), std::string::npos) << err;
    }
}

TEST(RoutesConfig, PublicRouteAndNoRoutesWithoutPeers) {
    auto c = parse_config(std::string(kNode) +
                              "routes:\n  - {local: \"0.0.0.0:6432\", to: primary, public: true}\n"
                              "cluster: {quorum: none}\n",
                          "/etc/tunneld/t.yaml");
    EXPECT_TRUE(c.routes[0].public_local);
    auto err = test::config_error_of(R"(node: a
tls: {ca: /c, cert: /n.crt, key: /n.key}
inbound: {listen: "0.0.0.0:8765", backend: "127.0.0.1:5432", allow: [b]}
routes:
  - {local: "127.0.0.1:6432", to: primary}
)");
    EXPECT_NE(err.find("'routes' needs 'peers'"), std::string::npos) << err;
}

}  // namespace
}  // namespace tunneld
