#include <gtest/gtest.h>

#include "tunneld/config/duration.hpp"
#include "tunneld/config/endpoint.hpp"

namespace tunneld {
namespace {

TEST(Duration, ParsesEveryUnit) {
    EXPECT_EQ(parse_duration("250ms"), Duration(250));
    EXPECT_EQ(parse_duration("30s"), Duration(30'000));
    EXPECT_EQ(parse_duration("5m"), Duration(300'000));
    EXPECT_EQ(parse_duration("2h"), Duration(7'200'000));
    EXPECT_EQ(parse_duration("0s"), Duration(0));
}

TEST(Duration, RefusesAmbiguousOrMalformed) {
    for (auto bad :
         {"30", "s", "", "1.5s", "-1s", "10 s", "10S", "5d", "3sec", "99999999999999999999h"})
        EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
}

TEST(Duration, FormatsWithLargestExactUnit) {
    EXPECT_EQ(format_duration(Duration(90'000)), "90s");
    EXPECT_EQ(format_duration(Duration(120'000)), "2m");
    EXPECT_EQ(format_duration(Duration(1500)), "1500ms");
    EXPECT_EQ(format_duration(Duration(3'600'000)), "1h");
    EXPECT_EQ(format_duration(Duration(0)), "0ms");
}

TEST(Endpoint, ParsesHostPortV6AndUnix) {
    auto a = parse_endpoint("primary.example.net:8765", false);
    ASSERT_TRUE(a);
    EXPECT_EQ(a->host, "primary.example.net");
    EXPECT_EQ(a->port, 8765);
    auto b = parse_endpoint("[::]:8765", false);
    ASSERT_TRUE(b);
    EXPECT_EQ(b->host, "::");
    EXPECT_EQ(b->to_string(), "[::]:8765");
    auto c = parse_endpoint("unix:/var/run/postgresql/.s.PGSQL.5432", true);
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->is_unix());
    EXPECT_EQ(c->to_string(), "unix:/var/run/postgresql/.s.PGSQL.5432");
}

TEST(Endpoint, RefusesWithReason) {
    auto why = [](const char* text, bool allow_unix) {
        auto ep = parse_endpoint(text, allow_unix);
        EXPECT_FALSE(ep) << text;
        return ep ? std::string("(parsed)") : ep.error().what;
    };
    EXPECT_EQ(why("host", false), "expected host:port");
    EXPECT_EQ(why("host:0", false), "port must be a number from 1 to 65535");
    EXPECT_EQ(why("host:65536", false), "port must be a number from 1 to 65535");
    EXPECT_EQ(why("host:80x", false), "port must be a number from 1 to 65535");
    EXPECT_EQ(why(":80", false), "host is empty");
    EXPECT_EQ(why("[::1]8765", false), "expected [IPv6]:port");
    EXPECT_EQ(why("unix:relative", true),
              "unix socket path must be absolute, as in unix:/var/run/postgresql/.s.PGSQL.5432");
    EXPECT_EQ(why("unix:/x", false), "a unix socket is not allowed here");
}

TEST(Endpoint, ValueOfAFailedParseIsAStartupError) {
    try {
        (void)parse_endpoint("host", false).value();
        FAIL() << "value() of a failed parse returned";
    } catch (const StartupError& e) {
        EXPECT_STREQ(e.what(), "expected host:port");
    }
}

}  // namespace
}  // namespace tunneld
