// How a route shows in /status, /metrics and /health.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "tunneld/health/routes.hpp"

namespace tunneld {
namespace {

Snapshot with_route(bool split_brain) {
    Snapshot s;
    s.node = "app";
    s.version = "test";
    s.now = 1'000'000;
    s.started_at = s.now - 60;
    s.listeners_up = true;
    s.cert_serial = "01AB";
    s.cert_not_after = s.now + 30 * 86400;
    RouteView r;
    r.name = "127.0.0.1:6432";
    r.to = "primary";
    CandidateView a{"primary-1", false, RouteRole::primary, true, !split_brain, std::nullopt, "",
                    2,           true};
    CandidateView b{"standby-1",
                    false,
                    split_brain ? RouteRole::primary : RouteRole::replica,
                    true,
                    false,
                    std::uint64_t{4096},
                    split_brain ? "split brain" : "in recovery (a standby)",
                    0,
                    std::nullopt};
    r.candidates = {a, b};
    if (split_brain) {
        r.split_brain = true;
        r.refusal = "no_primary";
        r.detail = "split brain: primary-1 and standby-1 both report primary";
        r.refused = 3;
    } else {
        r.target = "primary-1";
        r.connections = 2;
    }
    r.switches = 1;
    r.last_switch = RouteSwitch{s.now - 5, "standby-1", "primary-1", "primary-1 reports primary"};
    s.routes.push_back(r);
    return s;
}

TEST(RouteStatus, StatusJsonHasTheRouteWithCandidatesAndLastSwitch) {
    auto v = boost::json::parse(render_status(with_route(false)));
    const auto& r = v.at("routes").at(0);
    EXPECT_EQ(r.at("local"), "127.0.0.1:6432");
    EXPECT_EQ(r.at("to"), "primary");
    EXPECT_EQ(r.at("target"), "primary-1");
    EXPECT_EQ(r.at("connections"), 2);
    EXPECT_EQ(r.at("candidates").at(0).at("role"), "primary");
    EXPECT_EQ(r.at("candidates").at(1).at("lag_bytes"), 4096);
    EXPECT_EQ(r.at("candidates").at(1).at("why_not"), "in recovery (a standby)");
    EXPECT_EQ(r.at("last_switch").at("from"), "standby-1");
    EXPECT_EQ(r.at("last_switch").at("cause"), "primary-1 reports primary");
    EXPECT_EQ(r.at("candidates").at(0).at("patroni_leader"), true);
    EXPECT_TRUE(r.at("candidates").at(1).at("patroni_leader").is_null());
}

TEST(RouteStatus, SplitBrainIsAHealthProblemAMetricAndANullTarget) {
    auto s = with_route(true);
    auto v = boost::json::parse(render_status(s));
    EXPECT_TRUE(v.at("routes").at(0).at("target").is_null());
    EXPECT_EQ(v.at("routes").at(0).at("split_brain"), true);
    auto health = handle_request(s, "/health");
    EXPECT_EQ(health.status, 503u);
    EXPECT_NE(
        health.body.find("route 127.0.0.1:6432 (to primary) refuses (no_primary): split brain: "
                         "primary-1 and standby-1 both report primary"),
        std::string::npos)
        << health.body;
    EXPECT_EQ(handle_request(s, "/readiness").status, 200u);  // the tunnel itself is fine
    auto m = render_metrics(s);
    EXPECT_NE(m.find("tunneld_route_split_brain{route=\"127.0.0.1:6432\"} 1"), std::string::npos)
        << m;
    EXPECT_NE(m.find("tunneld_route_candidates{route=\"127.0.0.1:6432\",role=\"primary\"} 2"),
              std::string::npos)
        << m;
    EXPECT_NE(
        m.find(
            "tunneld_route_target{route=\"127.0.0.1:6432\",to=\"primary\",target=\"primary-1\"} 0"),
        std::string::npos)
        << m;
    EXPECT_NE(m.find("tunneld_route_refused_total{route=\"127.0.0.1:6432\"} 3"), std::string::npos);
}

TEST(RouteStatus, ARoutingRouteIsHealthyAndItsTargetIsOne) {
    auto s = with_route(false);
    EXPECT_EQ(handle_request(s, "/health").status, 200u);
    auto m = render_metrics(s);
    EXPECT_NE(
        m.find(
            "tunneld_route_target{route=\"127.0.0.1:6432\",to=\"primary\",target=\"primary-1\"} 1"),
        std::string::npos)
        << m;
    EXPECT_NE(m.find("tunneld_route_split_brain{route=\"127.0.0.1:6432\"} 0"), std::string::npos);
}

}  // namespace
}  // namespace tunneld
