// The firewall keeper with its outside world scripted (DNS, nf_tables, the
// feed of outside changes): an outside change is repaired in one commit, a
// repair that fails leaves the guard reported as not applied, five repairs in
// ten seconds pause repairs for a few seconds (two daemons sharing one table
// would otherwise undo each other forever), and a table deleted meanwhile is
// reported missing and put back as soon as the pause ends.
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <deque>

#include "firewall/keeper.hpp"
#include "firewall_fakes.hpp"

namespace tunneld::firewall {
namespace {

using namespace test;

// Changes written by the test, made readable through a pipe, as the kernel's
// event socket would be.
struct ScriptedFeed : ChangeFeed {
    int pipe_fds[2];
    std::deque<TableEvents::Change>* queue;
    explicit ScriptedFeed(std::deque<TableEvents::Change>* q) : queue(q) {
        EXPECT_EQ(::pipe(pipe_fds), 0);
    }
    ~ScriptedFeed() override {
        ::close(pipe_fds[0]);
        ::close(pipe_fds[1]);
    }
    int fd() const override { return pipe_fds[0]; }
    std::vector<TableEvents::Change> read() override {
        char byte;
        EXPECT_EQ(::read(pipe_fds[0], &byte, 1), 1);
        std::vector<TableEvents::Change> out;
        if (!queue->empty()) {
            out.push_back(queue->front());
            queue->pop_front();
        }
        return out;
    }
};

struct KeeperTest : ::testing::Test {
    Config cfg = config();
    FakeResolver dns;
    FakeNetlink nl;
    boost::asio::io_context side;
    std::deque<TableEvents::Change> changes;
    ScriptedFeed* feed = nullptr;
    std::optional<Keeper> keeper;

    KeeperTest() {
        dns.answers = {{"primary.example.net", {"192.0.2.1"}},
                       {"standby2.example.net", {"192.0.2.2"}}};
        auto f = std::make_unique<ScriptedFeed>(&changes);
        feed = f.get();
        keeper.emplace(cfg, side, dns, nl, std::move(f));
        keeper->start();
    }
    ~KeeperTest() override {
        keeper->stop();
        side.run_for(std::chrono::milliseconds(50));
    }

    void run_for(std::chrono::steady_clock::duration d) {
        auto until = std::chrono::steady_clock::now() + d;
        while (std::chrono::steady_clock::now() < until) {
            side.run_for(std::chrono::milliseconds(20));
            side.restart();
        }
    }

    // Someone else (`who`, pid) changes the table; the keeper hears it.
    void outside_change(const char* who = "nft", std::uint32_t pid = 4242) {
        changes.push_back({pid, who, false});
        ASSERT_EQ(::write(feed->pipe_fds[1], "x", 1), 1);
        // The change is read and acted on in one handler: run until it is taken
        // (a slow sanitizer build may need more than one round).
        for (int i = 0; i < 500 && !changes.empty(); ++i) {
            side.run_for(std::chrono::milliseconds(10));
            side.restart();
        }
        ASSERT_TRUE(changes.empty()) << "the keeper never read the change";
    }
};

TEST_F(KeeperTest, AppliesAtOnceAndPutsBackAnOutsideChangeInOneCommit) {
    EXPECT_EQ(nl.commits, 1);  // the table, at construction
    EXPECT_TRUE(keeper->status().applied);
    outside_change();
    EXPECT_EQ(nl.commits, 2);
    EXPECT_EQ(keeper->status().repairs, 1u);
    EXPECT_TRUE(keeper->status().applied);
}

TEST_F(KeeperTest, ARepairTheKernelRefusesIsReportedAndTheNextChangeRepairsAgain) {
    nl.fail_next = 1;
    outside_change();
    auto st = keeper->status();
    EXPECT_FALSE(st.applied);
    EXPECT_NE(st.error.find("changed by nft (pid 4242) and could not be put back"),
              std::string::npos)
        << st.error;
    outside_change();
    EXPECT_TRUE(keeper->status().applied);
    EXPECT_EQ(keeper->status().error, "");
}

TEST_F(KeeperTest, FiveRepairsInTenSecondsPauseRepairs) {
    for (int i = 0; i < 5; ++i) outside_change("tunneld", 777);
    EXPECT_EQ(nl.commits, 6);
    outside_change("tunneld", 777);    // the sixth: paused, left alone
    outside_change("td-side-0", 777);  // and while paused (a tunneld's keeper thread, by name)
    EXPECT_EQ(nl.commits, 6);
    EXPECT_EQ(keeper->status().repairs, 5u);
    EXPECT_TRUE(keeper->status().applied);  // another tunneld's table is still a guard
    // The pause ends: the table is there and only another tunneld changed it, so
    // nothing is undone (the fight does not restart by itself).
    run_for(Keeper::kPause + std::chrono::milliseconds(300));
    EXPECT_EQ(nl.commits, 6);
}

// Config management restarting nftables.service in a loop: six `flush
// ruleset` 0.4 s apart. Today's main paused for a minute, left no table and
// kept saying "applied".
TEST_F(KeeperTest, SixFlushesLeaveTheTableMissingOnlyUntilThePauseEndsAndSaySo) {
    for (int i = 0; i < 6; ++i) {
        nl.exists = false;
        outside_change("nft", 4242);
    }
    EXPECT_EQ(nl.commits, 6);  // the table, then five repairs; the sixth flush is paused
    auto st = keeper->status();
    EXPECT_FALSE(nl.exists);
    EXPECT_FALSE(st.applied);
    EXPECT_EQ(st.missing, 6u);  // five found and put back, the sixth found and left
    EXPECT_NE(st.error.find("table inet tunneld is missing"), std::string::npos) << st.error;
    EXPECT_NE(st.error.find("put back in"), std::string::npos) << st.error;
    run_for(Keeper::kPause + std::chrono::milliseconds(300));
    EXPECT_TRUE(nl.exists);
    EXPECT_EQ(nl.commits, 7);
    st = keeper->status();
    EXPECT_TRUE(st.applied);
    EXPECT_EQ(st.error, "");
    EXPECT_EQ(st.missing, 6u);
}

TEST_F(KeeperTest, AChangeByAnyoneButATunneldDuringThePauseIsUndoneWhenItEnds) {
    for (int i = 0; i < 6; ++i) outside_change("nft", 4242);
    EXPECT_EQ(nl.commits, 6);
    outside_change("nft", 4243);  // an element added by hand while paused
    EXPECT_EQ(nl.commits, 6);
    run_for(Keeper::kPause + std::chrono::milliseconds(300));
    EXPECT_EQ(nl.commits, 7);
    EXPECT_TRUE(keeper->status().applied);
}

TEST_F(KeeperTest, EveryRefreshRoundPutsBackATableWhoseDeletionWentUnheard) {
    nl.exists = false;  // no event: lost, or the netlink group overran
    EXPECT_TRUE(keeper->refresh("re-resolve"));
    EXPECT_TRUE(nl.exists);
    EXPECT_EQ(nl.commits, 2);
    EXPECT_EQ(keeper->status().missing, 1u);
    EXPECT_EQ(keeper->status().repairs, 1u);
    EXPECT_TRUE(keeper->refresh("re-resolve"));  // present: nothing to do
    EXPECT_EQ(nl.commits, 2);
}

TEST(RetryBackoff, ARefusedCommitIsRetriedAfterOneTwoFourSecondsUpToTheInterval) {
    using std::chrono::seconds;
    RetryBackoff b(seconds(60));
    std::vector<Duration> waits;
    for (bool ok : {false, false, false, false, false, false, false, true, false, true})
        waits.push_back(b.after(ok));
    const std::vector<Duration> want{seconds(1),  seconds(2),  seconds(4),  seconds(8),
                                     seconds(16), seconds(32), seconds(60), seconds(60),
                                     seconds(1),  seconds(60)};
    EXPECT_EQ(waits, want);
    RetryBackoff short_interval(seconds(3));  // never longer than resolve_interval
    EXPECT_EQ(short_interval.after(false), seconds(1));
    EXPECT_EQ(short_interval.after(false), seconds(2));
    EXPECT_EQ(short_interval.after(false), seconds(3));
    EXPECT_EQ(short_interval.after(false), seconds(3));
}

// A refresh the kernel refused recorded nothing: the next try (the loop's,
// RetryBackoff's 1 s later) commits the same change.
TEST_F(KeeperTest, ARefusedRefreshRecordsNothingAndTheNextTryCommitsIt) {
    dns.answers["primary.example.net"] = {"192.0.2.9"};  // a change to commit
    nl.fail_next = 1;
    EXPECT_FALSE(keeper->refresh("re-resolve"));
    EXPECT_EQ(nl.commits, 1);
    EXPECT_TRUE(keeper->refresh("re-resolve"));
    EXPECT_EQ(nl.commits, 2);
}

TEST_F(KeeperTest, AChangeWithoutAPidOnlyActsOnAMissingTable) {
    outside_change("", 0);  // the kernel did not say who: could be our own commit
    EXPECT_EQ(nl.commits, 1);
    nl.exists = false;  // ... but a table that is gone is put back
    outside_change("", 0);
    EXPECT_EQ(nl.commits, 2);
}

}  // namespace
}  // namespace tunneld::firewall
