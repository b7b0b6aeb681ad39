#include "tunneld/config/config.hpp"

#include <gtest/gtest.h>

#include "config_error.hpp"
#include "tunneld/error.hpp"

namespace tunneld {
namespace {

const char* kMinimal = R"(node: standby-1
tls:
  ca: ca.crt
  cert: /etc/tunneld/node.crt
  key: /etc/tunneld/node.key
peers:
  - name: primary-1
    connect: primary.example.net:8765
    local: 127.0.0.1:6432
)";

std::string error_of(const std::string& text) { return test::config_error_of(text); }

TEST(Config, ParsesMinimalConfigWithSecureDefaults) {
    auto c = parse_config(kMinimal, "/etc/tunneld/standby.yaml");
    EXPECT_EQ(c.node, "standby-1");
    EXPECT_EQ(c.tls.ca, "/etc/tunneld/ca.crt");  // relative to the config's folder
    EXPECT_EQ(c.tls.key, "/etc/tunneld/node.key");
    ASSERT_EQ(c.peers.size(), 1u);
    EXPECT_EQ(c.peers[0].connect.host, "primary.example.net");
    EXPECT_EQ(c.peers[0].connect.port, 8765);
    EXPECT_EQ(c.peers[0].local.to_string(), "127.0.0.1:6432");
    EXPECT_FALSE(c.inbound.has_value());
    EXPECT_EQ(c.keepalive.idle, std::chrono::seconds(30));
    EXPECT_EQ(c.keepalive.user_timeout, std::chrono::seconds(60));
    // Services: kept through a silent path as long as Linux keeps a direct one.
    EXPECT_EQ(c.service_keepalive.idle, std::chrono::seconds(30));
    EXPECT_EQ(c.service_keepalive.count, 90);
    EXPECT_EQ(c.service_keepalive.user_timeout, std::chrono::minutes(15));
    EXPECT_EQ(c.timeouts.handshake, std::chrono::seconds(10));
    EXPECT_EQ(c.limits.max_connections, 256);
    EXPECT_EQ(c.limits.max_local_connections, 128);
    EXPECT_EQ(c.tls.rekey_bytes, std::uint64_t{64} << 30);  // well before AES-GCM's ~390 GB
    EXPECT_EQ(c.tls.rekey_interval, std::chrono::hours(24));
    EXPECT_EQ(c.workers, 0u);
}

TEST(Config, RekeyAndLocalLimitKeys) {
    std::string text(kMinimal);
    text.replace(text.find("  key: /etc/tunneld/node.key\n"), 29,
                 "  key: /etc/tunneld/node.key\n  rekey_bytes: 1GB\n  rekey_interval: 1h\n");
    auto c = parse_config(text + "limits: {max_local_connections: 16}\n", "/etc/tunneld/t.yaml");
    EXPECT_EQ(c.tls.rekey_bytes, std::uint64_t{1} << 30);
    EXPECT_EQ(c.tls.rekey_interval, std::chrono::hours(1));
    EXPECT_EQ(c.limits.max_local_connections, 16);
    auto small = text;
    small.replace(small.find("1GB"), 3, "1kB");
    EXPECT_NE(error_of(small).find("'tls.rekey_bytes': '1kB': expected bytes of at least 64kB"),
              std::string::npos)
        << error_of(small);
    EXPECT_NE(error_of(std::string(kMinimal) + "limits: {max_local_connections: 0}\n")
                  .find("max_local_connections"),
              std::string::npos);
}

TEST(Config, ParsesFullConfig) {
    auto c = parse_config(R"(node: primary-1
tls: {ca: /c, cert: /n.crt, key: /n.key, crl: /ca.crl}
inbound:
  listen: ["0.0.0.0:8765", "[::]:8765"]
  backend: unix:/var/run/postgresql/.s.PGSQL.5432
  allow: [standby-1, "spiffe://example.org/standby-2"]
keepalive: {idle: 15s, interval: 5s, count: 4, user_timeout: 45000ms}
service_keepalive: {idle: 20s, user_timeout: 5m}
timeouts: {connect: 3s, handshake: 2s, shutdown: 1m}
limits: {max_connections: 10, max_handshakes_per_source: 2}
workers: 3
log_level: debug
)",
                          "/x.yaml");
    ASSERT_TRUE(c.inbound);
    ASSERT_EQ(c.inbound->listen.size(), 2u);
    EXPECT_EQ(c.inbound->listen[1].host, "::");
    EXPECT_TRUE(c.inbound->backend.is_unix());
    EXPECT_EQ(c.inbound->allow[1], "spiffe://example.org/standby-2");
    EXPECT_EQ(c.tls.crl, "/ca.crl");
    EXPECT_EQ(c.keepalive.count, 4);
    EXPECT_EQ(c.keepalive.user_timeout, std::chrono::milliseconds(45000));
    EXPECT_EQ(c.service_keepalive.idle, std::chrono::seconds(20));
    EXPECT_EQ(c.service_keepalive.count, 90);  // not given: the services' default
    EXPECT_EQ(c.service_keepalive.user_timeout, std::chrono::minutes(5));
    EXPECT_EQ(c.timeouts.shutdown, std::chrono::minutes(1));
    EXPECT_EQ(c.limits.max_handshakes_per_source, 2);
    EXPECT_EQ(c.workers, 3u);
}

struct BadCase {
    const char* name;
    std::string text;
    const char* expected;
};

class ConfigErrors : public ::testing::TestWithParam<BadCase> {};

TEST_P(ConfigErrors, NamesPositionAndProblem) {
    auto err = error_of(GetParam().text);
    EXPECT_NE(err.find(GetParam().expected), std::string::npos) << "got: " << err;
}

std::string with(const std::string& extra) { return std::string(kMinimal) + extra; }

INSTANTIATE_TEST_SUITE_P(
    All, ConfigErrors,
    ::testing::Values(
        BadCase{"EmptyFile", "", "/etc/tunneld/t.yaml: the file is empty"},
        BadCase{"InvalidYaml", "node: a\ntls: [x\n", "/etc/tunneld/t.yaml:3:1: invalid YAML"},
        BadCase{"UnknownTopKey", with("keepalives: {}\n"),
                "t.yaml:10:1: unknown key 'keepalives' (expected one of:"},
        BadCase{"UnknownNestedKey", with("keepalive:\n  idel: 3s\n"),
                "t.yaml:11:3: unknown key 'keepalive.idel'"},
        BadCase{"MissingNode", "tls: {ca: a, cert: b, key: c}\npeers: []\n",
                "t.yaml:1:1: missing required key 'node'"},
        BadCase{"MissingTls", "node: a\n", "missing required key 'tls'"},
        BadCase{"MissingTlsKey", "node: a\ntls: {ca: a, cert: b}\n",
                "missing required key 'tls.key'"},
        BadCase{"NothingToDo", "node: a\ntls: {ca: a, cert: b, key: c}\n",
                "nothing to do: configure 'inbound', 'peers', or both"},
        BadCase{"DurationWithoutUnit", with("keepalive: {idle: 30}\n"),
                "t.yaml:10:19: 'keepalive.idle': '30' is not a duration"},
        BadCase{"DurationTooSmall", with("keepalive: {interval: 10ms}\n"),
                "'keepalive.interval' must be from 1s to 32767s"},
        BadCase{"DurationTooLarge", with("timeouts: {shutdown: 99999999h}\n"),
                "t.yaml:10:22: 'timeouts.shutdown' must be from 0ms to 1h"},
        BadCase{"DuplicateTopKey", with("workers: 2\nworkers: 3\n"),
                "t.yaml:11:1: duplicate key 'workers' (first given at line 10, column 1)"},
        BadCase{"DuplicateNestedKey", with("timeouts:\n  connect: 1s\n  connect: 20s\n"),
                "t.yaml:12:3: duplicate key 'timeouts.connect' (first given at line 11, column 3)"},
        BadCase{"NonLoopbackLocalIsAnOpenRelay",
                with("").replace(std::string(kMinimal).find("127.0.0.1:6432"), 14, "0.0.0.0:6432"),
                "'peers[].local' 0.0.0.0:6432 is not a loopback address"},
        BadCase{"FfdheGroupRefused",
                with("").replace(std::string(kMinimal).find("peers:"), 0,
                                 "  groups: [X25519, ffdhe8192]\n"),
                "'tls.groups': 'ffdhe8192' is not allowed"},
        BadCase{"CountOutOfRange", with("keepalive: {count: 0}\n"),
                "'keepalive.count' must be a whole number from 1 to 127"},
        BadCase{"ServiceKeepaliveBounds", with("service_keepalive: {user_timeout: 2h}\n"),
                "'service_keepalive.user_timeout' must be from 0ms to 1h"},
        BadCase{"CountNotNumber", with("keepalive: {count: three}\n"), "'keepalive.count' must be"},
        BadCase{"BadPort",
                with("timeouts: {connect: 1s}\n")
                    .replace(std::string(kMinimal).find("6432"), 4, "99999"),
                "'peers[].local': '127.0.0.1:99999': port must be a number from 1 to 65535"},
        BadCase{"UnbracketedV6",
                with("").replace(std::string(kMinimal).find("127.0.0.1:6432"), 14, "::1:6432"),
                "IPv6 addresses must be written in brackets"},
        BadCase{"UnixLocalRefused",
                with("").replace(std::string(kMinimal).find("127.0.0.1:6432"), 14, "unix:/tmp/x"),
                "'peers[].local': 'unix:/tmp/x': a unix socket is not allowed here"},
        BadCase{"DuplicatePeer",
                with("  - name: primary-1\n    connect: b:1\n    local: 127.0.0.1:7000\n"),
                "peer 'primary-1' is listed twice"},
        BadCase{"DuplicateLocal",
                with("  - name: other\n    connect: b:1\n    local: 127.0.0.1:6432\n"),
                "local address 127.0.0.1:6432 is used twice"},
        BadCase{"WildcardAllow",
                with("inbound: {listen: 0.0.0.0:1, backend: 127.0.0.1:5432, allow: "
                     "['*.example.com']}\n"),
                "'inbound.allow': '*.example.com' is not a valid identity"},
        BadCase{"EmptyAllow",
                with("inbound: {listen: 0.0.0.0:1, backend: 127.0.0.1:5432, allow: []}\n"),
                "'inbound.allow' is empty: no peer could ever connect"},
        BadCase{"AllowNotList",
                with("inbound: {listen: 0.0.0.0:1, backend: 127.0.0.1:5432, allow: a}\n"),
                "'inbound.allow' must be a list"},
        BadCase{"MissingBackend", with("inbound: {listen: 0.0.0.0:1, allow: [a]}\n"),
                "missing required key 'inbound.backend'"},
        BadCase{"BadNodeName", "node: 'has space'\ntls: {ca: a, cert: b, key: c}\n",
                "'node': 'has space' is not a valid identity"},
        BadCase{"BadWorkers", with("workers: lots\n"),
                "'workers' must be 'auto' or a whole number"},
        BadCase{"BadLogLevel", with("log_level: loud\n"), "'log_level' must be one of"},
        BadCase{"TlsNotMapping", "node: a\ntls: [a]\n", "tls must be a mapping"}),
    [](const auto& test_info) { return std::string(test_info.param.name); });

TEST(Config, NonLoopbackLocalNeedsPublicTrue) {
    auto text = with("").replace(std::string(kMinimal).find("127.0.0.1:6432"), 14, "0.0.0.0:6432");
    text += "    public: true\n";
    auto c = parse_config(text, "/x.yaml");
    EXPECT_TRUE(c.peers[0].public_local);
    EXPECT_EQ(parse_config(with(""), "/x.yaml").peers[0].public_local, false);
    // [::1] and 127.x are loopback
    EXPECT_NO_THROW(parse_config(
        with("").replace(std::string(kMinimal).find("127.0.0.1:6432"), 14, "\"[::1]:6432\""),
        "/x.yaml"));
}

TEST(Config, TlsGroupsDefaultToThePostQuantumHybridThenEllipticCurves) {
    auto c = parse_config(with(""), "/x.yaml");
    EXPECT_EQ(c.tls.groups,
              (std::vector<std::string>{"X25519MLKEM768", "X25519", "P-256", "P-384"}));
}

TEST(Config, UnknownKeyInsidePeerIsReported) {
    auto err = error_of(std::string(kMinimal) + "    lcoal: 127.0.0.1:1\n");
    EXPECT_NE(err.find("t.yaml:10:5: unknown key 'peers[].lcoal'"), std::string::npos) << err;
}

TEST(Identity, ValidNames) {
    EXPECT_TRUE(is_valid_identity("standby-1"));
    EXPECT_TRUE(is_valid_identity("db.example.net"));
    EXPECT_TRUE(is_valid_identity("spiffe://example.org/ns/db/sa/standby"));
    EXPECT_FALSE(is_valid_identity("*.example.net"));
    EXPECT_FALSE(is_valid_identity(""));
    EXPECT_FALSE(is_valid_identity("-lead"));
    EXPECT_FALSE(is_valid_identity("a..b"));
    EXPECT_FALSE(is_valid_identity("under_score"));
    EXPECT_FALSE(is_valid_identity("://x"));
}

}  // namespace
}  // namespace tunneld
