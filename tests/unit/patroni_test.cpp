// Patroni REST API parity of the health endpoint's pure core: every path of
// Patroni 3's health checks on a primary, a sync standby, an async standby and
// a stopped postgres, compared with the codes Patroni documents for a node in
// that state; Patroni's body shape; the sync state a primary's pong carries.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <map>

#include "tunneld/health/patroni.hpp"
#include "tunneld/health/probe_messages.hpp"
#include "tunneld/health/routes.hpp"

namespace tunneld {
namespace {

namespace json = boost::json;

WalSender walsender(std::string peer, std::string sync_state) {
    WalSender w;
    w.pid = 4242;
    w.usename = "replicator";
    w.application_name = peer == "standby-1" ? "standby1" : "standby2";
    w.client_addr = "127.0.0.1";
    w.client_port = 40112;
    w.state = "streaming";
    w.sync_state = std::move(sync_state);
    w.sync_priority = w.sync_state == "sync" ? 1 : 0;
    w.sent_lsn = w.write_lsn = w.flush_lsn = w.replay_lsn = "0/5000000";
    w.peer = std::move(peer);
    return w;
}

Snapshot base(std::string node) {
    Snapshot s;
    s.node = std::move(node);
    s.version = "1.2.3";
    s.now = 1'000'000;
    s.listeners_up = true;
    s.cert_serial = "01";
    s.cert_not_after = s.now + 86400 * 30;
    s.backend_checked_by_config = s.postgres_configured = true;
    s.backend.checked = s.backend.reachable = true;
    return s;
}

Snapshot primary() {
    auto s = base("primary-1");
    PostgresState p;
    p.up = true;
    p.current_lsn = "0/5000000";
    p.server_version = 150018;
    p.timeline = 3;
    p.system_identifier = "7315000000000000001";
    p.postmaster_start_time = "2026-12-05 10:00:00+00";
    p.walsenders = {walsender("standby-1", "sync"), walsender("standby-2", "potential")};
    s.backend.postgres = p;
    return s;
}

// A standby of primary-1 whose pong lists this node's walsender as `sync_state`.
Snapshot standby(std::string sync_state, std::string replay = "0/5000000") {
    auto s = base("standby-1");
    PostgresState p;
    p.up = p.in_recovery = true;
    p.receive_lsn = "0/5000000";
    p.replay_lsn = std::move(replay);
    p.receiver_status = "streaming";
    p.server_version = 150018;
    p.timeline = 3;
    p.replay_timestamp = "2026-12-05 10:01:00+00";
    s.backend.postgres = p;
    PeerView peer;
    peer.name = "primary-1";
    peer.probe.probed = peer.probe.up = true;
    BackendState pb;
    pb.checked = pb.reachable = true;
    pb.postgres = primary().backend.postgres;
    pb.postgres->walsenders.clear();  // a pong carries none
    peer.probe.peer_backend = pb;
    if (!sync_state.empty()) peer.probe.my_walsender = walsender("standby-1", sync_state);
    s.peers.push_back(peer);
    return s;
}

Snapshot stopped() {
    auto s = standby("async");
    s.backend.reachable = false;
    s.backend.postgres = PostgresState{};
    s.backend.postgres->error = "connection refused";
    return s;
}

// Patroni 3.0.2 (api.py, do_GET) for a node of each kind: the leader with
// postgres running, a running replica (is_synchronous or not), and a node
// whose postgres is stopped. tunneld's /health and /readiness are its own
// (README: the differences) and are tested in health_test.cpp.
TEST(Patroni, EveryPathAndMethodAnswersWithPatronisCodes) {
    const std::map<std::string, Snapshot> nodes = {{"primary", primary()},
                                                   {"sync", standby("sync")},
                                                   {"async", standby("async")},
                                                   {"stopped", stopped()}};
    struct Row {
        const char* path;
        unsigned primary, sync, async, stopped;
    };
    const Row rows[] = {
        {"/", 200, 503, 503, 503},
        {"/primary", 200, 503, 503, 503},
        {"/master", 200, 503, 503, 503},
        {"/leader", 200, 503, 503, 503},
        {"/read-write", 200, 503, 503, 503},
        {"/standby-leader", 503, 503, 503, 503},
        {"/standby_leader", 503, 503, 503, 503},
        {"/replica", 503, 200, 200, 503},
        {"/replica?lag=16MB", 503, 200, 200, 503},
        {"/replica?replication_state=streaming", 503, 200, 200, 503},
        {"/read-only", 200, 200, 200, 503},
        {"/synchronous", 503, 200, 503, 503},
        {"/sync", 503, 200, 503, 503},
        {"/sync?lag=1MB", 503, 200, 503, 503},
        {"/asynchronous", 503, 503, 200, 503},
        {"/async", 503, 503, 200, 503},
        {"/async?lag=1MB", 503, 503, 200, 503},
        {"/read-only-sync", 200, 200, 503, 503},
        {"/read-only-synchronous", 200, 200, 503, 503},
        {"/patroni", 200, 200, 200, 200},
    };
    for (const auto& r : rows)
        for (const auto& [kind, want] : std::map<std::string, unsigned>{{"primary", r.primary},
                                                                        {"sync", r.sync},
                                                                        {"async", r.async},
                                                                        {"stopped", r.stopped}})
            EXPECT_EQ(handle_request(nodes.at(kind), r.path).status, want)
                << kind << " " << r.path << ": " << handle_request(nodes.at(kind), r.path).body;
}

TEST(Patroni, ThePrimarysBodyHasPatronisShape) {
    auto body = json::parse(handle_request(primary(), "/primary").body).as_object();
    EXPECT_EQ(body.at("state"), "running");
    EXPECT_EQ(body.at("role"), "master");  // Patroni 3's name for the primary
    EXPECT_EQ(body.at("server_version"), 150018);
    EXPECT_EQ(body.at("timeline"), 3);
    EXPECT_EQ(body.at("xlog").at("location"), 0x5000000);
    EXPECT_EQ(body.at("database_system_identifier"), "7315000000000000001");
    EXPECT_EQ(body.at("postmaster_start_time"), "2026-12-05 10:00:00+00");
    auto& rep = body.at("replication").as_array();
    ASSERT_EQ(rep.size(), 2u);
    EXPECT_EQ(rep[0].at("application_name"), "standby1");
    EXPECT_EQ(rep[0].at("sync_state"), "sync");
    EXPECT_EQ(rep[0].at("state"), "streaming");
    EXPECT_EQ(rep[0].at("client_addr"), "127.0.0.1");
    EXPECT_EQ(rep[0].at("usename"), "replicator");
    EXPECT_EQ(rep[0].at("sync_priority"), 1);
    EXPECT_EQ(body.at("patroni").at("version"), "1.2.3");
    EXPECT_EQ(body.at("tunneld").at("ok"), true);
    EXPECT_EQ(body.at("tunneld").at("check"), "primary");
}

TEST(Patroni, AStandbysBodyHasPatronisShape) {
    auto body =
        json::parse(handle_request(standby("sync", "0/4FFFF00"), "/replica").body).as_object();
    EXPECT_EQ(body.at("role"), "replica");
    EXPECT_EQ(body.at("xlog").at("received_location"), 0x5000000);
    EXPECT_EQ(body.at("xlog").at("replayed_location"), 0x4FFFF00);
    EXPECT_EQ(body.at("xlog").at("replayed_timestamp"), "2026-12-05 10:01:00+00");
    EXPECT_EQ(body.at("xlog").at("paused"), false);
    EXPECT_EQ(body.at("sync_standby"), true);  // as Patroni marks a synchronous standby
    EXPECT_EQ(body.at("tunneld").at("sync_state"), "sync");
    EXPECT_EQ(body.at("tunneld").at("lag_bytes"), 0x100);
    EXPECT_FALSE(json::parse(handle_request(standby("async"), "/replica").body)
                     .as_object()
                     .contains("sync_standby"));
    auto down = json::parse(handle_request(stopped(), "/replica").body).as_object();
    EXPECT_EQ(down.at("state"), "stopped");
    EXPECT_EQ(down.at("role"), "unknown");
    EXPECT_FALSE(down.contains("xlog"));
}

TEST(Patroni, LagAppliesToReplicaReadOnlySyncAsyncAndReadiness) {
    auto behind = standby("sync", "0/4000000");  // 16 MB behind the primary's 0/5000000
    EXPECT_EQ(handle_request(behind, "/replica?lag=1MB").status, 503u);
    EXPECT_EQ(handle_request(behind, "/read-only?lag=1MB").status, 503u);
    EXPECT_EQ(handle_request(behind, "/sync?lag=1MB").status, 503u);
    EXPECT_EQ(handle_request(behind, "/read-only-sync?lag=1MB").status, 503u);
    EXPECT_EQ(handle_request(behind, "/readiness?lag=1MB").status, 503u);
    EXPECT_EQ(handle_request(behind, "/readiness?lag=32MB").status, 200u);
    EXPECT_EQ(handle_request(behind, "/sync?lag=32MB").status, 200u);
    EXPECT_EQ(handle_request(primary(), "/readiness?lag=1MB").status, 200u);  // no lag on a primary
    EXPECT_EQ(handle_request(behind, "/replica?lag=lots").status, 400u);
}

TEST(Patroni, SyncNeedsThePrimarysWordAboutThisStandbysOwnWalsender) {
    // No walsender reported for this tunnel (a unix-socket backend on the
    // primary, or streaming around tunneld): neither sync nor async, and why.
    auto unknown = standby("");
    EXPECT_EQ(handle_request(unknown, "/sync").status, 503u);
    EXPECT_EQ(handle_request(unknown, "/async").status, 503u);
    EXPECT_EQ(handle_request(unknown, "/replica").status, 200u);
    auto body = json::parse(handle_request(unknown, "/sync").body);
    EXPECT_NE(std::string(body.at("tunneld").at("problems").at(0).as_string())
                  .find("no primary peer reports a walsender"),
              std::string::npos);
    EXPECT_EQ(handle_request(standby("quorum"), "/sync").status, 200u);
    EXPECT_EQ(handle_request(standby("potential"), "/async").status, 200u);
    // The primary's word counts only while it is reachable and still primary.
    auto gone = standby("sync");
    gone.peers[0].probe.up = false;
    EXPECT_EQ(handle_request(gone, "/sync").status, 503u);
    auto demoted = standby("sync");
    demoted.peers[0].probe.peer_backend->postgres->in_recovery = true;
    EXPECT_EQ(handle_request(demoted, "/sync").status, 503u);
}

TEST(Patroni, ReplicationStateAndTagFilters) {
    auto archive = standby("async");
    archive.backend.postgres->receiver_status = "";
    EXPECT_EQ(handle_request(archive, "/replica").status, 503u);
    EXPECT_EQ(handle_request(archive, "/replica?replication_state=in%20archive%20recovery").status,
              200u);
    EXPECT_EQ(
        handle_request(standby("async"), "/replica?replication_state=in+archive+recovery").status,
        503u);
    EXPECT_EQ(handle_request(standby("async"), "/replica?replication_state=sleeping").status, 400u);

    auto tagged = standby("async");
    tagged.tags = {{"dc", "fra"}};
    EXPECT_EQ(handle_request(tagged, "/replica?tag_dc=fra").status, 200u);
    EXPECT_EQ(handle_request(tagged, "/replica?tag_dc=ams").status, 503u);
    EXPECT_EQ(handle_request(tagged, "/replica?tag_rack=1").status, 503u);  // not set: 503
    EXPECT_EQ(handle_request(tagged, "/read-only?tag_dc=fra").status, 200u);
    auto p = primary();
    EXPECT_EQ(handle_request(p, "/primary?tag_dc=ams").status, 200u);  // ignored on leader paths
    EXPECT_EQ(handle_request(p, "/read-only?tag_dc=ams").status, 503u);
    tagged.tags["noloadbalance"] = "true";
    EXPECT_EQ(handle_request(tagged, "/replica").status, 503u);
    EXPECT_EQ(json::parse(handle_request(tagged, "/replica").body).at("tags").at("dc"), "fra");
}

TEST(Patroni, APongTellsEachStandbyItsOwnWalsenderOnly) {
    auto p = primary();
    const auto* mine = walsender_of(p.backend, "standby-2");
    ASSERT_NE(mine, nullptr);
    auto line = make_pong(5, "primary-1", p.backend, mine);
    EXPECT_EQ(line.find("standby-1"), std::string::npos) << line;  // not the other's row
    auto pong = parse_pong(line.substr(0, line.size() - 1), 5);
    ASSERT_TRUE(pong && pong->you);
    EXPECT_EQ(pong->you->sync_state, "potential");
    EXPECT_EQ(pong->you->application_name, "standby2");
    EXPECT_TRUE(pong->backend.postgres->walsenders.empty());
    EXPECT_EQ(pong->backend.postgres->timeline, 3);
    EXPECT_EQ(walsender_of(p.backend, "app"), nullptr);
    EXPECT_EQ(walsender_of(p.backend, ""), nullptr);
    // A streaming walsender wins over a base backup's of the same peer.
    auto backup = walsender("standby-1", "async");
    backup.state = "backup";
    p.backend.postgres->walsenders.insert(p.backend.postgres->walsenders.begin(), backup);
    EXPECT_EQ(walsender_of(p.backend, "standby-1")->state, "streaming");
}

TEST(Patroni, StatusAndMetricsNameEachWalsendersPeer) {
    auto p = primary();
    p.backend.postgres->walsenders[0].replay_lsn = "0/4F00000";  // 1 MB behind
    p.backend.postgres->walsenders[0].replay_lag = 0.25;
    auto text = render_metrics(p);
    EXPECT_NE(text.find("tunneld_replication_lag_bytes{peer=\"standby-1\",application_name="
                        "\"standby1\",kind=\"replay\"} 1048576"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("tunneld_replication_lag_seconds{peer=\"standby-1\",application_name="
                        "\"standby1\",kind=\"replay\"} 0.25"),
              std::string::npos);
    EXPECT_EQ(text.find("tunneld_replication_lag_seconds{peer=\"standby-2\""), std::string::npos)
        << "NULL lag is no sample";
    EXPECT_NE(text.find("tunneld_replication_walsender{peer=\"standby-2\",application_name="
                        "\"standby2\",state=\"streaming\",sync_state=\"potential\"} 1"),
              std::string::npos);
    auto st = json::parse(render_status(p));
    const auto& row = st.at("postgres").at("replication").at(0);
    EXPECT_EQ(row.at("peer"), "standby-1");
    EXPECT_EQ(row.at("sync_state"), "sync");
    EXPECT_EQ(row.at("lag_bytes").at("replay"), 1048576);
    EXPECT_EQ(row.at("lag_bytes").at("sent"), 0);
    EXPECT_EQ(row.at("lag_seconds").at("replay"), 0.25);
    EXPECT_TRUE(row.at("lag_seconds").at("write").is_null());

    auto sync = standby("sync");
    EXPECT_NE(render_metrics(sync).find("tunneld_postgres_sync_standby{sync_state=\"sync\"} 1"),
              std::string::npos);
    EXPECT_EQ(json::parse(render_status(sync)).at("postgres").at("sync_state"), "sync");
    EXPECT_NE(render_metrics(standby("async"))
                  .find("tunneld_postgres_sync_standby{sync_state="
                        "\"async\"} 0"),
              std::string::npos);
}

}  // namespace
}  // namespace tunneld
