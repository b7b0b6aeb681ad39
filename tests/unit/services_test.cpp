// inbound.services and peers[].services: the config contract, the ALPN ids and
// policy, the handshake that narrows who may use which service (resumption
// included), the peer's service states read from an untrusted pong, and the
// guard's default for backend ports.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/json.hpp>
#include <csignal>

#include "config_error.hpp"
#include "firewall/spec.hpp"
#include "tls_fixture.hpp"
#include "tunneld/config/config.hpp"
#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/routes.hpp"
#include "tunneld/health/snapshot.hpp"
#include "tunneld/tls/alpn.hpp"

namespace tunneld {
namespace {

const char* kHead = R"(node: node-1
tls: {ca: /c, cert: /n.crt, key: /n.key}
)";

Config parse(const std::string& body) {
    return parse_config(std::string(kHead) + body, "/etc/tunneld/t.yaml");
}

std::string error_of(const std::string& body) {
    return test::config_error_of(std::string(kHead) + body);
}

const char* kInbound = R"(inbound:
  listen: 0.0.0.0:8765
  backend: 127.0.0.1:5432
  local: 127.0.0.1:6431
  allow: [node-2, node-3]
  services:
    patroni: {backend: "127.0.0.1:8008", local: "127.0.0.1:18001", allow: [node-2, monitor-1]}
    etcd-peer: 127.0.0.1:2380
    etcd-client: {backend: "unix:/run/etcd.sock"}
peers:
  - name: node-2
    connect: node2.example.net:8765
    local: 127.0.0.1:6432
    services: {patroni: 127.0.0.1:18002, etcd-peer: 127.0.0.1:12382}
)";

TEST(ServicesConfig, BothFormsSortedWithAllowInheritedAndOwnLocals) {
    auto c = parse(kInbound);
    const auto& in = *c.inbound;
    ASSERT_EQ(in.services.size(), 3u);
    EXPECT_EQ(in.services[0].name, "etcd-client");  // sorted by name
    EXPECT_TRUE(in.services[0].backend.is_unix());
    EXPECT_EQ(in.services[1].name, "etcd-peer");
    EXPECT_EQ(in.services[1].backend.to_string(), "127.0.0.1:2380");
    EXPECT_EQ(in.services[1].allow, (std::vector<std::string>{"node-2", "node-3"}));
    EXPECT_FALSE(in.services[1].own_allow);
    EXPECT_EQ(in.services[1].local.port, 0);
    const auto* p = in.service("patroni");
    ASSERT_TRUE(p);
    EXPECT_EQ(p->allow, (std::vector<std::string>{"node-2", "monitor-1"}));
    EXPECT_TRUE(p->own_allow);
    EXPECT_EQ(p->local.to_string(), "127.0.0.1:18001");
    EXPECT_EQ(in.local.to_string(), "127.0.0.1:6431");
    EXPECT_EQ(in.service("postgresql"), nullptr);
    ASSERT_EQ(c.peers[0].services.size(), 2u);
    EXPECT_EQ(c.peers[0].services[0].name, "etcd-peer");
    EXPECT_EQ(c.peers[0].services[1].local.to_string(), "127.0.0.1:18002");
}

TEST(ServicesConfig, ErrorsNameTheKeyAndPlace) {
    const std::string in =
        "inbound:\n  listen: 0.0.0.0:8765\n  backend: 127.0.0.1:5432\n"
        "  allow: [node-2]\n";
    struct Case {
        std::string yaml;
        const char* expect;
    } cases[] = {
        {in + "  services: {Patroni: 127.0.0.1:8008}\n",
         "t.yaml:7:14: 'inbound.services': 'Patroni' is not a service name (1-32 of a-z, 0-9 and "
         "'-')"},
        {in + "  services: {postgresql: 127.0.0.1:8008}\n",
         "'inbound.services.postgresql': postgres is 'inbound.backend'"},
        {in + "  services: {patroni: {allow: [node-2]}}\n",
         "missing required key 'inbound.services.patroni.backend'"},
        {in + "  services: {patroni: {backend: 127.0.0.1:8008, allow: []}}\n",
         "'inbound.services.patroni.allow' is empty"},
        {in + "  services: {patroni: {backend: 127.0.0.1:8008, alow: [node-2]}}\n",
         "unknown key 'inbound.services.patroni.alow'"},
        {in + "  services: {patroni: \"127.0.0.1:80080\"}\n", "'inbound.services.patroni'"},
        {in + "  services: [patroni]\n", "inbound.services must be a mapping"},
        {in + "  local: 0.0.0.0:6431\n",
         "'inbound.local' 0.0.0.0:6431 is not a loopback address: it reaches this node's postgres "
         "without TLS"},
        {in + "  local: 127.0.0.1:6431\n  services: {patroni: {backend: 127.0.0.1:8008, local: "
              "127.0.0.1:6431}}\n",
         "local address 127.0.0.1:6431 is used twice"},
        {"peers:\n  - {name: node-2, connect: \"n2:8765\", services: {etcd_peer: "
         "127.0.0.1:12382}}\n",
         "'peers[].services': 'etcd_peer' is not a service name"},
        {"peers:\n  - {name: node-2, connect: \"n2:8765\", local: 127.0.0.1:6432, services: "
         "{patroni: 127.0.0.1:6432}}\n",
         "local address 127.0.0.1:6432 is used twice"},
        {"peers:\n  - {name: node-2, connect: \"n2:8765\", services: {patroni: 10.0.0.1:18002}}\n",
         "'peers[].services.patroni' 10.0.0.1:18002 is not a loopback address"},
    };
    for (const auto& c : cases) {
        auto e = error_of(c.yaml);
        EXPECT_NE(e.find(c.expect), std::string::npos) << c.yaml << "\n=> " << e;
    }
    // A public peer may put its service listeners on other addresses too.
    EXPECT_EQ(error_of("peers:\n  - {name: node-2, connect: \"n2:8765\", public: true, services: "
                       "{patroni: 10.0.0.1:18002}}\n"),
              "(no error)");
}

TEST(ServiceAlpn, IdsNeverCollideWithTheFixedOnes) {
    EXPECT_EQ(service_alpn("patroni"), "tunneld-svc/patroni");
    EXPECT_EQ(service_of_alpn("tunneld-svc/patroni"), "patroni");
    EXPECT_EQ(service_of_alpn("tunneld-svc/"), "");
    EXPECT_EQ(service_of_alpn(kAlpnData), "");
    EXPECT_EQ(service_of_alpn(kAlpnProbe), "");
    for (std::string name : {"postgresql", "tunneld-probe", "probe", "a", "etcd-peer"}) {
        EXPECT_NE(service_alpn(name), kAlpnData);
        EXPECT_NE(service_alpn(name), kAlpnProbe);
    }
    EXPECT_TRUE(is_valid_service_name(std::string(32, 'a')));
    EXPECT_FALSE(is_valid_service_name(std::string(33, 'a')));
    EXPECT_FALSE(is_valid_service_name("-x"));
    EXPECT_FALSE(is_valid_service_name("a/b"));
    EXPECT_FALSE(is_valid_service_name(""));
}

TEST(ServiceAlpn, PolicyListsEveryProtocolWithWhoMayUseIt) {
    auto c = parse(kInbound);
    auto p = make_alpn_policy(c);
    ASSERT_EQ(p.entries.size(), 5u);
    EXPECT_EQ(p.find(kAlpnData)->allow, (std::vector<std::string>{"node-2", "node-3", "node-1"}));
    EXPECT_EQ(p.find("tunneld-svc/patroni")->allow,
              (std::vector<std::string>{"node-2", "monitor-1", "node-1"}));
    EXPECT_EQ(p.find("tunneld-svc/patroni")->service, "patroni");
    EXPECT_EQ(p.find("tunneld-svc/nope"), nullptr);
    EXPECT_EQ(p.service_names(), "etcd-client, etcd-peer, patroni");
}

// A handshake between node "b" (client, asking for `alpn`) and node "a"
// (server, with `policy`); the server's result, and whether the client resumed.
struct ServiceDial {
    std::pair<asio::ip::tcp::socket, asio::ip::tcp::socket> sockets;
    TlsStream server, client;
    HandshakeResult server_result, client_result;
    bool resumed = false;

    ServiceDial(asio::io_context& io, test::Pki& pki, const AlpnPolicy& policy,
                const std::string& alpn, SessionSlot* slot)
        : sockets(test::socket_pair(io)),
          server(std::move(sockets.first), *pki.a, TlsStream::Role::server),
          client(std::move(sockets.second), *pki.b, TlsStream::Role::client) {
        std::signal(SIGPIPE, SIG_IGN);  // as the daemon does: a refused peer is an error
        server.peer_check().auth.allow = {"b"};
        server.peer_check().auth.protocols = &policy;
        client.peer_check().auth.allow = {"a"};
        client.set_client_params("a", alpn, slot, 1);
        asio::co_spawn(
            io,
            [this]() -> asio::awaitable<void> {
                server_result = co_await server.handshake();
                if (server_result.ok()) {
                    co_await server.write_all(asio::buffer("x", 1));
                    co_await server.shutdown_send();
                    char buf[8];
                    co_await server.read_some(asio::buffer(buf));
                } else {
                    server.close();
                }
            },
            asio::detached);
        asio::co_spawn(
            io,
            [this]() -> asio::awaitable<void> {
                client_result = co_await client.handshake();
                char buf[8];
                auto [ec, n] = co_await client.read_some(asio::buffer(buf));  // takes the ticket
                if (!ec) resumed = client.resumed();
                co_await client.shutdown_send();
            },
            asio::detached);
        io.run();
        io.restart();
    }
};

AlpnPolicy two_services() {
    AlpnPolicy p;
    p.entries = {{kAlpnData, "", {"c"}},  // "b" may not use postgres
                 {kAlpnProbe, "", {"c"}},
                 {"tunneld-svc/patroni", "patroni", {"b"}},
                 {"tunneld-svc/etcd-peer", "etcd-peer", {"c"}}};
    return p;
}

TEST(ServiceHandshake, AllowedServiceIsChosenAndTheIdentityMatched) {
    test::Pki pki;
    asio::io_context io;
    auto policy = two_services();
    ServiceDial d(io, pki, policy, "tunneld-svc/patroni", nullptr);
    EXPECT_TRUE(d.server_result.ok()) << d.server_result.detail;
    EXPECT_EQ(d.server.alpn(), "tunneld-svc/patroni");
    EXPECT_EQ(d.server.verdict().identity, "b");
}

TEST(ServiceHandshake, AnIdentityAllowedOneServiceFailsTheHandshakeOnAnother) {
    test::Pki pki;
    asio::io_context io;
    auto policy = two_services();
    for (const char* other : {kAlpnData, "tunneld-svc/etcd-peer"}) {
        ServiceDial d(io, pki, policy, other, nullptr);
        EXPECT_EQ(d.server_result.failure, HandshakeFailure::identity_not_allowed) << other;
        auto want = std::string("dns:b (not allowed to use ") +
                    (other == std::string(kAlpnData) ? "postgresql" : "service etcd-peer") + ")";
        EXPECT_EQ(d.server_result.detail, want);
    }
}

TEST(ServiceHandshake, UnknownServiceIsRefusedWithAnAlertAndNamed) {
    test::Pki pki;
    asio::io_context io;
    auto policy = two_services();
    ServiceDial d(io, pki, policy, "tunneld-svc/nope", nullptr);
    EXPECT_EQ(d.server_result.failure, HandshakeFailure::unknown_service);
    EXPECT_EQ(d.server_result.detail,
              "service 'nope' is not served here (inbound.services: patroni, etcd-peer)");
    EXPECT_EQ(d.client_result.failure, HandshakeFailure::no_alpn) << d.client_result.detail;
    // A name that is not a service name is not echoed into the log.
    ServiceDial bad(io, pki, policy, "tunneld-svc/x\ny", nullptr);
    EXPECT_EQ(bad.server_result.failure, HandshakeFailure::unknown_service);
    EXPECT_NE(bad.server_result.detail.find("'(not a service name)'"), std::string::npos);
}

TEST(ServiceHandshake, AResumedSessionIsCheckedAgainstTheNewProtocolsAllowList) {
    // A session made for patroni (where "b" is allowed) must not open postgres
    // (where it is not) on resumption, which skips certificate verification.
    test::Pki pki;
    asio::io_context io;
    auto policy = two_services();
    SessionSlot slot;
    ServiceDial first(io, pki, policy, "tunneld-svc/patroni", &slot);
    ASSERT_TRUE(first.server_result.ok()) << first.server_result.detail;
    ServiceDial again(io, pki, policy, "tunneld-svc/patroni", &slot);
    ASSERT_TRUE(again.server_result.ok());
    EXPECT_TRUE(again.resumed) << "the second connection did a full handshake";
    ServiceDial other(io, pki, policy, kAlpnData, &slot);
    EXPECT_EQ(other.server_result.failure, HandshakeFailure::identity_not_allowed);
}

TEST(ServiceStates, ReadFromAPeersPongWithinBounds) {
    BackendState s;
    s.checked = true;
    s.services = {{"patroni", true, ""}, {"etcd-peer", false, "127.0.0.1:2380: refused"}};
    auto back = backend_state_from_json(to_json(s));
    ASSERT_EQ(back.services.size(), 2u);
    EXPECT_EQ(back.services[0].name, "patroni");
    EXPECT_TRUE(back.services[0].reachable);
    EXPECT_EQ(back.services[1].name, "etcd-peer");
    EXPECT_FALSE(back.services[1].reachable);
    EXPECT_EQ(back.services[1].error, "127.0.0.1:2380: refused");

    // What a hostile peer might send: bad names, wrong types, too many, huge errors.
    boost::json::object services;
    services["Bad Name"] = boost::json::object{{"reachable", true}};
    services["ok"] = boost::json::object{{"reachable", "yes"}, {"error", std::string(5000, 'e')}};
    services["notanobject"] = 1;
    for (int i = 0; i < 200; ++i) services["s" + std::to_string(i)] = boost::json::object{};
    auto hostile = backend_state_from_json(boost::json::object{{"services", services}});
    EXPECT_LE(hostile.services.size(), 64u);
    for (const auto& sv : hostile.services) {
        EXPECT_TRUE(is_valid_service_name(sv.name)) << sv.name;
        EXPECT_LE(sv.error.size(), 512u);
        if (sv.name == "ok") {
            EXPECT_FALSE(sv.reachable);  // "yes" is not true
        }
    }
    EXPECT_TRUE(backend_state_from_json(boost::json::object{{"services", "x"}}).services.empty());
}

TEST(ServiceGuard, BackendPortsAreLoopbackOnlyUnlessListed) {
    auto c = parse(std::string(kInbound) + R"(firewall:
  protect:
    - {port: 8008, allow: [10.0.0.0/8]}
)");
    c.inbound->services.push_back(
        {"remote", Endpoint{"10.1.2.3", 9000, {}}, {"node-2"}, false, {}});
    auto spec = firewall::make_spec(c, {});
    std::map<std::uint16_t, std::size_t> v4;
    for (const auto& g : spec.ports) v4[g.port] = g.v4.size();
    EXPECT_EQ(v4.count(5432), 1u);  // inbound.backend
    EXPECT_EQ(v4[5432], 0u);        // loopback only
    EXPECT_EQ(v4.count(2380), 1u);  // etcd-peer
    EXPECT_EQ(v4[2380], 0u);
    EXPECT_EQ(v4[8008], 1u);        // listed: the operator's allow wins
    EXPECT_EQ(v4.count(8765), 1u);  // the tunnel port, as before
    EXPECT_EQ(v4.count(9000), 0u);  // a backend on another host is not this host's port
    // The plaintext listeners too (inbound.local, the patroni local, the peer's
    // local and service ports), all loopback-only; etcd-client is a unix socket.
    for (std::uint16_t p : {6431, 18001, 6432, 18002, 12382})
        EXPECT_EQ(v4.count(p) ? v4[p] : 99u, 0u) << p;
    EXPECT_EQ(spec.ports.size(), 9u);
}

TEST(ServiceStatus, ShowsServicesHereAndAtPeers) {
    // This node serves patroni (up) and etcd-peer (down); its peer primary-1 is
    // reached for patroni (up there) and etcd-client (not served there).
    Snapshot s;
    s.node = "standby-1";
    s.now = 1'000'000;
    s.inbound_listen = {"0.0.0.0:8765"};
    PeerView p;
    p.name = "primary-1";
    p.probe.probed = p.probe.up = true;
    p.probe.peer_backend = BackendState{};
    p.probe.peer_backend->services = {{"patroni", true, ""}};
    p.services = {{"patroni", "127.0.0.1:18002"}, {"etcd-client", "127.0.0.1:12372"}};
    s.peers.push_back(p);
    s.services = {{"patroni", "tunneld-svc/patroni", "127.0.0.1:8008", {"primary-1"}},
                  {"etcd-peer", "tunneld-svc/etcd-peer", "127.0.0.1:2380", {"primary-1"}}};
    s.backend.services = {{"patroni", true, ""}, {"etcd-peer", false, "refused"}};
    s.traffic.push_back(
        TrafficView{Direction::inbound, "primary-1", "patroni", 1, 4, 10, 20, 0, "", 0});
    s.traffic.push_back(
        TrafficView{Direction::outbound, "primary-1", "patroni", 0, 2, 30, 40, 0, "", 0});
    auto st = boost::json::parse(render_status(s)).as_object();
    const auto& svc = st.at("inbound").at("services").at("patroni");
    EXPECT_EQ(svc.at("alpn"), "tunneld-svc/patroni");
    EXPECT_EQ(svc.at("backend_reachable"), true);
    EXPECT_EQ(svc.at("peers").at("primary-1").at("opened"), 4);
    EXPECT_FALSE(st.at("inbound").at("peers").as_object().contains("primary-1"));  // postgres only
    EXPECT_EQ(st.at("inbound").at("services").at("etcd-peer").at("error"), "refused");
    const auto& at_peer = st.at("peers").at(0).at("services");
    EXPECT_EQ(at_peer.at("patroni").at("backend_reachable"), true);
    EXPECT_EQ(at_peer.at("patroni").at("connections").at("opened"), 2);
    EXPECT_EQ(at_peer.at("etcd-client").at("backend_reachable"), nullptr);
    EXPECT_EQ(at_peer.at("etcd-client").at("error"),
              "not served there (not in its inbound.services)");
}

}  // namespace
}  // namespace tunneld
