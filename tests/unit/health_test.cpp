// The health endpoint's pure core: routing and status codes per state,
// Patroni's lag syntax, LSN arithmetic, /status JSON and /metrics text (the
// health: config block is in health_config_test.cpp, the probe's backend JSON in
// backend_state_test.cpp).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include "config_error.hpp"

#include "tunneld/config/config.hpp"
#include "tunneld/error.hpp"
#include "tunneld/health/pg_check.hpp"
#include "tunneld/health/routes.hpp"

namespace tunneld {
namespace {

namespace json = boost::json;

PostgresState primary_pg(std::string lsn = "0/5000000") {
    PostgresState p;
    p.up = true;
    p.current_lsn = std::move(lsn);
    return p;
}

PostgresState standby_pg(std::string receive, std::string replay,
                         std::string status = "streaming") {
    PostgresState p;
    p.up = true;
    p.in_recovery = true;
    p.receive_lsn = std::move(receive);
    p.replay_lsn = std::move(replay);
    p.receiver_status = std::move(status);
    return p;
}

// A healthy standby node with one peer (the primary), postgres checked.
Snapshot healthy() {
    Snapshot s;
    s.node = "standby-1";
    s.version = "test";
    s.now = 1'000'000;
    s.started_at = s.now - 60;
    s.listeners_up = true;
    s.cert_serial = "01AB";
    s.cert_not_after = s.now + 30 * 86400;
    PeerView p;
    p.name = "primary-1";
    p.connect = "10.0.0.1:8765";
    p.probe.probed = p.probe.up = true;
    p.probe.since = s.now - 50;
    p.probe.rtt_smoothed_ms = 12.5;
    BackendState pb;
    pb.checked = pb.reachable = true;
    pb.postgres = primary_pg("0/5000000");
    p.probe.peer_backend = pb;
    s.peers.push_back(p);
    s.backend_checked_by_config = s.postgres_configured = true;
    s.backend.checked = s.backend.reachable = true;
    s.backend.postgres = standby_pg("0/5000000", "0/5000000");
    return s;
}

// This node serves patroni (up) and etcd-peer (down); its peer primary-1 is
// reached for patroni (up there) and etcd-client (not served there).
void add_services(Snapshot& s) {
    s.services = {{"patroni", "tunneld-svc/patroni", "127.0.0.1:8008", {"primary-1"}},
                  {"etcd-peer", "tunneld-svc/etcd-peer", "127.0.0.1:2380", {"primary-1"}}};
    s.backend.services = {{"patroni", true, ""}, {"etcd-peer", false, "refused"}};
    s.peers[0].services = {{"patroni", "127.0.0.1:18002"}, {"etcd-client", "127.0.0.1:12372"}};
    s.peers[0].probe.peer_backend->services = {{"patroni", true, ""}};
}

unsigned status_of(const Snapshot& s, std::string_view target) {
    return handle_request(s, target).status;
}

TEST(Health, EveryCheckPassesWhenAllIsUp) {
    auto s = healthy();
    for (auto path : {"/liveness", "/readiness", "/health", "/replica", "/replica?lag=1MB",
                      "/read-only", "/standby"})
        EXPECT_EQ(status_of(s, path), 200u) << path << ": " << handle_request(s, path).body;
    EXPECT_EQ(status_of(s, "/primary"), 503u);
    EXPECT_EQ(status_of(s, "/"), 503u);  // Patroni: / is the primary check
}

TEST(Health, PeerUnreachableFailsReadinessNotLiveness) {
    auto s = healthy();
    s.peers[0].probe.up = false;
    s.peers[0].probe.since = s.now - 7;
    s.peers[0].probe.last_error = "10.0.0.1:8765: Connection refused";
    EXPECT_EQ(status_of(s, "/liveness"), 200u);
    auto r = handle_request(s, "/readiness");
    EXPECT_EQ(r.status, 503u);
    EXPECT_NE(r.body.find("peer primary-1 unreachable for 7s: 10.0.0.1:8765: Connection refused"),
              std::string::npos)
        << r.body;
    EXPECT_EQ(status_of(s, "/health"), 503u);
    auto st = json::parse(render_status(s));
    EXPECT_EQ(st.at("peers").at(0).at("state"), "unreachable");
    EXPECT_EQ(st.at("ready"), false);
}

TEST(Health, PeerReachableWithItsPostgresDownIsToldApart) {
    auto s = healthy();
    s.peers[0].probe.peer_backend->reachable = false;
    s.peers[0].probe.peer_backend->error = "127.0.0.1:5432: Connection refused";
    EXPECT_EQ(status_of(s, "/readiness"), 200u);  // the tunnel itself is fine
    auto st = json::parse(render_status(s));
    const auto& peer = st.at("peers").at(0);
    EXPECT_EQ(peer.at("state"), "up");
    EXPECT_EQ(peer.at("backend_state"), "down");
    EXPECT_EQ(peer.at("summary"),
              "reachable, its backend down: 127.0.0.1:5432: Connection refused");
}

TEST(Health, NotYetProbedPeerIsNotReady) {
    auto s = healthy();
    s.peers[0].probe = ProbeState{};
    EXPECT_EQ(status_of(s, "/readiness"), 503u);
    EXPECT_EQ(json::parse(render_status(s)).at("peers").at(0).at("state"), "probing");
}

TEST(Health, LocalBackendDownFailsHealthOnly) {
    auto s = healthy();
    s.backend.reachable = false;
    s.backend.error = "127.0.0.1:5432: Connection refused";
    s.backend.postgres->up = false;
    s.backend.postgres->error = "connection refused";
    EXPECT_EQ(status_of(s, "/readiness"), 200u);
    auto r = handle_request(s, "/health");
    EXPECT_EQ(r.status, 503u);
    EXPECT_NE(r.body.find("backend does not accept connections"), std::string::npos);
    EXPECT_EQ(status_of(s, "/replica"), 503u);
    EXPECT_EQ(status_of(s, "/primary"), 503u);
}

TEST(Health, PostgresRefusingTheCheckIsNotABackendDown) {
    // postgres answered but the health role does not exist: the problem names
    // the role and the fix; nothing says "backend down".
    auto s = healthy();
    s.backend.postgres = PostgresState{};
    s.backend.postgres->answered = true;
    s.backend.postgres->error = server_refusal(
        R"(connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: FATAL:  role "tunneld" does not exist)");
    auto r = handle_request(s, "/health");
    EXPECT_EQ(r.status, 503u);
    auto body = json::parse(r.body);
    EXPECT_EQ(body.at("tunneld").at("problems").at(0).as_string().subview().substr(0, 48),
              "health.postgres: role tunneld does not exist: on");
    EXPECT_EQ(body.at("tunneld").at("role"), "unknown");
    EXPECT_EQ(body.at("role"), "unknown");   // Patroni's
    EXPECT_EQ(body.at("state"), "unknown");  // running, but the check is refused
    EXPECT_EQ(r.body.find("backend"), std::string::npos) << r.body;
    EXPECT_EQ(status_of(s, "/replica"), 503u);
    EXPECT_NE(one_line_summary(s).find(": health.postgres: role tunneld does not exist"),
              std::string::npos);
    auto back = backend_state_from_json(to_json(s.backend));
    EXPECT_TRUE(back.postgres->answered);
}

TEST(Health, ServerRefusalsSayWhatToDo) {
    EXPECT_EQ(
        server_refusal(
            R"(connection to server at "127.0.0.1", port 5432 failed: FATAL:  role "mon" does not exist)"),
        "health.postgres: role mon does not exist: on the primary run CREATE ROLE mon LOGIN IN "
        "ROLE pg_monitor "
        "(it replicates to standbys), or remove health.postgres");
    EXPECT_EQ(
        server_refusal(
            R"(connection to server on socket "/s" failed: FATAL:  Peer authentication failed for user "tunneld")"),
        "health.postgres: peer authentication failed for role tunneld: connect as the OS user of "
        "the same name "
        "(tunneld), or allow it in pg_hba.conf");
    EXPECT_EQ(server_refusal("ERROR:  permission denied for function pg_current_wal_lsn"),
              "health.postgres: postgres refused the check: ERROR:  permission denied for function "
              "pg_current_wal_lsn");
}

TEST(Health, ReadinessFailsOnExpiredCertFirewallStoppingAndWedgedLoops) {
    auto expired = healthy();
    expired.cert_not_after = expired.now - 1;
    EXPECT_EQ(status_of(expired, "/readiness"), 503u);
    auto fw = healthy();
    fw.firewall.enabled = true;
    fw.firewall.table = "tunneld";
    EXPECT_EQ(status_of(fw, "/readiness"), 503u);
    fw.firewall.applied = true;
    EXPECT_EQ(status_of(fw, "/readiness"), 200u);
    auto stopping = healthy();
    stopping.stopping = true;
    EXPECT_EQ(status_of(stopping, "/readiness"), 503u);
    auto wedged = healthy();
    wedged.workers_alive = false;
    EXPECT_EQ(status_of(wedged, "/liveness"), 503u);
}

TEST(Health, PrimaryAndReplicaFollowTheRole) {
    auto s = healthy();
    s.backend.postgres = primary_pg();
    EXPECT_EQ(status_of(s, "/primary"), 200u);
    for (auto alias : {"/", "/master", "/leader", "/read-write", "/read-only"})
        EXPECT_EQ(status_of(s, alias), 200u) << alias;
    EXPECT_EQ(status_of(s, "/replica"), 503u);
    EXPECT_NE(handle_request(s, "/replica").body.find("not in recovery"), std::string::npos);
}

TEST(Health, ReplicaNeedsAStreamingReceiver) {
    auto s = healthy();
    s.backend.postgres->receiver_status = "";
    auto r = handle_request(s, "/replica");
    EXPECT_EQ(r.status, 503u);
    EXPECT_NE(r.body.find("WAL receiver is not running"), std::string::npos) << r.body;
    EXPECT_EQ(status_of(s, "/read-only"), 503u);
}

TEST(Health, PrimaryAndReplicaNeedHealthPostgres) {
    auto s = healthy();
    s.postgres_configured = false;
    s.backend.postgres.reset();
    EXPECT_EQ(status_of(s, "/primary"), 503u);
    EXPECT_EQ(status_of(s, "/replica"), 503u);
    EXPECT_NE(handle_request(s, "/primary").body.find("health.postgres is not set"),
              std::string::npos);
}

TEST(Health, ReplicaLagCountsFromThePrimarysPositionToReplay) {
    auto s = healthy();
    // Replay paused: received everything, replayed 32 MiB less; the primary is further on.
    s.backend.postgres = standby_pg("0/7000000", "0/5000000");
    s.peers[0].probe.peer_backend->postgres = primary_pg("0/7100000");
    ASSERT_EQ(replication_lag_bytes(s), 0x2100000u);
    EXPECT_EQ(status_of(s, "/replica"), 200u);  // no lag given: no limit
    EXPECT_EQ(status_of(s, "/replica?lag=64MB"), 200u);
    EXPECT_EQ(status_of(s, "/replica?lag=16MB"), 503u);
    EXPECT_NE(handle_request(s, "/replica?lag=16MB")
                  .body.find("replication lag 34603008 bytes > 16777216"),
              std::string::npos);
    // The peer's primary position is used only while the peer is up and a primary.
    s.peers[0].probe.up = false;
    EXPECT_EQ(replication_lag_bytes(s), 0x2000000u);
    s.peers[0].probe.up = true;
    s.peers[0].probe.peer_backend->postgres->in_recovery = true;
    EXPECT_EQ(replication_lag_bytes(s), 0x2000000u);
}

TEST(Health, ReplicaLagComparesThePrimaryAsItWasWhenThisStandbyWasSampled) {
    auto s = healthy();
    s.backend.postgres = standby_pg("0/5000000", "0/5000000");  // replayed all it received
    auto& probe = s.peers[0].probe;
    probe.peer_backend->postgres = primary_pg("0/D000000");
    // The primary was at 0/5000000 at 900 ms and 128 MiB further at 1100 ms.
    probe.primary_positions = {{900, 0x5000000}, {1100, 0xD000000}};
    s.backend.sampled_ms = 1000;  // before the burst: caught up
    EXPECT_EQ(replication_lag_bytes(s), 0u);
    EXPECT_EQ(status_of(s, "/replica?lag=16MB"), 200u);
    s.backend.sampled_ms = 1200;  // after it, and still at 0/5000000: 128 MiB behind
    EXPECT_EQ(replication_lag_bytes(s), 0x8000000u);
    EXPECT_EQ(status_of(s, "/replica?lag=16MB"), 503u);
    for (std::int64_t unknown : {0, 800}) {  // no moment, or older than all: the newest
        s.backend.sampled_ms = unknown;
        EXPECT_EQ(replication_lag_bytes(s), 0x8000000u) << unknown;
    }
}

TEST(Health, ReplicaLagSeconds) {
    auto s = healthy();
    s.backend.postgres->replay_delay_seconds = 12.5;
    EXPECT_EQ(status_of(s, "/replica?lag_seconds=30"), 200u);
    EXPECT_EQ(status_of(s, "/replica?lag_seconds=10"), 503u);
    EXPECT_EQ(status_of(s, "/replica?lag_seconds=ten"), 400u);
}

TEST(Health, LagSizesAreParsedLikePatroni) {
    EXPECT_EQ(parse_size("1048576"), 1048576u);
    EXPECT_EQ(parse_size("16MB"), 16u << 20);
    EXPECT_EQ(parse_size("16mb"), 16u << 20);
    EXPECT_EQ(parse_size("1kB"), 1024u);
    EXPECT_EQ(parse_size("2GiB"), 2ull << 30);
    EXPECT_EQ(parse_size("1TB"), 1ull << 40);
    EXPECT_EQ(parse_size("0"), 0u);
    for (auto bad : {"", "MB", "16 MB", "-1", "16XB", "99999999999999999999", "16777216TB"})
        EXPECT_FALSE(parse_size(bad).has_value()) << bad;
    EXPECT_EQ(status_of(healthy(), "/replica?lag=16XB"), 400u);
}

TEST(Health, LsnParsing) {
    EXPECT_EQ(parse_lsn("0/0"), 0u);
    EXPECT_EQ(parse_lsn("16/B374D848"), 0x16B374D848u);
    EXPECT_EQ(parse_lsn("FFFFFFFF/FFFFFFFF"), UINT64_MAX);
    for (auto bad : {"", "/", "1/", "/1", "G/0", "0/100000000", "1/2/3", "0x1/2"})
        EXPECT_FALSE(parse_lsn(bad).has_value()) << bad;
}

TEST(Health, UnknownPathsAndBadTargets) {
    auto s = healthy();
    EXPECT_EQ(status_of(s, "/nope"), 404u);
    EXPECT_EQ(status_of(s, "/readiness/extra"), 404u);
    EXPECT_EQ(status_of(s, "http://example.com/readiness"), 400u);  // not origin-form
    EXPECT_EQ(status_of(s, "/readiness?unknown=1"),
              200u);  // unknown parameters are ignored, as Patroni does
    EXPECT_EQ(status_of(s, "/replica?lag=%31%36MB"), 200u);  // percent-decoded: 16MB
}

TEST(Health, StatusJsonHasEverySection) {
    auto s = healthy();
    s.firewall.enabled = s.firewall.applied = true;
    s.firewall.table = "tunneld";
    s.firewall.drops[5432] = {3, 180};
    s.inbound_listen = {"0.0.0.0:8765"};
    s.traffic.push_back(TrafficView{Direction::outbound, "primary-1", "postgresql", 2, 5, 1000,
                                    2000, s.now - 5, "", 0});
    s.handshakes[{Direction::inbound, "unknown_ca"}] = 4;
    s.handshakes[{Direction::inbound, "ok"}] = 9;
    auto st = json::parse(render_status(s)).as_object();
    for (auto key : {"node", "version", "uptime_seconds", "tls", "inbound", "peers", "firewall",
                     "postgres", "backend"})
        EXPECT_TRUE(st.contains(key)) << key;
    EXPECT_EQ(st.at("uptime_seconds"), 60);
    EXPECT_EQ(st.at("tls").at("days_left"), 30);
    EXPECT_EQ(st.at("inbound").at("handshakes").at("failed").at("unknown_ca"), 4);
    EXPECT_EQ(st.at("inbound").at("handshakes").at("ok"), 9);
    const auto& peer = st.at("peers").at(0);
    EXPECT_EQ(peer.at("connections").at("active"), 2);
    EXPECT_EQ(peer.at("connections").at("bytes_sent"), 2000);
    EXPECT_EQ(peer.at("rtt_ms").at("smoothed"), 12.5);
    EXPECT_EQ(st.at("firewall").at("drops").at("5432").at("packets"), 3);
    EXPECT_EQ(st.at("postgres").at("role"), "replica");
    EXPECT_EQ(st.at("postgres").at("lag_bytes"), 0);
}

// Every sample belongs to a family announced by # TYPE before it, names and
// labels are valid, label values are escaped, and no series repeats.
TEST(Health, MetricsAreValidExposition) {
    auto s = healthy();
    s.firewall.enabled = s.firewall.applied = true;
    s.firewall.table = "tunneld";
    s.firewall.drops[8765] = {1, 60};
    s.traffic.push_back(TrafficView{Direction::inbound, "we\"ird\\peer\nname", "postgresql", 1, 1,
                                    10, 20, 0, "", 0});
    s.traffic.push_back(
        TrafficView{Direction::inbound, "primary-1", "patroni", 1, 4, 10, 20, 0, "", 0});
    add_services(s);
    s.handshakes[{Direction::outbound, "ok"}] = 3;
    auto text = render_metrics(s);
    std::istringstream in(text);
    std::string line, family;
    std::set<std::string> families, series;
    std::regex sample(
        R"re(([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? (-?[0-9.e+]+|NaN))re");
    while (std::getline(in, line)) {
        if (line.starts_with("# HELP ")) continue;
        if (line.starts_with("# TYPE ")) {
            std::istringstream t(line.substr(7));
            std::string type;
            t >> family >> type;
            EXPECT_TRUE(type == "gauge" || type == "counter") << line;
            EXPECT_TRUE(families.insert(family).second) << "family twice: " << family;
            continue;
        }
        std::smatch m;
        ASSERT_TRUE(std::regex_match(line, m, sample)) << line;
        EXPECT_EQ(m[1].str(), family) << line;
        EXPECT_TRUE(family.starts_with("tunneld_")) << line;
        EXPECT_TRUE(series.insert(line.substr(0, line.rfind(' '))).second)
            << "series twice: " << line;
    }
    EXPECT_NE(text.find(R"(peer="we\"ird\\peer\nname")"), std::string::npos);
    for (auto name :
         {"tunneld_peer_up{peer=\"primary-1\"} 1",
          "tunneld_handshakes_total{direction=\"outbound\",reason=\"ok\"} 3",
          "tunneld_firewall_dropped_packets_total{port=\"8765\"} 1",
          "tunneld_postgres_in_recovery 1", "tunneld_certificate_expiry_seconds 2592000",
          "tunneld_connections_total{peer=\"primary-1\",direction=\"inbound\",service=\"patroni\"} "
          "4",
          "tunneld_service_backend_up{service=\"patroni\"} 1",
          "tunneld_service_backend_up{service=\"etcd-peer\"} 0",
          "tunneld_peer_service_up{peer=\"primary-1\",service=\"patroni\"} 1",
          "tunneld_peer_service_up{peer=\"primary-1\",service=\"etcd-client\"} 0"})
        EXPECT_NE(text.find(name), std::string::npos) << name;
}

}  // namespace
}  // namespace tunneld
