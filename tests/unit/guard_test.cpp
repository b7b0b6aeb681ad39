// The guard's decisions with scripted DNS and netlink: what a failed lookup
// keeps, what a failed commit leaves recorded, and that it is retried.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "firewall/guard.hpp"
#include "firewall_fakes.hpp"
#include "tunneld/error.hpp"

namespace tunneld::firewall {
namespace {

using namespace test;

// Two peers whose names resolve to 192.0.2.1 and 192.0.2.2, a scripted kernel.
struct GuardTest : ::testing::Test {
    Config cfg = config();
    FakeResolver dns;
    FakeNetlink nl;
    Guard g{cfg, dns, nl};
    GuardTest() {
        dns.answers = {{"primary.example.net", {"192.0.2.1"}},
                       {"standby2.example.net", {"192.0.2.2"}}};
    }
};

std::vector<std::string> allowed(const Guard& g, std::uint16_t port) {
    std::vector<std::string> out;
    for (const auto& p : g.spec().ports)
        if (p.port == port)
            for (const auto& x : p.v4) out.push_back(x.to_string());
    std::sort(out.begin(), out.end());
    return out;
}

TEST_F(GuardTest, ADnsBlipKeepsTheLastKnownAddresses) {
    g.apply();
    EXPECT_EQ(allowed(g, 5432), (std::vector<std::string>{"192.0.2.1/32", "192.0.2.2/32"}));
    dns.answers.erase("primary.example.net");  // the resolver stops answering for one peer
    EXPECT_EQ(g.refresh(), "");
    EXPECT_EQ(nl.commits, 1) << "a failed lookup must not change the table";
    EXPECT_EQ(allowed(g, 5432), (std::vector<std::string>{"192.0.2.1/32", "192.0.2.2/32"}));
    ASSERT_EQ(g.resolve_errors().size(), 1u);
    EXPECT_NE(g.resolve_errors()[0].find("keeping its last known address(es) 192.0.2.1/32"),
              std::string::npos)
        << g.resolve_errors()[0];
    EXPECT_EQ(g.resolve_failures(), 1u);
    dns.answers.clear();  // total outage: still nothing removed
    EXPECT_EQ(g.refresh(), "");
    EXPECT_EQ(allowed(g, 5432).size(), 2u);
    EXPECT_EQ(g.resolve_failures(), 3u);
}

TEST_F(GuardTest, AnAddressGoesOnlyAfterASuccessfulLookupNoLongerReturnsIt) {
    g.apply();
    dns.answers["primary.example.net"] = {"198.51.100.9"};  // the primary moved
    EXPECT_EQ(g.refresh(), "peer addresses are now 198.51.100.9/32, 192.0.2.2/32");
    EXPECT_EQ(nl.commits, 2);
    EXPECT_EQ(allowed(g, 5432), (std::vector<std::string>{"192.0.2.2/32", "198.51.100.9/32"}));
    dns.answers.erase("primary.example.net");  // and then DNS fails: the new address stays
    EXPECT_EQ(g.refresh(), "");
    EXPECT_EQ(allowed(g, 5432), (std::vector<std::string>{"192.0.2.2/32", "198.51.100.9/32"}));
}

TEST_F(GuardTest, AFailedCommitRecordsNothingAndIsRetried) {
    g.apply();
    dns.answers["primary.example.net"] = {"198.51.100.9"};
    nl.fail_next = 1;
    EXPECT_THROW(g.refresh(), StartupError);
    EXPECT_EQ(allowed(g, 5432), (std::vector<std::string>{"192.0.2.1/32", "192.0.2.2/32"}))
        << "bookkeeping changed although the kernel refused the batch";
    // The next refresh sees the same difference and commits it.
    EXPECT_NE(g.refresh(), "");
    EXPECT_EQ(nl.commits, 2);
    EXPECT_EQ(allowed(g, 5432), (std::vector<std::string>{"192.0.2.2/32", "198.51.100.9/32"}));
}

TEST_F(GuardTest, AFailedFirstApplyLeavesNoSpecAndHealPutsBackOnlyAMissingTable) {
    nl.fail_next = 1;
    EXPECT_THROW(g.apply(), StartupError);
    EXPECT_TRUE(g.spec().ports.empty());
    g.apply();
    EXPECT_FALSE(g.heal());
    nl.exists = false;
    EXPECT_TRUE(g.heal());
    EXPECT_EQ(nl.commits, 2);
}

}  // namespace
}  // namespace tunneld::firewall
