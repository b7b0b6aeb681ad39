// What a node says about its own backend, as it travels in the probe's pongs:
// to_json / backend_state_from_json, what a peer's junk reads as, and the
// primary positions the probe keeps from the pongs.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "tunneld/health/backend_state.hpp"

namespace tunneld {
namespace {

namespace json = boost::json;

TEST(BackendState, SurvivesTheProbeWireAndToleratesJunk) {
    BackendState b;
    b.checked = b.reachable = true;
    b.checked_at = 42;
    b.postgres = PostgresState{};
    b.postgres->up = b.postgres->in_recovery = true;
    b.postgres->receive_lsn = "1/2";
    b.postgres->replay_lsn = "1/1";
    b.postgres->receiver_status = "streaming";
    b.postgres->replay_delay_seconds = 1.5;
    auto back = backend_state_from_json(json::parse(json::serialize(to_json(b))));
    EXPECT_TRUE(back.reachable);
    EXPECT_EQ(back.checked_at, 42);
    ASSERT_TRUE(back.postgres.has_value());
    EXPECT_EQ(back.postgres->receive_lsn, "1/2");
    EXPECT_EQ(back.postgres->replay_delay_seconds, 1.5);
    auto junk =
        backend_state_from_json(json::parse(R"({"reachable":"yes","postgres":[1,2],"checked":1})"));
    EXPECT_FALSE(junk.reachable);
    EXPECT_FALSE(junk.checked);
    EXPECT_FALSE(junk.postgres.has_value());
    EXPECT_FALSE(backend_state_from_json(json::parse("[]")).checked);
}

TEST(BackendState, TheSampleTimeTravelsAsAnAgeAndJunkAgesAreUnknown) {
    BackendState b;
    b.sampled_ms = steady_ms() - 250;
    auto wire = to_json(b);
    auto age = wire.as_object().at("age_ms").as_int64();
    EXPECT_GE(age, 250);
    EXPECT_LT(age, 250 + 5000);
    auto back = backend_state_from_json(wire);
    EXPECT_LE(back.sampled_ms, b.sampled_ms + 5000);
    EXPECT_GE(back.sampled_ms, b.sampled_ms - 5000);
    EXPECT_EQ(to_json(BackendState{}).as_object().if_contains("age_ms"),
              nullptr);  // unknown: absent
    for (const char* junk : {R"({"age_ms":-5})", R"({"age_ms":"10"})", R"({"age_ms":3600001})",
                             R"({"age_ms":1.5})", R"({"age_ms":-9223372036854775808})"})
        EXPECT_EQ(backend_state_from_json(json::parse(junk)).sampled_ms, 0) << junk;
}

BackendState pong(bool primary, std::string lsn, std::int64_t sampled_ms) {
    BackendState b;
    b.sampled_ms = sampled_ms;
    b.postgres = PostgresState{};
    b.postgres->up = true;
    b.postgres->in_recovery = !primary;
    (primary ? b.postgres->current_lsn : b.postgres->replay_lsn) = std::move(lsn);
    return b;
}

TEST(BackendState, TheProbeKeepsAPrimarysRecentPositionsAndForgetsThemWhenItIsNoLonger) {
    std::vector<LsnSample> positions;
    auto b = pong(true, "0/1000000", 1000);
    note_peer_backend(b, positions, 40);
    EXPECT_EQ(b.sampled_ms, 980);  // sampled, then answered half a round trip ago
    b = pong(true, "0/1000000", 1000);
    note_peer_backend(b, positions, 40);  // the same sample again: kept once
    b = pong(true, "0/3000000", 2000);
    note_peer_backend(b, positions, 40);
    ASSERT_EQ(positions.size(), 2u);
    EXPECT_EQ(position_at(positions, 1500), 0x1000000u);
    EXPECT_EQ(position_at(positions, 1980), 0x3000000u);
    EXPECT_EQ(position_at(positions, 900), std::nullopt);  // before every position held
    EXPECT_EQ(position_at(positions, 0), std::nullopt);    // unknown moment
    b = pong(true, "junk", 3000);
    note_peer_backend(b, positions, 40);  // no position: not a primary's answer
    EXPECT_TRUE(positions.empty());
    for (int i = 1; i <= 40; ++i) {
        b = pong(true, "0/" + std::to_string(i), i * 100);
        note_peer_backend(b, positions, 0);
    }
    ASSERT_EQ(positions.size(), kPositionsKept);
    EXPECT_EQ(positions.front().at_ms, static_cast<std::int64_t>(40 - kPositionsKept + 1) * 100);
    b = pong(true, "0/99", 0);  // an older tunneld: no age, nothing to place it by
    note_peer_backend(b, positions, 0);
    EXPECT_EQ(positions.size(), kPositionsKept);
    b = pong(false, "0/99", 9000);  // demoted
    note_peer_backend(b, positions, 0);
    EXPECT_TRUE(positions.empty());
}

}  // namespace
}  // namespace tunneld
