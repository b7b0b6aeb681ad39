// The health: block of the config: defaults, every key, errors with position.
#include <gtest/gtest.h>

#include "config_error.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/conninfo.hpp"

namespace tunneld {
namespace {

const char* kBase = R"(node: standby-1
tls: {ca: /c, cert: /n.crt, key: /n.key}
peers: [{name: primary-1, connect: "10.0.0.1:8765", local: "127.0.0.1:6432"}]
)";

std::string config_error(const std::string& health) {
    return test::config_error_of(std::string(kBase) + health);
}

TEST(HealthConfig, DefaultsHaveNoTcpListenerSoTwoInstancesNeverCollide) {
    auto c = parse_config(kBase, "/etc/tunneld/t.yaml");
    EXPECT_TRUE(c.health.enabled);
    EXPECT_TRUE(c.health.listen.empty());
    EXPECT_TRUE(c.health.postgres.empty());
    EXPECT_EQ(c.health.probe_interval, std::chrono::seconds(2));
}

TEST(HealthConfig, NonLoopbackListenNeedsPublicTrue) {
    auto c = parse_config(std::string(kBase) + "health: {listen: \"0.0.0.0:9000\", public: true}\n",
                          "/t.yaml");
    EXPECT_TRUE(c.health.public_listen);
}

TEST(HealthConfig, ParsesEveryKey) {
    auto c = parse_config(std::string(kBase) + R"(health:
  listen: ["127.0.0.1:9187", "[::1]:9187"]
  postgres: "host=/var/run/postgresql dbname=postgres user=tunneld"
  probe_interval: 500ms
  check_timeout: 2s
)",
                          "/etc/tunneld/t.yaml");
    ASSERT_EQ(c.health.listen.size(), 2u);
    EXPECT_EQ(c.health.listen[1].to_string(), "[::1]:9187");
    EXPECT_EQ(c.health.postgres, "host=/var/run/postgresql dbname=postgres user=tunneld");
    EXPECT_EQ(c.health.probe_interval, std::chrono::milliseconds(500));
    EXPECT_EQ(c.health.check_timeout, std::chrono::seconds(2));
    EXPECT_FALSE(
        parse_config(std::string(kBase) + "health: {enabled: false}\n", "/t.yaml").health.enabled);
}

TEST(HealthConfig, ErrorsNameTheKeyAndPlace) {
    struct Case {
        const char* yaml;
        const char* expect;
    } cases[] = {
        {"health: {listne: \"127.0.0.1:1\"}\n", "unknown key 'health.listne'"},
        {"health: {listen: \"127.0.0.1\"}\n", "health.listen"},
        {"health: {listen: []}\n", "'health.listen' must not be empty"},
        {"health: {postgres: \"\"}\n", "'health.postgres' is empty"},
        {"health: {probe_interval: 10ms}\n", "probe_interval"},
        {"health: {enabled: yes please}\n", "'health.enabled' must be true or false"},
        {"health: {listen: \"0.0.0.0:9000\"}\n",
         "'health.listen' 0.0.0.0:9000 is not a loopback address"},
    };
    for (const auto& c : cases) {
        auto err = config_error(c.yaml);
        EXPECT_NE(err.find(c.expect), std::string::npos) << c.yaml << " -> " << err;
        EXPECT_NE(err.find("/etc/tunneld/t.yaml:4:"), std::string::npos) << err;
    }
}

TEST(HealthConfig, TagsAndInboundSourceParse) {
    auto c = parse_config(std::string(kBase) + R"(health: {tags: {dc: fra, noloadbalance: true}}
inbound:
  listen: "0.0.0.0:8765"
  backend: "127.0.0.1:5432"
  allow: [primary-1, standby-2]
  source: {primary-1: 127.0.1.1, standby-2: 127.0.1.2}
)",
                          "/t.yaml");
    EXPECT_EQ(c.health.tags.at("dc"), "fra");
    EXPECT_EQ(c.health.tags.at("noloadbalance"), "true");
    EXPECT_EQ(c.inbound->source.at("standby-2"), "127.0.1.2");
}

TEST(HealthConfig, InboundSourceRefusesWhatCouldNotWork) {
    auto inbound = [](const std::string& backend, const std::string& source) {
        return "inbound: {listen: \"0.0.0.0:8765\", backend: \"" + backend +
               "\", allow: [primary-1, standby-2], source: " + source + "}\n";
    };
    struct Case {
        std::string yaml;
        const char* expect;
    } cases[] = {
        {inbound("127.0.0.1:5432", "{primary-1: 10.0.0.5}"),
         "'inbound.source.primary-1': '10.0.0.5' is not a loopback address"},
        {inbound("127.0.0.1:5432", "{primary-1: '::1'}"), "is not a loopback address like"},
        {inbound("127.0.0.1:5432", "{stranger: 127.0.1.1}"),
         "'inbound.source': 'stranger' is not in inbound.allow"},
        {inbound("127.0.0.1:5432", "{primary-1: 127.0.1.1, standby-2: 127.0.1.1}"),
         "is given to another identity too"},
        {inbound("unix:/run/postgresql/.s.PGSQL.5432", "{primary-1: 127.0.1.1}"),
         "'inbound.source' needs inbound.backend on a loopback address"},
        {inbound("db.internal:5432", "{primary-1: 127.0.1.1}"),
         "'inbound.source' needs inbound.backend on a loopback address"},
        {"health: {tags: {dc: [a, b]}}\n", "'health.tags.dc' must be a plain value"},
    };
    for (const auto& c : cases) {
        auto err = config_error(c.yaml);
        EXPECT_NE(err.find(c.expect), std::string::npos) << c.yaml << " -> " << err;
        EXPECT_NE(err.find("/etc/tunneld/t.yaml:"), std::string::npos) << err;
    }
}

// libpq judges the connection string (config/ does not link libpq): the
// daemon and `check` call check_conninfo() right after loading, and the
// message still names the key's place in the file.
TEST(HealthConfig, ConninfoIsCheckedByLibpqWithThePlaceInTheFile) {
    auto bad = parse_config(std::string(kBase) + "health:\n  postgres: \"host=x bogus_option=1\"\n",
                            "/etc/tunneld/t.yaml");
    try {
        check_conninfo(bad);
        FAIL() << "a bad conninfo passed";
    } catch (const StartupError& e) {
        EXPECT_STREQ(e.what(),
                     "/etc/tunneld/t.yaml:5:13: 'health.postgres' is not a libpq connection "
                     "string: invalid connection option \"bogus_option\"");
    }
    auto good = parse_config(
        std::string(kBase) + "health: {postgres: \"host=/var/run/postgresql user=tunneld\"}\n",
        "/etc/tunneld/t.yaml");
    EXPECT_NO_THROW(check_conninfo(good));
    EXPECT_NO_THROW(check_conninfo(parse_config(kBase, "/etc/tunneld/t.yaml")));  // no key
    EXPECT_FALSE(parse_conninfo("host='unterminated"));
}

}  // namespace
}  // namespace tunneld
