// What a node says about its own backend, as it travels in the probe's pongs:
// to_json / backend_state_from_json, and what a peer's junk reads as.
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

}  // namespace
}  // namespace tunneld
