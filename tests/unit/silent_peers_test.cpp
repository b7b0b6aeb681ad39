// SilentPeers: which peers new data connections are reset for without a dial.
#include <gtest/gtest.h>

#include "tunneld/relay/silent_peers.hpp"

using namespace tunneld;
using namespace std::chrono_literals;

TEST(SilentPeers, ANamedPeerIsSilentUntilItAnswersAndTheLineSaysSinceWhenAndWhy) {
    SilentPeers s;
    auto t0 = SilentPeers::Clock::now();
    EXPECT_FALSE(s.why("node-1", t0));  // never probed silent: dial it
    s.mark("node-1", "no answer within 1s", t0);
    EXPECT_FALSE(s.why("node-2", t0));  // only the peer named
    EXPECT_EQ(*s.why("node-1", t0 + 2500ms),
              "not dialled: the probe has had no answer from node-1 for 2.5 s "
              "(no answer within 1s)");
    // Still silent on the next round: the reason is the latest, the time the first.
    s.mark("node-1", "node1:8765: timed out after 1s", t0 + 2s);
    EXPECT_EQ(*s.why("node-1", t0 + 4s),
              "not dialled: the probe has had no answer from node-1 for 4.0 s "
              "(node1:8765: timed out after 1s)");
    s.clear("node-1");  // a pong, or a refusal (which costs nothing to dial)
    EXPECT_FALSE(s.why("node-1", t0 + 5s));
}
