// Admission of connections: the unauthenticated budget (per source, in total),
// max_connections for authenticated peers, and the refusal log's rate limit.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

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
    table.mark_probe(*y);  // a probe gives its place back
    EXPECT_TRUE(table.admit(io.get_executor(), 4));
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
