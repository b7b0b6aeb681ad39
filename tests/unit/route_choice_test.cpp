// Route choice as a table: which node a route picks from what the probes and
// the backend monitor report, and why it refuses.
#include <gtest/gtest.h>

#include "tunneld/route/route_choice.hpp"

namespace tunneld {
namespace {

PostgresState primary_pg(const char* lsn = "0/5000000") {
    PostgresState pg;
    pg.up = pg.answered = true;
    pg.current_lsn = lsn;
    return pg;
}

PostgresState standby_pg(const char* replay, const char* status = "streaming") {
    PostgresState pg;
    pg.up = pg.answered = true;
    pg.in_recovery = true;
    pg.receive_lsn = replay;
    pg.replay_lsn = replay;
    pg.receiver_status = status;
    return pg;
}

RouteCandidate node(const char* name, std::optional<PostgresState> pg, bool reachable = true,
                    std::size_t connections = 0) {
    RouteCandidate c;
    c.name = name;
    c.reachable = reachable;
    c.unreachable_why = reachable ? "" : "Connection refused";
    c.postgres = std::move(pg);
    c.connections = connections;
    return c;
}

RouteConfig to(RouteConfig::To t, std::optional<std::uint64_t> max_lag = std::nullopt) {
    RouteConfig r;
    r.local = Endpoint{"127.0.0.1", 6432, {}};
    r.to = t;
    r.max_lag = max_lag;
    return r;
}

TEST(RouteChoice, PrimaryIsTheOneNodeNotInRecovery) {
    auto c =
        choose_route(to(RouteConfig::To::primary),
                     {node("primary-1", primary_pg()), node("standby-1", standby_pg("0/5000000"))});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "primary-1");
    EXPECT_FALSE(c.target_is_self);
    EXPECT_FALSE(c.split_brain);
    EXPECT_EQ(c.candidates[0].role, RouteRole::primary);
    EXPECT_EQ(c.candidates[1].role, RouteRole::replica);
    EXPECT_EQ(c.candidates[1].why_not, "in recovery (a standby)");
}

TEST(RouteChoice, ThisNodeIsACandidateAndCanBeThePrimary) {
    auto self = node("standby-1", primary_pg());  // promoted
    self.self = true;
    auto c =
        choose_route(to(RouteConfig::To::primary), {node("primary-1", std::nullopt, false), self});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-1");
    EXPECT_TRUE(c.target_is_self);
}

TEST(RouteChoice, TwoPrimariesAreASplitBrainAndNothingIsRouted) {
    auto c =
        choose_route(to(RouteConfig::To::primary),
                     {node("primary-1", primary_pg("0/9000000")), node("standby-1", primary_pg()),
                      node("standby-2", standby_pg("0/5000000"))});
    EXPECT_FALSE(c.target);
    EXPECT_TRUE(c.split_brain);
    EXPECT_EQ(c.refusal, "no_primary");
    EXPECT_EQ(c.detail, "split brain: primary-1 and standby-1 both report primary");
    for (const auto& v : c.candidates) EXPECT_FALSE(v.eligible) << v.name;
}

TEST(RouteChoice, NoPrimarySaysWhyEachNodeIsNot) {
    PostgresState down;
    down.error = "connection refused";
    auto c = choose_route(to(RouteConfig::To::primary),
                          {node("primary-1", std::nullopt, false),
                           node("standby-1", standby_pg("0/1")), node("standby-2", down)});
    EXPECT_FALSE(c.target);
    EXPECT_FALSE(c.split_brain);
    EXPECT_EQ(c.refusal, "no_primary");
    EXPECT_EQ(c.detail,
              "no node reports primary (primary-1 unreachable: Connection refused; standby-1 in "
              "recovery (a standby); standby-2 its postgres is down: connection refused)");
}

TEST(RouteChoice, AnUnreachablePrimaryDoesNotCountTowardsASplitBrain) {
    // The old primary partitioned away still says primary in its last pong:
    // only reachable nodes vote.
    auto c = choose_route(to(RouteConfig::To::primary), {node("primary-1", primary_pg(), false),
                                                         node("standby-1", primary_pg())});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-1");
}

TEST(RouteChoice, NoPrimaryIsPickedBeforeEveryNodeAnsweredOnce) {
    // At start, the one node heard from says primary, but the other could too.
    auto unheard = node("standby-1", std::nullopt, false);
    unheard.known = false;
    auto c = choose_route(to(RouteConfig::To::primary), {node("primary-1", primary_pg()), unheard});
    EXPECT_FALSE(c.target);
    EXPECT_EQ(c.refusal, "no_primary");
    EXPECT_EQ(c.detail, "waiting for a first answer from standby-1");
    // Reads need no such vote: a replica is never a second primary.
    auto r =
        choose_route(to(RouteConfig::To::replica), {node("standby-2", standby_pg("0/1")), unheard});
    ASSERT_TRUE(r.target);
}

TEST(RouteChoice, ReplicaPicksTheStreamingOneWithFewestConnections) {
    auto c = choose_route(to(RouteConfig::To::replica, 1 << 20),
                          {node("primary-1", primary_pg("0/5000000")),
                           node("standby-1", standby_pg("0/5000000"), true, 3),
                           node("standby-2", standby_pg("0/4F00000"), true, 1)});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-2");
    EXPECT_EQ(c.candidates[0].why_not, "a primary");
    EXPECT_EQ(c.candidates[2].lag, 0x100000u);  // 1 MB behind primary-1's current LSN
    EXPECT_TRUE(c.candidates[1].eligible && c.candidates[2].eligible);
}

TEST(RouteChoice, ReplicaOverMaxLagOrNotStreamingIsLeftOut) {
    auto c = choose_route(to(RouteConfig::To::replica, 1 << 20),
                          {node("primary-1", primary_pg("0/5000000")),
                           node("standby-1", standby_pg("0/4000000"), true, 0),
                           node("standby-2", standby_pg("0/5000000", "catchup"), true, 0),
                           node("standby-3", standby_pg("0/5000000"), true, 7)});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-3");
    EXPECT_EQ(c.candidates[1].why_not, "lag 16 MB > 1 MB");
    EXPECT_EQ(c.candidates[2].why_not, "WAL receiver catchup");
}

TEST(RouteChoice, NoReplicaRefusesWithReasons) {
    auto c = choose_route(
        to(RouteConfig::To::replica, 1 << 20),
        {node("primary-1", primary_pg("0/5000000")), node("standby-1", standby_pg("0/4000000"))});
    EXPECT_FALSE(c.target);
    EXPECT_EQ(c.refusal, "no_replica");
    EXPECT_EQ(c.detail, "no replica qualifies (primary-1 a primary; standby-1 lag 16 MB > 1 MB)");
}

TEST(RouteChoice, APeersGarbagePositionsNeverQualifyUnderMaxLag) {
    // What a peer's pong says is only data: an LSN that does not parse gives an
    // unknown lag (left out under max_lag), never a wrap-around or a crash.
    auto liar = standby_pg("not/an/lsn");
    liar.receive_lsn = "FFFFFFFF/FFFFFFFF";
    auto c = choose_route(to(RouteConfig::To::replica, 1 << 20),
                          {node("primary-1", primary_pg("zz")), node("standby-1", liar)});
    EXPECT_FALSE(c.target);
    EXPECT_EQ(c.candidates[1].why_not, "lag unknown");
    EXPECT_FALSE(lag_behind(liar, 0, {}));
    // A primary whose position is garbage does not make an honest replica's lag up.
    auto honest = choose_route(
        to(RouteConfig::To::replica, 1 << 20),
        {node("primary-1", primary_pg("zz")), node("standby-2", standby_pg("0/5000000"))});
    ASSERT_TRUE(honest.target);
    EXPECT_EQ(honest.candidates[1].lag, 0u);
}

RouteCandidate sampled(RouteCandidate c, std::int64_t at_ms) {
    c.sampled_ms = at_ms;
    return c;
}

TEST(RouteChoice, AReplicaIsComparedWithThePrimaryAtTheMomentItWasSampled) {
    // The primary wrote 10 MB at t=1300; standby-1 was sampled at t=1200, when
    // it had replayed all there was: not lag. standby-2, sampled at t=1400, has
    // not replayed the 10 MB: lag. (Seen in CI before: a fresh primary sample
    // against a replica's older one refused every read for one probe round.)
    PrimaryPositions positions;
    auto primary = [](const char* lsn, std::int64_t at) {
        return sampled(node("primary-1", primary_pg(lsn)), at);
    };
    positions.record({primary("0/1000000", 1000)});
    positions.record({primary("0/1000000", 1000)});  // the same sample again: kept once
    std::vector<RouteCandidate> now{primary("0/1A00000", 1300),
                                    sampled(node("standby-1", standby_pg("0/1000000")), 1200),
                                    sampled(node("standby-2", standby_pg("0/1000000")), 1400)};
    positions.record(now);
    positions.attach(now);
    ASSERT_EQ(now[0].positions.size(), 2u);
    EXPECT_EQ(now[1].positions.size(), 0u);  // only primaries carry positions
    auto c = choose_route(to(RouteConfig::To::replica, 1 << 20), now);
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-1");
    EXPECT_EQ(c.candidates[1].lag, 0u);
    EXPECT_EQ(c.candidates[2].lag, 10u << 20);
    EXPECT_EQ(c.candidates[2].why_not, "lag 10 MB > 1 MB");
    // A replica sampled before every position held, or at an unknown time, is
    // held against the newest one: a stale sample never flatters it.
    EXPECT_EQ(lag_behind(standby_pg("0/1000000"), 900, now), 10u << 20);
    EXPECT_EQ(lag_behind(standby_pg("0/1000000"), 0, now), 10u << 20);
    // Its own received-but-not-replayed WAL counts whatever the moment.
    auto paused = standby_pg("0/1000000");
    paused.receive_lsn = "0/1200000";
    EXPECT_EQ(lag_behind(paused, 1200, now), 2u << 20);
}

TEST(RouteChoice, PrimaryPositionsKeepARecentWindowPerNode) {
    PrimaryPositions positions;
    for (int i = 1; i <= 40; ++i) {
        std::vector<RouteCandidate> round{
            sampled(node("primary-1", primary_pg("0/1000000")), i * 100),
            sampled(node("standby-1", standby_pg("0/1000000")), i * 100),
            node("primary-2", primary_pg("0/2000000")),  // no sample time: not recorded
            sampled(node("primary-3", primary_pg("junk")), i * 100)};
        positions.record(round);
    }
    std::vector<RouteCandidate> now{sampled(node("primary-1", primary_pg("0/1000000")), 4000),
                                    node("primary-2", primary_pg("0/2000000")),
                                    sampled(node("primary-3", primary_pg("junk")), 4000)};
    positions.attach(now);
    ASSERT_EQ(now[0].positions.size(), PrimaryPositions::kKeep);
    EXPECT_EQ(now[0].positions.front().at_ms, (40 - PrimaryPositions::kKeep + 1) * 100);
    EXPECT_EQ(now[0].positions.back().at_ms, 4000);
    EXPECT_TRUE(now[1].positions.empty());
    EXPECT_TRUE(now[2].positions.empty());
}

TEST(RouteChoice, WithoutMaxLagAnyStreamingReplicaQualifies) {
    auto c =
        choose_route(to(RouteConfig::To::replica), {node("standby-1", standby_pg("0/1000000"))});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-1");
}

TEST(RouteChoice, FixedPeerIsPickedWhateverItsRole) {
    auto r = to(RouteConfig::To::peer);
    r.peer = "standby-1";
    auto c =
        choose_route(r, {node("primary-1", primary_pg()), node("standby-1", std::nullopt, false)});
    ASSERT_TRUE(c.target);
    EXPECT_EQ(*c.target, "standby-1");
    EXPECT_TRUE(c.candidates[1].eligible);
}

}  // namespace
}  // namespace tunneld
