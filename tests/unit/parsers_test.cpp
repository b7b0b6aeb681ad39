// The parsers of outsider-controlled bytes, as the fuzzers reach them: probe
// lines, one HTTP request, nf_tables event buffers.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <cstring>

#include "firewall/nft_socket.hpp"
#include "tunneld/health/probe_messages.hpp"
#include "tunneld/health/server.hpp"

namespace tunneld {
namespace {

TEST(ProbeMessages, PingPongRoundTripAndRefusals) {
    EXPECT_EQ(parse_ping("{\"ping\":7}"), 7);
    EXPECT_FALSE(parse_ping("{\"ping\":\"7\"}"));
    EXPECT_FALSE(parse_ping("[1]"));
    EXPECT_FALSE(parse_ping(std::string(20000, '[')));  // longer than a line may be
    EXPECT_FALSE(parse_ping(std::string(100, '[') + std::string(100, ']')));  // deeper than 16
    BackendState b;
    b.reachable = true;
    auto pong = make_pong(7, "n", b);
    ASSERT_EQ(pong.back(), '\n');
    auto back = parse_pong(pong.substr(0, pong.size() - 1), 7);
    ASSERT_TRUE(back);
    EXPECT_TRUE(back->backend.reachable);
    EXPECT_FALSE(parse_pong(pong.substr(0, pong.size() - 1), 8));  // answers another ping
    std::string pending = "a\nb\nc", line;
    EXPECT_TRUE(take_line(pending, line));
    EXPECT_EQ(line, "a");
    EXPECT_TRUE(take_line(pending, line));
    EXPECT_FALSE(take_line(pending, line));
    EXPECT_EQ(pending, "c");
}

TEST(HttpAnswer, OneRequestInOneResponseOut) {
    auto snapshot = [](bool) {
        Snapshot s;
        s.node = "n1";
        s.listeners_up = s.workers_alive = true;
        return s;
    };
    auto ok = http_answer("GET /liveness HTTP/1.1\r\nHost: x\r\n\r\n", snapshot);
    EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
    EXPECT_EQ(http_answer("GET /liveness HTTP/1.1\r\nHo", snapshot),
              "");  // incomplete: wait for more
    EXPECT_EQ(http_answer("\x16\x03\x01 garbage\r\n\r\n", snapshot).rfind("HTTP/1.1 400", 0), 0u);
    auto big =
        http_answer("GET / HTTP/1.1\r\nX: " + std::string(10000, 'a') + "\r\n\r\n", snapshot);
    EXPECT_EQ(big.rfind("HTTP/1.1 431", 0), 0u) << big.substr(0, 40);
    EXPECT_EQ(http_answer("DELETE /status HTTP/1.1\r\n\r\n", snapshot).rfind("HTTP/1.1 405", 0),
              0u);
}

// One nf_tables message: header, nfgenmsg, attributes.
std::string message(int type, int family, std::uint32_t port,
                    std::vector<std::pair<int, std::string>> attrs) {
    std::string payload(4, '\0');
    payload[0] = static_cast<char>(family);
    for (auto& [t, v] : attrs) {
        nlattr a{static_cast<std::uint16_t>(4 + v.size()), static_cast<std::uint16_t>(t)};
        payload.append(reinterpret_cast<char*>(&a), 4);
        payload += v;
        payload.append((4 - v.size() % 4) % 4, '\0');
    }
    nlmsghdr h{static_cast<std::uint32_t>(16 + payload.size()),
               static_cast<std::uint16_t>((NFNL_SUBSYS_NFTABLES << 8) | type), 0, 1, port};
    return std::string(reinterpret_cast<char*>(&h), 16) + payload;
}

// A local user has all of 127/8: 64 loopback addresses are one source for the
// health server's per-source cap, or they could evict a monitor's check.
TEST(HealthSource, EveryLoopbackAddressIsOneSource) {
    using boost::asio::ip::make_address;
    for (const char* a : {"127.0.0.1", "127.0.0.73", "127.255.255.254", "::1", "::ffff:127.0.0.9"})
        EXPECT_EQ(health_source(make_address(a)), "loopback") << a;
    EXPECT_EQ(health_source(make_address("10.0.0.7")), "10.0.0.7");
    EXPECT_EQ(health_source(make_address("::ffff:10.0.0.7")), "::ffff:10.0.0.7");
    EXPECT_EQ(health_source(make_address("2001:db8::1")), "2001:db8::1");
}

TEST(TableEventParser, ForeignChangesCountOwnTransactionsDoNot) {
    std::string name("tunneld\0", 8), pid(4, '\0');
    std::uint32_t be = htonl(1234);
    std::memcpy(pid.data(), &be, 4);
    auto touch = [&](std::uint32_t port) {
        return message(NFT_MSG_NEWSETELEM, 1 /* NFPROTO_INET */, port, {{1, name}});
    };
    auto gen = [&](std::uint32_t port) {
        return message(NFT_MSG_NEWGEN, 0, port,
                       {{NFTA_GEN_PROC_PID, pid}, {NFTA_GEN_PROC_NAME, std::string("nft\0", 4)}});
    };
    auto own = [](std::uint32_t port) { return port == 4242; };
    std::string buf = touch(99) + gen(99) + touch(4242) + gen(4242) + gen(99);
    bool touched = false;
    std::vector<firewall::TableEvents::Change> out;
    firewall::parse_table_events(buf.data(), buf.size(), "tunneld", touched, own, out);
    ASSERT_EQ(
        out.size(),
        1u);  // only the first: ours, and a transaction that did not touch the table, do not count
    EXPECT_EQ(out[0].pid, 1234u);
    EXPECT_EQ(out[0].process, "nft");
    // Truncated and lying lengths are skipped, not read past.
    for (std::size_t cut = 0; cut < buf.size(); cut += 3) {
        std::vector<firewall::TableEvents::Change> ignored;
        firewall::parse_table_events(buf.data(), cut, "tunneld", touched, own, ignored);
    }
}

}  // namespace
}  // namespace tunneld
