// The firewall keeper with its outside world scripted (DNS, nf_tables, the
// feed of outside changes): an outside change is repaired in one commit, a
// repair that fails leaves the guard reported as not applied, and five
// repairs in ten seconds pause repairs (two daemons sharing one table would
// otherwise undo each other forever).
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
    outside_change("tunneld", 777);  // the sixth: paused, left alone
    outside_change("tunneld", 777);  // and while paused
    EXPECT_EQ(nl.commits, 6);
    EXPECT_EQ(keeper->status().repairs, 5u);
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
