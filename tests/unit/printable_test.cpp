// Closing the class of "outside text reaches a line-oriented sink": whatever
// a peer (its pong), an HTTP client, a DNS answer, a file or a certificate
// sends, no newline or control character reaches an sd_notify datagram, a
// journal line or /status text. A property test over random bytes, plus the
// exact attack that was reproduced (a pong error carrying
// "\nWATCHDOG=trigger\nSTATUS=forged\n<0>...").
#include <gtest/gtest.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/ostream_sink.h>

#include <boost/json.hpp>
#include <random>
#include <sstream>

#include "tunneld/app/log_format.hpp"
#include "tunneld/app/notifier.hpp"
#include "tunneld/base/printable.hpp"
#include "tunneld/health/backend_state.hpp"
#include "tunneld/health/probe_messages.hpp"
#include "tunneld/health/routes.hpp"
#include "tunneld/health/snapshot.hpp"

namespace tunneld {
namespace {

namespace json = boost::json;

bool has_control(std::string_view s) {
    for (unsigned char c : s)
        if (c < 0x20 || c == 0x7f) return true;
    return false;
}

const std::string kForged = "down\nWATCHDOG=trigger\nSTATUS=forged\n<0>kernel: panic\r\x1b[2J";

// Random strings weighted toward what breaks line protocols.
std::vector<std::string> hostile_strings() {
    std::vector<std::string> out{kForged,    "",      std::string(1, '\0'),
                                 "\xff\xfe", "\\x0a", std::string(20000, '\n')};
    std::mt19937 rng(20261205);
    const std::string specials = std::string("\n\r\t\0\x1b\x7f<>=\\\x80\xc3\xa9", 14);
    for (int i = 0; i < 2000; ++i) {
        std::string s;
        int len = static_cast<int>(rng() % 300);
        for (int j = 0; j < len; ++j)
            s +=
                rng() % 3 == 0 ? specials[rng() % specials.size()] : static_cast<char>(rng() % 256);
        out.push_back(std::move(s));
    }
    return out;
}

// A pong from a peer whose postgres error and receiver status are `text`.
std::string pong_with(const std::string& text) {
    BackendState b;
    b.checked = true;
    b.reachable = false;
    b.error = text;
    PostgresState pg;
    pg.error = text;
    pg.receiver_status = text;
    pg.current_lsn = text;
    b.postgres = pg;
    b.services.push_back({"patroni", false, text});
    return make_pong(7, text, b);
}

TEST(Printable, EscapesEveryControlAndNonAsciiByteAndCaps) {
    EXPECT_EQ(printable("ok: up"), "ok: up");
    EXPECT_EQ(printable("a\nb"), "a\\x0ab");
    EXPECT_EQ(printable("\x7f\xc3\xa9"), "\\x7f\\xc3\\xa9");
    EXPECT_EQ(printable(std::string(10, 'x'), 8), "xxxxx...");
    EXPECT_EQ(printable("\n\n\n", 9), "\\x0a...");  // never half an escape
    for (const auto& s : hostile_strings()) {
        auto p = printable(s, 100);
        EXPECT_FALSE(has_control(p));
        EXPECT_TRUE(is_printable(p));
        EXPECT_LE(p.size(), 100u);
    }
}

TEST(Printable, NoPongTextReachesStateUnescaped) {
    int parsed = 0;
    for (const auto& raw : hostile_strings()) {
        // JSON carries valid UTF-8 only: non-ASCII bytes become "é" and U+2028.
        std::string s;
        for (unsigned char c : raw)
            s += c < 0x80 ? std::string(1, static_cast<char>(c))
                 : c % 2  ? std::string("\xc3\xa9")
                          : std::string("\xe2\x80\xa8");
        auto pong = parse_pong(pong_with(s), 7);
        if (!pong) continue;  // refused whole (not JSON once broken UTF-8 is in it, too long)
        ++parsed;
        const auto* st = &pong->backend;
        EXPECT_FALSE(has_control(st->error));
        ASSERT_TRUE(st->postgres.has_value());
        EXPECT_FALSE(has_control(st->postgres->error));
        EXPECT_FALSE(has_control(st->postgres->receiver_status));
        EXPECT_FALSE(has_control(st->postgres->current_lsn));
        for (const auto& svc : st->services) EXPECT_FALSE(has_control(svc.error));
        EXPECT_LE(st->postgres->error.size(), kPrintableMax);
    }
    EXPECT_GT(parsed, 100);  // the property was exercised, not skipped
}

// The reproduced attack end to end through the pure parts: a pong from an
// authenticated peer -> the snapshot -> STATUS=, /status and /readiness text.
TEST(Printable, AForgedPongCannotAddAnAssignmentToSdNotifyOrALineToStatus) {
    auto pong = parse_pong(pong_with(kForged), 7);
    ASSERT_TRUE(pong.has_value());
    auto st = std::optional<BackendState>(pong->backend);
    Snapshot s;
    s.node = "standby-1";
    s.listeners_up = true;
    s.postgres_configured = true;
    PeerView p;
    p.name = "primary-1";
    p.probe.probed = p.probe.up = true;
    p.probe.peer_backend = *st;
    s.peers.push_back(p);
    auto line = status_assignment(one_line_summary(s));
    EXPECT_EQ(line.find('\n'), std::string::npos) << line;
    EXPECT_EQ(line.find("\nWATCHDOG"), std::string::npos);
    for (const char* path : {"/status", "/readiness", "/health", "/replica", "/metrics"}) {
        auto body = handle_request(s, path).body;
        // JSON and Prometheus text end lines with '\n'; none may come from the pong.
        std::istringstream lines(body);
        for (std::string l; std::getline(lines, l);) {
            EXPECT_FALSE(has_control(l)) << path << ": " << l;
            EXPECT_FALSE(l.starts_with("WATCHDOG=") || l.starts_with("STATUS=") ||
                         l.starts_with("<0>"))
                << path << ": " << l;
        }
    }
    for (const auto& h : hostile_strings()) {
        EXPECT_FALSE(has_control(status_assignment(h)));
        EXPECT_LE(status_assignment(h).size(), 1024u + 7);
    }
}

// Every log line is one line, whatever its arguments carry: journald would
// take a newline as a new entry and "<0>" after it as its priority.
TEST(Printable, EveryLogMessageIsOneEscapedLineInTheJournalAndOnATerminal) {
    for (bool journal : {true, false}) {
        std::ostringstream out;
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_st>(out);
        spdlog::logger log("t", sink);
        log.set_formatter(make_log_formatter(journal));
        log.set_level(spdlog::level::trace);
        for (const auto& s : hostile_strings()) {
            out.str("");
            log.warn("conn=1 outbound close peer={} detail=\"{}\"", s, s);
            auto text = out.str();
            ASSERT_FALSE(text.empty());
            EXPECT_EQ(text.back(), '\n');
            text.pop_back();
            EXPECT_FALSE(has_control(text)) << text;
            if (journal) {
                EXPECT_TRUE(text.starts_with("<4>conn=1 ")) << text;
            }
            EXPECT_LE(text.size(), 16u * 1024 + 64);
        }
    }
}

}  // namespace
}  // namespace tunneld
