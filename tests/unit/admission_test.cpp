// Admission of connections: the unauthenticated budget (per source, in total),
// max_connections for authenticated peers, each local listener's own places,
// probes per identity, and the refusal log's rate limit.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <vector>

#include "tunneld/net/conn_log.hpp"
#include "tunneld/net/connection_table.hpp"

namespace tunneld {
namespace {

using Refusal = ConnectionTable::Refusal;

TEST(Admission, StrangersSpendTheirOwnBudgetNotThePeersRoom) {
    boost::asio::io_context io;
    ConnectionTable table(2);
    // A stranger fills its per-source budget; more from it are refused, others still come in.
    EXPECT_EQ(table.begin_handshake("10.0.0.66", 2, 10), Refusal::none);
    EXPECT_EQ(table.begin_handshake("10.0.0.66", 2, 10), Refusal::none);
    EXPECT_EQ(table.begin_handshake("10.0.0.66", 2, 10), Refusal::per_source);
    EXPECT_EQ(table.begin_handshake("10.0.0.7", 2, 10), Refusal::none);
    // Uncounted admissions (handshakes in progress) never use max_connections.
    auto a = table.admit(io.get_executor(), 1, false);
    auto b = table.admit(io.get_executor(), 2, false);
    auto c = table.admit(io.get_executor(), 3, false);
    ASSERT_TRUE(a && b && c);
    EXPECT_TRUE(table.count(*a));
    EXPECT_TRUE(table.count(*b));
    EXPECT_FALSE(table.count(*c));  // max_connections = 2 authenticated
    table.end_handshake("10.0.0.66");
    EXPECT_EQ(table.begin_handshake("10.0.0.66", 2, 10), Refusal::none);
}

TEST(Admission, TotalBudgetAndReleaseOnEveryPath) {
    boost::asio::io_context io;
    ConnectionTable table(1);
    EXPECT_EQ(table.begin_handshake("a", 5, 2), Refusal::none);
    EXPECT_EQ(table.begin_handshake("b", 5, 2), Refusal::none);
    EXPECT_EQ(table.begin_handshake("c", 5, 2), Refusal::total);
    table.end_handshake("a");
    table.end_handshake("unknown");  // never begun: no effect
    EXPECT_EQ(table.begin_handshake("c", 5, 2), Refusal::none);
    EXPECT_EQ(table.begin_handshake("d", 5, 2), Refusal::total);
    {
        auto x = table.admit(io.get_executor(), 1);
        ASSERT_TRUE(x);
        EXPECT_FALSE(table.admit(io.get_executor(), 2));  // full
        EXPECT_EQ(table.size(), 1u);
    }
    EXPECT_EQ(table.size(), 0u);  // released with the Admission
    auto y = table.admit(io.get_executor(), 3);
    EXPECT_TRUE(y);
    EXPECT_TRUE(table.mark_probe(*y, "peer-1"));  // a probe gives its place back
    EXPECT_TRUE(table.admit(io.get_executor(), 4));
}

// The old table shared max_connections between local clients and inbound
// peers: a local process holding 4 sockets (max_connections: 4) made the next
// inbound replication connection fail.
TEST(Admission, LocalListenersHaveTheirOwnPlacesEachAndNeverTakeThePeersRoom) {
    boost::asio::io_context io;
    auto ex = io.get_executor();
    ConnectionTable table(/*max_connections=*/2, /*max_local=*/2);
    auto l1 = table.admit_local(ex, 100, "127.0.0.1:6432");
    auto l2 = table.admit_local(ex, 101, "127.0.0.1:6432");
    ASSERT_TRUE(l1 && l2);
    EXPECT_FALSE(table.admit_local(ex, 102, "127.0.0.1:6432"));  // that listener is full
    auto other = table.admit_local(ex, 103, "127.0.0.1:6433");   // its own places
    EXPECT_TRUE(other);
    // Every max_connections place is still free for authenticated inbound peers.
    auto p1 = table.admit(ex, 200, false);
    auto p2 = table.admit(ex, 201, false);
    ASSERT_TRUE(p1 && p2);
    EXPECT_TRUE(table.count(*p1));
    EXPECT_TRUE(table.count(*p2));
    {
        auto l3 = table.admit_local(ex, 104, "127.0.0.1:6434");
        EXPECT_TRUE(l3);
    }
    EXPECT_TRUE(table.admit_local(ex, 105, "127.0.0.1:6434"));  // released with its Admission
}

TEST(Admission, OneIdentityHoldsAtMostTwoProbes) {
    boost::asio::io_context io;
    auto ex = io.get_executor();
    ConnectionTable table(8);
    auto a = table.admit(ex, 1, false);
    auto b = table.admit(ex, 2, false);
    auto c = table.admit(ex, 3, false);
    EXPECT_TRUE(table.mark_probe(*a, "standby-1"));
    EXPECT_TRUE(table.mark_probe(*b, "standby-1"));
    EXPECT_FALSE(table.mark_probe(*c, "standby-1"));  // 47 of these exhausted fds
    EXPECT_FALSE(c->probe);
    auto other = table.admit(ex, 10, false);
    EXPECT_TRUE(table.mark_probe(*other, "primary-1"));
    {
        auto d = table.admit(ex, 11, false);
        EXPECT_FALSE(table.mark_probe(*d, "standby-1"));
    }
}

TEST(RefusalLog, OneLinePerSourcePerIntervalWithTheCount) {
    RefusalLog log(std::chrono::seconds(10));
    auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    EXPECT_EQ(log.note("10.0.0.66", t0), 1u);  // first: at once
    for (int i = 1; i <= 100; ++i)
        EXPECT_EQ(log.note("10.0.0.66", t0 + std::chrono::milliseconds(i)), 0u);
    EXPECT_EQ(log.note("10.0.0.7", t0), 1u);  // another source has its own line
    EXPECT_EQ(log.note("10.0.0.66", t0 + std::chrono::seconds(11)), 101u);
}

TEST(RefusalLog, ManySourcesShareOneEntryInsteadOfGrowingWithoutBound) {
    RefusalLog log(std::chrono::seconds(10));
    auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
    for (int i = 0; i < 4096; ++i) log.note("s" + std::to_string(i), t0);
    for (int i = 0; i < 4096; ++i) log.note("s" + std::to_string(i), t0);  // all pending now
    EXPECT_EQ(log.note("newcomer", t0), 1u);   // the shared "(many sources)" entry
    EXPECT_EQ(log.note("newcomer2", t0), 0u);  // counted there, silent
}

}  // namespace
}  // namespace tunneld
