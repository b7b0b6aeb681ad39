// Route choice as a table: which node a route picks from what the probes and
// the backend monitor report, and why it refuses.
#include <gtest/gtest.h>

#include "tunneld/relay/route_choice.hpp"

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
    EXPECT_FALSE(lag_behind(liar, {}));
    // A primary whose position is garbage does not make an honest replica's lag up.
    auto honest = choose_route(
        to(RouteConfig::To::replica, 1 << 20),
        {node("primary-1", primary_pg("zz")), node("standby-2", standby_pg("0/5000000"))});
    ASSERT_TRUE(honest.target);
    EXPECT_EQ(honest.candidates[1].lag, 0u);
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
