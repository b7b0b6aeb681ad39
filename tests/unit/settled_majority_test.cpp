// inbound.services.X.local_quorum's rule (route/quorum.hpp SettledMajority):
// served only with a majority that has held for the settle time; a loss
// starts the wait again, however short the flap.
#include <gtest/gtest.h>

#include "tunneld/route/quorum.hpp"

namespace tunneld {
namespace {

QuorumView view(std::size_t reached) {
    std::vector<VoterView> voters;
    for (std::size_t i = 0; i < 3; ++i) {
        VoterView v;
        v.name = "node-" + std::to_string(i + 1);
        v.self = i == 0;
        v.reachable = i < reached;
        v.why = v.reachable ? "" : "no answer within 1s";
        voters.push_back(v);
    }
    return quorum_of(voters, true);
}

TEST(SettledMajority, ServesOnlyAMajorityThatHasHeldForTheSettleTime) {
    using namespace std::chrono_literals;
    SettledMajority gate(1s);
    auto t0 = SettledMajority::Clock::now();
    // A minority: refused with who is unreachable.
    auto why = gate.refusal(view(1), t0);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("reaching 1 of 3 voters"), std::string::npos) << *why;
    // The heal: a majority, but not for long enough yet.
    why = gate.refusal(view(3), t0 + 10s);
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("a majority again for 0 ms of 1000 ms"), std::string::npos) << *why;
    EXPECT_TRUE(gate.refusal(view(2), t0 + 10s + 900ms));
    EXPECT_FALSE(gate.refusal(view(2), t0 + 11s));
    EXPECT_FALSE(gate.refusal(view(3), t0 + 60s));
    // A flap of any length starts the settle time again.
    EXPECT_TRUE(gate.refusal(view(1), t0 + 61s));
    EXPECT_TRUE(gate.refusal(view(3), t0 + 61s + 1ms));
    EXPECT_TRUE(gate.refusal(view(3), t0 + 61s + 999ms));
    EXPECT_FALSE(gate.refusal(view(3), t0 + 62s + 1ms));
}

TEST(SettledMajority, AtStartTheFirstMajorityWaitsToo) {
    using namespace std::chrono_literals;
    SettledMajority gate(2s);
    auto t0 = SettledMajority::Clock::now();
    EXPECT_TRUE(gate.refusal(view(2), t0));
    EXPECT_TRUE(gate.refusal(view(2), t0 + 1s));
    EXPECT_FALSE(gate.refusal(view(2), t0 + 2s));
}

}  // namespace
}  // namespace tunneld
