// Partition safety as tables: the majority rule (route/quorum.hpp) and what a
// to: primary route decides with it (no_quorum, a primary promoted over,
// leader: patroni). The cluster: section is in cluster_config_test.cpp.
#include <gtest/gtest.h>

#include "tunneld/route/quorum.hpp"
#include "tunneld/route/route_choice.hpp"

#include <boost/json.hpp>

namespace tunneld {
namespace {

VoterView voter(const char* name, bool reachable, bool self = false, bool witness = false) {
    VoterView v;
    v.name = name;
    v.reachable = reachable;
    v.self = self;
    v.witness = witness;
    v.why = reachable ? "" : "no answer within 2s";
    return v;
}

TEST(Quorum, AStrictMajorityOfTheVoters) {
    struct Case {
        const char* what;
        std::vector<bool> reachable;  // one per voter
        bool met;
    } cases[] = {
        {"3 of 3", {true, true, true}, true},
        {"2 of 3", {true, true, false}, true},
        {"1 of 3 (the minority side)", {true, false, false}, false},
        {"0 of 3", {false, false, false}, false},
        {"2 of 4 (a tie is no majority)", {true, true, false, false}, false},
        {"3 of 4", {true, true, true, false}, true},
        {"1 of 2 (two voters, no witness)", {true, false}, false},
        {"2 of 2", {true, true}, true},
        {"1 of 1", {true}, true},
        {"3 of 5", {true, false, true, false, true}, true},
        {"2 of 5", {true, false, false, false, true}, false},
        {"no voters", {}, false},
    };
    for (const auto& c : cases) {
        std::vector<VoterView> voters;
        for (std::size_t i = 0; i < c.reachable.size(); ++i)
            voters.push_back(voter(("n" + std::to_string(i)).c_str(), c.reachable[i]));
        auto q = quorum_of(voters, true);
        EXPECT_EQ(q.met, c.met) << c.what << ": " << q.detail;
        EXPECT_EQ(q.voters, c.reachable.size()) << c.what;
        // quorum: none is met whatever is reachable.
        EXPECT_TRUE(quorum_of(voters, false).met) << c.what;
    }
}

TEST(Quorum, TheDetailNamesWhoIsReachedAndWhoIsNot) {
    auto q = quorum_of({voter("primary-1", true), voter("standby-1", false),
                        voter("standby-2", false), voter("app", true, true, true)},
                       true);
    EXPECT_FALSE(q.met);
    EXPECT_EQ(q.detail,
              "reaching 2 of 4 voters (primary-1, app), a majority needs 3; unreachable: "
              "standby-1 (no answer within 2s); standby-2 (no answer within 2s)");
    q = quorum_of({voter("a", true, true), voter("b", true), voter("w", false, false, true)}, true);
    EXPECT_TRUE(q.met);
    EXPECT_EQ(q.detail, "reaching 2 of 3 voters (a, b); unreachable: w (no answer within 2s)");
}

PostgresState pg(bool primary, std::int64_t timeline = 1) {
    PostgresState p;
    p.up = p.answered = true;
    p.in_recovery = !primary;
    p.current_lsn = primary ? "0/5000000" : "";
    p.receive_lsn = p.replay_lsn = primary ? "" : "0/5000000";
    p.receiver_status = primary ? "" : "streaming";
    p.timeline = timeline;
    return p;
}

RouteCandidate node(const char* name, bool reachable, std::optional<PostgresState> p) {
    RouteCandidate c;
    c.name = name;
    c.reachable = reachable;
    c.unreachable_why = reachable ? "" : "no answer within 2s";
    if (reachable) c.postgres = std::move(p);
    return c;
}

RouteConfig primary_route() {
    RouteConfig r;
    r.local = Endpoint{"127.0.0.1", 6432, {}};
    r.to = RouteConfig::To::primary;
    return r;
}

// The issue's partition: {primary-1, app} | {standby-1, standby-2}, standby-1
// promoted on the majority side.
TEST(Quorum, TheMinoritySideRefusesAndClosesWhileTheMajoritySideFollows) {
    auto route = primary_route();
    // The app host on the minority side: the old primary is the only one in sight.
    std::vector<RouteCandidate> minority{node("primary-1", true, pg(true)),
                                         node("standby-1", false, {}),
                                         node("standby-2", false, {})};
    auto q = quorum_of(
        {voter("primary-1", true), voter("standby-1", false), voter("standby-2", false)}, true);
    auto c = choose_route(route, minority, &q);
    EXPECT_FALSE(c.target);
    EXPECT_EQ(c.refusal, "no_quorum");
    EXPECT_TRUE(c.close_live);
    EXPECT_EQ(c.detail.rfind("no quorum: reaching 1 of 3 voters (primary-1)", 0), 0u) << c.detail;
    // Without the rule (quorum: none) it would go on writing there.
    auto none = quorum_of(q.members, false);
    EXPECT_EQ(choose_route(route, minority, &none).target.value_or(""), "primary-1");
    EXPECT_EQ(choose_route(route, minority).target.value_or(""), "primary-1");

    // The majority side: standby-1 promoted, the old primary unreachable.
    std::vector<RouteCandidate> majority{node("primary-1", false, {}),
                                         node("standby-1", true, pg(true, 2)),
                                         node("standby-2", true, pg(false, 2))};
    auto mq = quorum_of(
        {voter("primary-1", false), voter("standby-1", true), voter("standby-2", true)}, true);
    c = choose_route(route, majority, &mq);
    EXPECT_EQ(c.target.value_or(""), "standby-1");
    EXPECT_FALSE(c.close_live);
}

// Reachability that comes and goes: each decision follows the view of the
// moment, and a lost majority is never carried over into a write.
TEST(Quorum, FlappingReachabilityDecidesEveryRoundAfresh) {
    auto route = primary_route();
    struct Round {
        bool s1, s2;         // standby-1, standby-2 reachable from the app host
        const char* target;  // "" = refused (no_quorum)
    } rounds[] = {
        {true, true, "primary-1"},  {false, true, "primary-1"}, {false, false, ""},
        {true, false, "primary-1"}, {false, false, ""},         {false, true, "primary-1"},
        {false, false, ""},         {true, true, "primary-1"},
    };
    std::string last = "primary-1";
    for (std::size_t i = 0; i < std::size(rounds); ++i) {
        const auto& r = rounds[i];
        std::vector<RouteCandidate> cands{node("primary-1", true, pg(true)),
                                          node("standby-1", r.s1, pg(false)),
                                          node("standby-2", r.s2, pg(false))};
        auto q = quorum_of(
            {voter("primary-1", true), voter("standby-1", r.s1), voter("standby-2", r.s2)}, true);
        auto c = choose_route(route, cands, &q);
        EXPECT_EQ(c.target.value_or(""), r.target) << "round " << i << ": " << c.detail;
        EXPECT_EQ(c.close_live, !c.target) << "round " << i;
        EXPECT_EQ(c.refusal, c.target ? "" : "no_quorum") << "round " << i;
    }
}

TEST(Quorum, APrimaryPromotedOverIsNotRoutedEvenWithAMajority) {
    // A partial heal: the app reaches the old primary and standby-2 (now on
    // timeline 2, following the new primary standby-1, which is still cut off).
    auto route = primary_route();
    std::vector<RouteCandidate> cands{node("primary-1", true, pg(true, 1)),
                                      node("standby-1", false, {}),
                                      node("standby-2", true, pg(false, 2))};
    auto q = quorum_of(
        {voter("primary-1", true), voter("standby-1", false), voter("standby-2", true)}, true);
    ASSERT_TRUE(q.met);
    auto c = choose_route(route, cands, &q);
    EXPECT_FALSE(c.target);
    EXPECT_EQ(c.refusal, "no_primary");
    EXPECT_TRUE(c.close_live);
    EXPECT_EQ(c.detail,
              "primary-1 reports primary on timeline 1, but standby-2 is on timeline 2: a newer "
              "primary was promoted elsewhere");
    EXPECT_EQ(c.candidates[0].why_not, "timeline 1 superseded (standby-2 is on 2)");
    // Two primaries stay a split brain whatever their timelines.
    cands[1] = node("standby-1", true, pg(true, 2));
    c = choose_route(route, cands, &q);
    EXPECT_TRUE(c.split_brain);
    // An unknown timeline (0) decides nothing.
    cands = {node("primary-1", true, pg(true, 0)), node("standby-2", true, pg(false, 2))};
    EXPECT_EQ(choose_route(route, cands, &q).target.value_or(""), "primary-1");
}

// A replica cut off from every primary (the minority side) cannot have its lag
// measured: under max_lag it is not eligible, however current it looks to itself.
TEST(Quorum, AReplicaWithNoPrimaryInSightHasNoMeasurableLag) {
    RouteConfig r = primary_route();
    r.to = RouteConfig::To::replica;
    r.max_lag = 16u << 20;
    std::vector<RouteCandidate> minority{node("primary-1", false, {}),
                                         node("standby-1", true, pg(false)),
                                         node("standby-2", false, {})};
    auto c = choose_route(r, minority);
    EXPECT_FALSE(c.target);
    EXPECT_EQ(c.candidates[1].why_not, "lag unknown: no primary in sight to measure it against");
    // With the primary in sight, the same replica qualifies.
    minority[0] = node("primary-1", true, pg(true));
    EXPECT_EQ(choose_route(r, minority).target.value_or(""), "standby-1");
    // Without max_lag any streaming replica qualifies, as before.
    r.max_lag.reset();
    minority[0] = node("primary-1", false, {});
    EXPECT_EQ(choose_route(r, minority).target.value_or(""), "standby-1");
}

TEST(Quorum, ReplicaRoutesIgnoreTheQuorum) {
    RouteConfig r = primary_route();
    r.to = RouteConfig::To::replica;
    std::vector<RouteCandidate> cands{node("primary-1", false, {}),
                                      node("standby-1", true, pg(false)),
                                      node("standby-2", false, {})};
    auto q = quorum_of(
        {voter("primary-1", false), voter("standby-1", true), voter("standby-2", false)}, true);
    EXPECT_EQ(choose_route(r, cands, &q).target.value_or(""), "standby-1");
}

RouteCandidate led(const char* name, bool primary, std::optional<PatroniLeader> patroni,
                   std::int64_t timeline = 2) {
    auto c = node(name, true, pg(primary, timeline));
    c.patroni = std::move(patroni);
    return c;
}

PatroniLeader says(bool leader) {
    PatroniLeader p;
    p.answered = true;
    p.leader = leader;
    return p;
}

// routes[].leader: patroni: the primary is the node whose Patroni holds the
// leader lock AND whose postgres is not in recovery.
TEST(PatroniLeaderRoute, BothPatroniAndPostgresMustSayPrimary) {
    auto route = primary_route();
    route.leader = RouteConfig::Leader::patroni;
    PatroniLeader down;
    down.error = "Patroni's REST API at 127.0.0.1:8008: Connection refused";
    struct Case {
        const char* what;
        std::vector<RouteCandidate> candidates;
        const char* target;  // "" = refused
        const char* why_not_0;
    } cases[] = {
        {"the leader",
         {led("node-1", true, says(true)), led("node-2", false, says(false))},
         "node-1",
         ""},
        {"an old primary whose Patroni lost the lock is passed over, no split brain",
         {led("node-1", true, says(false)), led("node-2", true, says(true))},
         "node-2",
         "not in recovery, but its Patroni does not hold the leader lock"},
        {"no health.patroni there",
         {led("node-1", true, std::nullopt), led("node-2", false, says(false))},
         "",
         "not in recovery, but its Patroni's leader lock is unknown (no health.patroni there)"},
        {"Patroni not answering",
         {led("node-1", true, down), led("node-2", false, says(false))},
         "",
         "not in recovery, but Patroni's REST API at 127.0.0.1:8008: Connection refused"},
        {"the lock holder still in recovery (promoting)",
         {led("node-1", false, says(true)), led("node-2", false, says(false))},
         "",
         "in recovery (a standby)"},
    };
    for (const auto& c : cases) {
        auto choice = choose_route(route, c.candidates);
        EXPECT_EQ(choice.target.value_or(""), c.target) << c.what << ": " << choice.detail;
        EXPECT_FALSE(choice.split_brain) << c.what;
        EXPECT_EQ(choice.candidates[0].why_not, c.why_not_0) << c.what;
    }
    // Two lock holders that are both primary (a DCS that lost its mind) stay a split brain.
    auto two =
        choose_route(route, {led("node-1", true, says(true)), led("node-2", true, says(true))});
    EXPECT_TRUE(two.split_brain);
    // Without leader: patroni, postgres alone decides (the old primary makes a split brain).
    route.leader = RouteConfig::Leader::postgres;
    EXPECT_TRUE(
        choose_route(route, {led("node-1", true, says(false)), led("node-2", true, says(true))})
            .split_brain);
}

TEST(PatroniLeaderRoute, ThePongCarriesIt_APeerCannotClaimLeaderWithoutAnAnswer) {
    BackendState s;
    s.checked = true;
    s.patroni = says(true);
    auto back = backend_state_from_json(to_json(s));
    ASSERT_TRUE(back.patroni);
    EXPECT_TRUE(back.patroni->answered && back.patroni->leader);
    auto forged = backend_state_from_json(
        boost::json::parse(R"({"checked":true,"patroni":{"answered":false,"leader":true}})"));
    ASSERT_TRUE(forged.patroni);
    EXPECT_FALSE(forged.patroni->leader);
    auto junk = backend_state_from_json(boost::json::parse(R"({"checked":true,"patroni":7})"));
    EXPECT_FALSE(junk.patroni);
}

}  // namespace
}  // namespace tunneld
